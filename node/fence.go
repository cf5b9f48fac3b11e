package node

import (
	"context"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/raftstore"
)

// Liveness fences. Raft steps a leader down when it has not heard from a
// quorum of its voters for its lease, which with raftstore.QuietTiming is
// 10 s, while the other side of a partition elects a new leader within
// about a second and a half (elect.go). Until the old leader steps down it
// would go on running the shard's objects: two live instances of one
// object, the old one unable to commit. The fence narrows that window to
// about the silence timeout (1.2 s): every fenceCheck, and at once when the transport reports a peer lost, the
// node looks at each shard it leads, and one whose voters, itself counted,
// are no longer reachable in a quorum (raftstore node liveness: its pings
// are not answered, or the peer's stopped coming, for the silence timeout)
// stops being ready and drops its instances, as on a leadership loss, and
// the turns waiting at their output gate are answered (instance.outputGate:
// raft would give their commits up only with the lease). It is
// ready again when a quorum is reachable and a barrier commits, or, if
// raft has stepped it down meanwhile, when it is elected again.
//
// The fence is a shorter lease decided by this node alone: it only ever
// makes a leader stop serving sooner, never serve where raft would not.
const fenceCheck = time.Second

// fencedShard is the part of a local shard the fence uses.
type fencedShard interface {
	State() raft.RaftState
	QuorumReachable() (bool, error)
	Barrier() error
	// Nudge appends an entry and does not wait for it to commit: the
	// entry is what wakes the group's replication.
	Nudge()
	// Progress returns the index of the last entry applied and of the
	// last entry in the log, committed or not.
	Progress() (applied, last uint64)
}

var _ fencedShard = fenceGroup{}

// fenceGroup is a shard's raftstore.Group as the fence sees it.
type fenceGroup struct{ *raftstore.Group }

// Barrier commits an entry and applies every one before it.
func (g fenceGroup) Barrier() error { return g.Raft().Barrier(0).Error() }

// Nudge appends a barrier and leaves its future: a stalled group may not
// commit it for long, and a nudge that waited would hold back the next.
func (g fenceGroup) Nudge() { g.Raft().Barrier(0) }

// Progress implements fencedShard.
func (g fenceGroup) Progress() (applied, last uint64) {
	return g.Raft().AppliedIndex(), g.Raft().LastIndex()
}

// runFences runs checkFence every fenceCheck and when kicked, until ctx ends.
func (c *cluster) runFences(ctx context.Context, kick <-chan struct{}) {
	t := time.NewTicker(fenceCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
		c.mu.Lock()
		shards := make([]*localShard, 0, len(c.groups))
		for _, ls := range c.groups {
			shards = append(shards, ls)
		}
		c.mu.Unlock()
		for _, ls := range shards {
			// A barrier waits for a commit: it ends at the latest when
			// the group loses its leadership or shuts down, so neither
			// goroutine is waited for at the node's stop.
			if unfence := checkFence(ls.shard, fenceGroup{ls.group}, c.n.manager.dropShard); unfence != nil {
				go unfence()
			}
			if nudgeStalled(ls.shard, fenceGroup{ls.group}, time.Now()) {
				go fenceGroup{ls.group}.Nudge()
			}
		}
	}
}

// checkFence fences sh when this node leads it without a reachable quorum,
// and lifts the fence when this node no longer leads; when the quorum is
// back it returns the work that lifts it (a barrier, then the lift), for the
// caller to run apart: the barrier waits for a commit.
func checkFence(sh *shard, g fencedShard, drop func(*shard)) (unfence func()) {
	if g.State() != raft.Leader {
		// A follower serves nothing; if it is elected, watchLeadership
		// makes it ready after its own barrier. The fence stays until
		// watchLeadership has taken the loss: lifted before, it would
		// leave the shard ready on a node that no longer leads it.
		sh.liftFenceUnlessLeading()
		return nil
	}
	ok, err := g.QuorumReachable()
	if err != nil {
		return nil
	}
	if !ok {
		if sh.setFenced(true) {
			drop(sh)
		}
		return nil
	}
	if !sh.isFenced() || !sh.unfencing.CompareAndSwap(false, true) {
		return nil
	}
	// Everything committed before the fence must be applied before the
	// shard serves reads again: the instances were dropped, and new ones
	// read the FSM.
	return func() {
		defer sh.unfencing.Store(false)
		if g.Barrier() == nil && g.State() == raft.Leader {
			sh.setFenced(false)
		}
	}
}

// stalledAfter is how long a shard this node leads may hold entries it
// has not committed, applying nothing meanwhile, with a quorum of its
// voters reachable, before nudgeStalled wakes its replication.
const stalledAfter = 2 * time.Second

// nudgeStalled reports whether sh's group, led here, should be nudged: it
// has held uncommitted entries and applied nothing for stalledAfter
// although a quorum of its voters is reachable. hashicorp/raft retries a
// failed append to a follower only when a new entry is written or after
// CommitTimeout, which QuietTiming makes 30-60 s: an append that failed
// because the follower's node was restarting (its replica not running
// yet) left the entry, and every turn of its objects behind it, waiting
// that long when the follower was needed for the quorum. A new entry
// wakes the replication at once; if its append fails too, the group is
// still stalled, and it is nudged again stalledAfter later. A shard under
// load, whose applied index moves, is not stalled. Called from the fence
// loop only (it owns sh.stalledSince and sh.stalledApplied).
func nudgeStalled(sh *shard, g fencedShard, now time.Time) bool {
	applied, last := g.Progress()
	if g.State() != raft.Leader || applied >= last {
		sh.stalledSince = time.Time{}
		return false
	}
	if ok, err := g.QuorumReachable(); err != nil || !ok {
		sh.stalledSince = time.Time{} // the fence's business
		return false
	}
	if sh.stalledSince.IsZero() || applied != sh.stalledApplied {
		sh.stalledSince, sh.stalledApplied = now, applied
		return false
	}
	if now.Sub(sh.stalledSince) < stalledAfter {
		return false
	}
	sh.stalledSince = time.Time{}
	return true
}
