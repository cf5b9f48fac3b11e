package node

import (
	"context"

	"github.com/roostdb/roost/raftstore"
)

// commit is one object batch on its way through a shard's Raft group.
// finish is called exactly once; after done is closed, err is the outcome.
type commit struct {
	batch  raftstore.ObjectBatch
	writes *writeSet
	onDone func(*commit) // the object's storage bookkeeping; runs before done closes
	done   chan struct{}
	err    error
}

func newCommit(b raftstore.ObjectBatch, ws *writeSet, onDone func(*commit)) *commit {
	return &commit{batch: b, writes: ws, onDone: onDone, done: make(chan struct{})}
}

// failedCommit is an already finished commit carrying err.
func failedCommit(err error) *commit {
	c := &commit{done: make(chan struct{}), err: err}
	close(c.done)
	return c
}

func (c *commit) finish(err error) {
	c.err = err
	if c.onDone != nil {
		c.onDone(c)
	}
	close(c.done)
}

// isDone reports whether the outcome is known.
func (c *commit) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// wait blocks until the outcome is known or ctx ends.
func (c *commit) wait(ctx context.Context) error {
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}
