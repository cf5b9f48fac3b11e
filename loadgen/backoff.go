package loadgen

import (
	"context"
	"time"
)

// Backoff paces one worker's retries after failures that come back at
// once (a refused connection): each Wait sleeps twice as long as the one
// before, from minBackoff up to maxBackoff, until Reset after a success.
// maxBackoff is short so that a worker asleep when the run ends does not
// hold the run up for long. The zero value is ready; a Backoff belongs to
// one worker and is not safe for concurrent use.
type Backoff struct {
	next time.Duration
}

const (
	minBackoff = 10 * time.Millisecond
	maxBackoff = 250 * time.Millisecond
)

// Wait sleeps for the next pause, or until ctx ends.
func (b *Backoff) Wait(ctx context.Context) {
	b.next = min(max(2*b.next, minBackoff), maxBackoff)
	t := time.NewTimer(b.next)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Reset forgets earlier failures.
func (b *Backoff) Reset() { b.next = 0 }
