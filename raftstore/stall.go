package raftstore

import (
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// stallWatch turns a Pebble write stall that outlasts its limit while
// Pebble's background work fails into a fatal error for the store's owner
// (Options.OnStalled). On a full disk Pebble may keep writing its WAL (a
// recycled log file has its room already) while every flush fails to
// write its table; memtables pile up, and Pebble stalls every write until
// a flush succeeds. The node then looked healthy — ready, heartbeating,
// leading its shards — while every write to those shards hung (found by
// QA). A stall with no background error (a slow disk) is only logged.
type stallWatch struct {
	limit     time.Duration
	onStalled func(error)
	warn      func(msg string, args ...any)
	now       func() time.Time

	mu      sync.Mutex
	since   time.Time // when the current stall began; zero when none
	reason  string
	lastErr error // Pebble's last background error, and when
	errAt   time.Time
	timer   *time.Timer
	fired   bool
	stopped bool
}

// defaultStallLimit is how long a write stall with failing background work
// lasts before the store is declared unusable.
const defaultStallLimit = 10 * time.Second

// listener is the EventListener that feeds the watch; background errors
// are passed on to logErr as well.
func (w *stallWatch) listener(logErr func(error)) *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			w.backgroundError(err)
			logErr(err)
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) { w.stallBegan(info.Reason) },
		WriteStallEnd:   w.stallEnded,
	}
}

func (w *stallWatch) backgroundError(err error) {
	w.mu.Lock()
	w.lastErr, w.errAt = err, w.now()
	w.mu.Unlock()
}

func (w *stallWatch) stallBegan(reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || !w.since.IsZero() {
		return
	}
	w.since, w.reason = w.now(), reason
	w.timer = time.AfterFunc(w.limit, w.check)
}

func (w *stallWatch) stallEnded() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.since = time.Time{}
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
}

// check runs limit after a stall began, and again every limit while it
// lasts: a stall that long with a background error since shortly before
// it began is fatal, once.
func (w *stallWatch) check() {
	w.mu.Lock()
	if w.stopped || w.fired || w.since.IsZero() {
		w.mu.Unlock()
		return
	}
	now := w.now()
	stalled := now.Sub(w.since)
	if stalled < w.limit {
		w.timer = time.AfterFunc(w.limit-stalled, w.check)
		w.mu.Unlock()
		return
	}
	if w.lastErr == nil || w.errAt.Before(w.since.Add(-w.limit)) {
		w.timer = time.AfterFunc(w.limit, w.check)
		reason := w.reason
		w.mu.Unlock()
		w.warn("storage writes have stalled with no error from Pebble's background work (a slow disk?)", "stalled", stalled.Round(time.Second), "reason", reason)
		return
	}
	w.fired = true
	err := fmt.Errorf("%w: every write has waited %s (%s) while Pebble's flushes and compactions fail: %v", ErrStoreStalled, stalled.Round(time.Second), w.reason, w.lastErr)
	w.mu.Unlock()
	w.onStalled(err)
}

// stop ends the watch: the store is closing.
func (w *stallWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
}
