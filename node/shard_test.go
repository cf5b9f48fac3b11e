package node

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// raft's LeaderCh keeps only its newest value: a loss and a new win
// between two reads arrive as one "true". The shard must still drop the
// instances of the term it led before, as on a loss, since another node
// may have led and written in between.
func TestLeadershipRegainedInANewTermDropsInstances(t *testing.T) {
	s := newShard(groupOf(0), nil, 1, nil)
	leaderCh := make(chan bool, 1)
	var term atomic.Uint64
	var lost atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.followLeadership(ctx, leaderCh, term.Load, func() error { return nil }, func() { lost.Add(1) })
	}()
	defer func() { cancel(); <-done }()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s", what)
			}
		}
	}

	term.Store(5)
	leaderCh <- true
	waitFor("the shard to be ready in term 5", s.isReady)
	term.Store(7) // lost in 5, another node led in 6, won again in 7: one "true"
	leaderCh <- true
	waitFor("the instances of term 5 to be dropped", func() bool { return lost.Load() == 1 })
	waitFor("the shard to be ready again", s.isReady)
	leaderCh <- true // the same term again: nothing to drop
	leaderCh <- false
	waitFor("the loss", func() bool { return lost.Load() == 2 })
	if s.isReady() {
		t.Fatal("ready after the loss")
	}
}
