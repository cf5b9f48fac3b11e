package node

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
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

// A request waiting for its shard to be ready is told at once when the
// shard is fenced, to be routed elsewhere, rather than waiting shardWait
// for a readiness the fence holds back; once the fence lifts, waiting
// works as before.
func TestWaitReadyEndsWhenTheShardIsFenced(t *testing.T) {
	s := newShard(groupOf(0), nil, 1, nil)
	waited := make(chan error, 1)
	go func() { waited <- s.waitReady(context.Background()) }()
	time.Sleep(20 * time.Millisecond) // let it wait
	s.setFenced(true)
	select {
	case err := <-waited:
		if !errors.Is(err, errShardFenced) {
			t.Fatalf("waitReady: %v, want errShardFenced", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waitReady still waiting on a fenced shard")
	}
	if err := s.waitReady(context.Background()); !errors.Is(err, errShardFenced) {
		t.Fatalf("waitReady on a fenced shard: %v, want errShardFenced", err)
	}

	s.setFenced(false)
	go func() { waited <- s.waitReady(context.Background()) }()
	select {
	case err := <-waited:
		t.Fatalf("waitReady returned %v before the shard was ready", err)
	case <-time.After(20 * time.Millisecond):
	}
	s.setLeading(true)
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("waitReady: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waitReady still waiting on a ready shard")
	}
}

// Messages name a shard by its number, as the admin API and the CLI do,
// not by its Raft group's (the number plus one): a refusal said "no node
// serves shard 52 now: shard 53: leadership is moving" (found by QA).
func TestShardMessagesNameTheShard(t *testing.T) {
	s := &shard{id: groupOf(52)}
	if msg := s.handOffRefusal().Error(); !strings.Contains(msg, "shard 52:") {
		t.Errorf("hand-off refusal of shard 52: %q", msg)
	}
	for _, err := range []error{raft.ErrNotLeader, raft.ErrLeadershipLost} {
		if msg := commitError(groupOf(52), err).Error(); !strings.Contains(msg, "shard 52:") {
			t.Errorf("commit error of shard 52: %q", msg)
		}
	}
}
