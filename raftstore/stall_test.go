package raftstore

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestStallWatch: a write stall that lasts its limit with a background
// error since shortly before it began is reported once; one without such
// an error, or that ends in time, is not.
func TestStallWatch(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var fired []error
	var warned int
	w := &stallWatch{limit: time.Hour, now: clock, // the timers never fire: check is called by hand
		onStalled: func(err error) { fired = append(fired, err) },
		warn:      func(string, ...any) { warned++ }}
	defer w.stop()

	// A stall that ends in time.
	w.backgroundError(errors.New("write 000011.sst: no space left on device"))
	w.stallBegan("memtable count limit reached")
	advance(30 * time.Minute)
	w.stallEnded()
	w.check()
	if len(fired) != 0 {
		t.Fatalf("a stall that ended reported %v", fired)
	}

	// A stall with no recent error: a slow disk, warned of only.
	advance(3 * time.Hour)
	w.stallBegan("L0 file count limit exceeded")
	advance(time.Hour)
	w.check()
	if len(fired) != 0 || warned != 1 {
		t.Fatalf("a stall without a recent background error: fired %v, warned %d times; want a warning only", fired, warned)
	}

	// An error while it lasts: fatal at the next check, once.
	w.backgroundError(errors.New("write 000012.sst: no space left on device"))
	w.check()
	w.check()
	if len(fired) != 1 || !errors.Is(fired[0], ErrStoreStalled) || !strings.Contains(fired[0].Error(), "no space left on device") {
		t.Fatalf("a stall of the limit with failing flushes reported %v; want one ErrStoreStalled naming the error", fired)
	}
}
