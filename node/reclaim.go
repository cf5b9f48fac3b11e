package node

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
	"github.com/roostdb/roost/proto"
	"github.com/roostdb/roost/raftstore"
)

// Reclaiming the data of a replica this node no longer holds. A replica the
// map drops is stopped (stopIfRemoved), but its log, vote, state machine and
// snapshots stay in Pebble until it is safe to delete them: until the
// group's committed configuration no longer names this node. Before that the
// node may still be one of the group's voters, and a voter that forgets its
// log and vote can elect a leader that lacks committed entries — it would
// grant its vote to any candidate, and could vote twice in one term. So the
// node asks the replicas the map names for the group's status with
// ConfirmConfig; the leader reads its configuration, then commits a barrier
// in the same term, which commits the configuration too. Once that
// configuration leaves this node out, it can only come back as a non-voter
// the leader adds (reconcileConfig) when the map gives it the shard again,
// and a leader promotes it only once its running replica has caught up: so
// the deleted replica starts empty, as a non-voter, and catches up from the
// leader, by snapshot if the leader's log no longer starts at 1.
//
// A node that restarts finds the data of groups it left among the Store's
// groups (startCluster), runs each such replica once more (its group may
// still count it as a voter: stopIfRemoved stops it as it would have before
// the restart), and then reclaims it the same way; raftstore finishes a
// deletion a crash interrupted before any group starts. If the map gives the
// shard back before the data is gone, the replica restarts on its own data,
// which is as safe as any restart.

// reclaimInterval is how often a node asks again whether it may delete a
// group's data.
const reclaimInterval = time.Second

// leftover is a shard whose data is on this node's disk while the node
// runs no replica of it.
type leftover struct {
	next time.Time // when to ask again
	busy bool      // a check is under way
	// fromStart: the data was on disk when this node started, and the
	// replica has not run since (reconcileShards runs it once again).
	fromStart bool
}

// noteLeftovers records, at start, the shards whose data the Store holds.
// Those the map gives this node are started and forgotten (startShard); the
// others are reclaimed.
func (c *cluster) noteLeftovers(groups []raftstore.GroupID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range groups {
		if g != metaGroup {
			c.leftovers[int(g)-1] = &leftover{fromStart: true}
		}
	}
}

// takeLeftoverFromStart reports whether shard i's data is a leftover this
// node found at start and has not run since, and if so forgets that it
// was: the replica is run again once (reconcileShards).
func (c *cluster) takeLeftoverFromStart(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	lo := c.leftovers[i]
	if lo == nil || !lo.fromStart || lo.busy {
		return false
	}
	lo.fromStart = false
	return true
}

// reclaim starts, unless one runs or ran within reclaimInterval, a check
// whether this node's data of shard s may go, and deletes it if so. The map
// does not give s to this node and it runs no replica of s.
func (c *cluster) reclaim(ctx context.Context, m placement.Map, s placement.Shard) {
	i := int(s.ID)
	now := time.Now()
	c.mu.Lock()
	lo := c.leftovers[i]
	if lo == nil || lo.busy || now.Before(lo.next) {
		c.mu.Unlock()
		return
	}
	lo.busy, lo.next = true, now.Add(reclaimInterval)
	c.mu.Unlock()
	c.n.wg.Add(1)
	go func() {
		defer c.n.wg.Done()
		done := c.deleteIfLeft(ctx, m, s, lo)
		c.mu.Lock()
		lo.busy = false
		if done && c.leftovers[i] == lo {
			delete(c.leftovers, i)
		}
		c.mu.Unlock()
	}()
}

// deleteIfLeft deletes this node's data of shard s, the leftover lo, once a
// replica the map names confirms that the group's committed configuration
// leaves this node out. It reports whether the data is gone.
func (c *cluster) deleteIfLeft(ctx context.Context, m placement.Map, s placement.Shard, lo *leftover) bool {
	gid := groupOf(int(s.ID))
	ask := func(id placement.NodeID) (*proto.ForwardGroupStatusResponse, error) {
		return c.groupStatusOf(ctx, m, id, gid, true)
	}
	if !leftConfirmed(c.self, s.Replicas, ask) {
		return false
	}
	// The answer speaks of the replica that left as lo. One started on
	// the data since (the map gave the shard back) and stopped again is
	// another leftover, which the answer may not cover: it could have
	// been a voter again.
	c.mu.Lock()
	same := c.leftovers[int(s.ID)] == lo
	c.mu.Unlock()
	if !same {
		return false
	}
	err := c.n.store.DeleteGroup(gid)
	switch {
	case errors.Is(err, raftstore.ErrGroupRunning):
		// The map gave the shard back meanwhile and the replica runs again
		// on its data; startShard has forgotten the leftover.
		return false
	case err != nil:
		c.n.log.Warn("deleting the data of a shard this node left", "shard", int(s.ID), "err", err)
		return false
	}
	c.n.log.Info("deleted the data of a shard this node left", "shard", int(s.ID))
	return true
}

// leftConfirmed asks the replicas (those the map names for the shard) in
// turn, through ask, for the group's status with ConfirmConfig, until one
// answers with a committed configuration that leaves self out.
func leftConfirmed(self placement.NodeID, replicas []placement.NodeID, ask func(placement.NodeID) (*proto.ForwardGroupStatusResponse, error)) bool {
	for _, id := range replicas {
		if id == self {
			continue
		}
		st, err := ask(id)
		if err == nil && st.GetConfigCommitted() && !slices.Contains(st.Voters, string(self)) && !slices.Contains(st.Nonvoters, string(self)) {
			return true
		}
	}
	return false
}

// configCommitted reports whether the configuration a leader read while it
// led in term is committed. It commits a barrier: if that happens in the same
// term, the configuration came before the barrier in the leader's log (a
// leader's log only grows within its term), so it is committed too.
func configCommitted(r *raft.Raft, term uint64) bool {
	if r.Barrier(time.Second).Error() != nil {
		return false
	}
	return r.CurrentTerm() == term && r.State() == raft.Leader
}
