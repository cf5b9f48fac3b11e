package loglimit

import (
	"sync"
	"time"
)

// Limiter lets at most one line per key through per interval and
// counts the ones it holds back: a key's next line says how many of its
// own were held back, and how many of other keys that have no line of
// their own to say it. It keeps count of at most maxKeys keys, forgetting
// (into that second count) those whose interval has passed when it needs
// room; while all are recent, a new key's lines are only counted.
type Limiter struct {
	interval time.Duration
	maxKeys  int
	now      func() time.Time

	mu        sync.Mutex
	keys      map[string]*limited
	elsewhere int // lines held back of keys no longer kept, or never kept
}

type limited struct {
	last time.Time // when a line was last let through
	held int       // lines held back since
}

// New makes a Limiter; now is the clock (time.Now but in tests).
func New(interval time.Duration, maxKeys int, now func() time.Time) *Limiter {
	return &Limiter{interval: interval, maxKeys: maxKeys, now: now, keys: make(map[string]*limited)}
}

// Allow reports whether a line for key may go out now and, if so, how
// many lines of key were held back since its last line, and how many of
// keys that will have no line to report them.
func (l *Limiter) Allow(key string) (ok bool, held, elsewhere int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	e := l.keys[key]
	switch {
	case e != nil && now.Sub(e.last) < l.interval:
		e.held++
		return false, 0, 0
	case e != nil:
		held = e.held
		e.last, e.held = now, 0
	default:
		if len(l.keys) >= l.maxKeys {
			for k, old := range l.keys {
				if now.Sub(old.last) >= l.interval {
					l.elsewhere += old.held
					delete(l.keys, k)
				}
			}
		}
		if len(l.keys) >= l.maxKeys {
			l.elsewhere++
			return false, 0, 0
		}
		l.keys[key] = &limited{last: now}
	}
	elsewhere, l.elsewhere = l.elsewhere, 0
	return true, held, elsewhere
}
