package loglimit

import (
	"testing"
	"time"

	"github.com/roostdb/roost/internal/fakeclock"
)

func TestLogLimiter(t *testing.T) {
	clock := fakeclock.New(time.Unix(1000, 0))
	const every = 10 * time.Second
	l := New(every, 3, clock.Now)
	steps := []struct {
		at              time.Duration // since the start
		key             string
		ok              bool
		held, elsewhere int
	}{
		{0, "a", true, 0, 0}, // a key's first line goes out
		{time.Second, "a", false, 0, 0},
		{2 * time.Second, "b", true, 0, 0}, // keys are limited apart
		{9 * time.Second, "a", false, 0, 0},
		{10 * time.Second, "a", true, 2, 0}, // the interval passed: with the count held back
		{11 * time.Second, "a", false, 0, 0},
		{12 * time.Second, "b", true, 0, 0},  // b held nothing back
		{13 * time.Second, "c", true, 0, 0},  // a, b, c: the limiter is full, all recent
		{14 * time.Second, "d", false, 0, 0}, // so d is only counted
		{15 * time.Second, "d", false, 0, 0},
		{16 * time.Second, "c", false, 0, 0},
		{21 * time.Second, "a", true, 1, 2},  // a's next line tells of d's two too
		{22 * time.Second, "e", true, 0, 0},  // b's interval passed: b goes, e takes its place
		{23 * time.Second, "f", true, 0, 1},  // c goes too, and its one held back is told
		{24 * time.Second, "c", false, 0, 0}, // a, e, f are recent: c is only counted now
	}
	start := clock.Now()
	for _, s := range steps {
		clock.Advance(start.Add(s.at).Sub(clock.Now()))
		ok, held, elsewhere := l.Allow(s.key)
		if ok != s.ok || held != s.held || elsewhere != s.elsewhere {
			t.Fatalf("at %v, %q: allow = %v, %d, %d; want %v, %d, %d", s.at, s.key, ok, held, elsewhere, s.ok, s.held, s.elsewhere)
		}
		if len(l.keys) > 3 {
			t.Fatalf("at %v: %d keys kept, want at most 3", s.at, len(l.keys))
		}
	}
}
