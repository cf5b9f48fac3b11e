package node

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
	"github.com/roostdb/roost/proto"
	"github.com/roostdb/roost/raftstore"
)

// Convergence (DESIGN §6): each shard leader moves its group's Raft
// configuration toward the replica set in the map, one change per control
// tick: add a missing replica as a non-voter, promote it once it has caught
// up, then remove replicas the map no longer names (handing leadership
// away first, to a live caught-up replica the map names, if the leader
// itself is leaving), each only if the voters alive without it make a
// quorum (nextConfigStep). A node whose replica was
// removed stops that group, and deletes its data once the group's
// committed configuration leaves the node out (reclaim.go).

// catchUpLag is how far behind the leader's applied index a non-voter may
// be and still be promoted.
const catchUpLag = 64

// membershipTimeout bounds one configuration change.
const membershipTimeout = 5 * time.Second

// reconcileConfig makes one step of shard s's configuration toward the map
// and reports whether the configuration already matched it. It runs on the
// shard's leader only.
func (c *cluster) reconcileConfig(ctx context.Context, ls *localShard, want placement.Shard, m placement.Map) (settled bool) {
	r := ls.group.Raft()
	cf := r.GetConfiguration()
	if cf.Error() != nil {
		return false
	}
	if cf.Index() > r.CommitIndex() {
		// The last change is not committed yet. Raft takes no other
		// until it is: a change asked for now would wait in its queue,
		// up to membershipTimeout, holding up this node's reconcile of
		// every other shard. Each change also names the configuration
		// it was planned from (cf.Index()), so none applies to another.
		return false
	}
	log := c.n.log.With("shard", int(want.ID))
	if id, addr, ok := movedMember(cf.Configuration().Servers, m); ok {
		// First, as nothing else can count on a member the group dials
		// at an address it left. AddNonvoter on a member changes only its
		// address, never its suffrage.
		log.Info("a replica's node is back at another address", "node", id, "now", addr)
		raftstore.PublishCommitsAfter(r, r.AddNonvoter(id, addr, cf.Index(), membershipTimeout))
		return false
	}
	known := func(id placement.NodeID) bool { _, ok := m.Nodes[id]; return ok }
	applied := make(map[placement.NodeID]uint64) // what caughtUp heard
	caughtUp := func(id placement.NodeID) bool {
		a, ok := c.replicaApplied(ctx, m.Nodes[id], ls.group.ID())
		if ok {
			applied[id] = a
		}
		return ok && withinCatchUpLag(a, r.AppliedIndex())
	}
	alive := c.answeringIDs(cf.Configuration().Servers)
	step := nextConfigStep(raft.ServerID(c.self), cf.Configuration().Servers, want.Replicas, known, caughtUp, alive)
	sid := raft.ServerID(step.node)
	addr := raft.ServerAddress(m.Nodes[step.node].GRPCAddr)
	switch step.kind {
	case stepNone:
		return true
	case stepCatchUp:
		if ls.catchUp.stalled(step.node, applied[step.node], time.Now()) {
			log.Debug("a replica catching up has applied nothing new lately: waking the group's replication", "node", step.node)
			go fenceGroup{ls.group}.Nudge()
		}
	case stepAddNonvoter:
		log.Info("adding replica as non-voter", "node", step.node)
		raftstore.PublishCommitsAfter(r, r.AddNonvoter(sid, addr, cf.Index(), membershipTimeout))
	case stepPromote:
		log.Info("promoting caught-up replica to voter", "node", step.node)
		raftstore.PublishCommitsAfter(r, r.AddVoter(sid, addr, cf.Index(), membershipTimeout))
	case stepHandOver:
		target, ok := handOverTarget(cf.Configuration().Servers, raft.ServerID(c.self), func(id raft.ServerID) bool {
			nid := placement.NodeID(id)
			return slices.Contains(want.Replicas, nid) && alive[nid] && caughtUp(nid)
		})
		if !ok {
			log.Debug("this node leaves the shard, but no replica the map names is alive and caught up to take over")
			break
		}
		if c.transfer(ls, target) {
			// Once a transfer: reconcile comes back every pass while it runs.
			log.Info("this node leaves the shard: handing leadership over", "to", target.ID)
		}
	case stepRemove:
		log.Info("removing replica", "node", step.node)
		raftstore.PublishCommitsAfter(r, r.RemoveServer(sid, cf.Index(), membershipTimeout))
	case stepHold:
		log.Debug("not removing a replica: the voters alive without it would not be a quorum", "node", step.node)
	}
	return false
}

// movedMember returns a member of servers whose node the map has at
// another gRPC address (it came back after its address changed), with
// that address.
func movedMember(servers []raft.Server, m placement.Map) (raft.ServerID, raft.ServerAddress, bool) {
	for _, s := range servers {
		nd, ok := m.Nodes[placement.NodeID(s.ID)]
		if ok && nd.GRPCAddr != "" && raft.ServerAddress(nd.GRPCAddr) != s.Address {
			return s.ID, raft.ServerAddress(nd.GRPCAddr), true
		}
	}
	return "", "", false
}

// configStepKind is what reconcileConfig does next.
type configStepKind int

const (
	stepNone        configStepKind = iota // the configuration matches the map
	stepCatchUp                           // a non-voter is catching up
	stepAddNonvoter                       // add node as a non-voter
	stepPromote                           // make the caught-up node a voter
	stepHandOver                          // this node leaves: hand the leadership over
	stepRemove                            // remove node
	stepHold                              // node's removal would leave no live quorum: wait
)

type configStep struct {
	kind configStepKind
	node placement.NodeID
}

// nextConfigStep is the rule reconcileConfig follows on the leader (self)
// of a group configured as servers, which the map wants as want: add a
// missing replica the map knows (known) as a non-voter, promote it once
// caughtUp, and only when every wanted replica votes, remove the others —
// this node last, after handing the leadership over. A voter is removed
// only if the voters left that gossip sees alive (alive) make a quorum of
// the voters left (removalKeepsLiveQuorum): the change is committed by a
// majority of the new configuration, so with one of two voters left dead
// the group could commit nothing, not even that removal, where it had two
// live voters of three. That happens when a node dies between the step
// that adds a replica and the one that removes another (a shard of two
// replicas {a,b} moved to {a,c} through {a,b,c}, a dying then), or
// between an operation's planning and its step. The removal waits until
// the dead node is back; another removal may go first.
func nextConfigStep(self raft.ServerID, servers []raft.Server, want []placement.NodeID, known, caughtUp func(placement.NodeID) bool, alive map[placement.NodeID]bool) configStep {
	inConf := make(map[raft.ServerID]raft.ServerSuffrage, len(servers))
	for _, s := range servers {
		inConf[s.ID] = s.Suffrage
	}
	// A non-voter still catching up holds back the removals, not the
	// replicas after it: one whose node died while it caught up would
	// otherwise keep the next from ever being added (a heal that replaces
	// it adds that next one).
	catchingUp := configStep{kind: stepNone}
	for _, id := range want {
		if !known(id) {
			continue
		}
		switch suffrage, present := inConf[raft.ServerID(id)]; {
		case !present:
			return configStep{stepAddNonvoter, id}
		case suffrage == raft.Nonvoter:
			if caughtUp(id) {
				return configStep{stepPromote, id}
			}
			if catchingUp.kind == stepNone {
				catchingUp = configStep{stepCatchUp, id}
			}
		}
	}
	if catchingUp.kind != stepNone {
		return catchingUp // removals wait until every wanted replica votes
	}
	held := configStep{kind: stepNone}
	for _, s := range servers {
		id := placement.NodeID(s.ID)
		if slices.Contains(want, id) {
			continue
		}
		if s.ID == self {
			return configStep{stepHandOver, id}
		}
		if !removalKeepsLiveQuorum(servers, s.ID, alive) {
			held = configStep{stepHold, id}
			continue
		}
		return configStep{stepRemove, id}
	}
	return held
}

// handOverTarget is the voter of servers, other than self, that a leader
// leaving its group hands the leadership to: the first that ok accepts
// (for a shard, a replica the map names, alive in gossip and caught up).
// Raft's own choice (LeadershipTransfer without a target) is the voter its
// replication has sent the furthest, the first in the configuration on a
// tie: in a quiet group, one that died after the last entry was sent ties
// with the live ones, and every hand-over went to it and failed after the
// election timeout, refusing the shard's writes meanwhile.
func handOverTarget(servers []raft.Server, self raft.ServerID, ok func(raft.ServerID) bool) (raft.Server, bool) {
	for _, s := range servers {
		if s.Suffrage == raft.Voter && s.ID != self && ok(s.ID) {
			return s, true
		}
	}
	return raft.Server{}, false
}

// caughtUp reports whether a replica has applied the group's log to within
// catchUpLag of leaderApplied.
func (c *cluster) caughtUp(ctx context.Context, node placement.Node, g raftstore.GroupID, leaderApplied uint64) bool {
	a, ok := c.replicaApplied(ctx, node, g)
	return ok && withinCatchUpLag(a, leaderApplied)
}

// withinCatchUpLag is the rule of caughtUp: a replica at applied is caught
// up with a leader at leaderApplied.
func withinCatchUpLag(applied, leaderApplied uint64) bool {
	return applied+catchUpLag >= leaderApplied
}

// replicaApplied asks a replica how far it has applied the group's log;
// ok is false if it could not tell (not reachable, not running the group).
// One the transport already finds unreachable is not asked: over a network
// that drops packets the question would hold the control loop for its
// whole timeout, once for every shard with a replica there.
func (c *cluster) replicaApplied(ctx context.Context, node placement.Node, g raftstore.GroupID) (applied uint64, ok bool) {
	st, ok := c.replicaStatus(ctx, node, g)
	if !ok {
		return 0, false
	}
	return st.AppliedIndex, true
}

// replicaStatus asks node for its replica of g's status, as replicaApplied
// does; ok is false if it could not tell or does not run the group.
func (c *cluster) replicaStatus(ctx context.Context, node placement.Node, g raftstore.GroupID) (st *proto.ForwardGroupStatusResponse, ok bool) {
	if !c.trans.PeerReachable(raft.ServerAddress(node.GRPCAddr)) {
		return nil, false
	}
	st, err := c.askGroupStatus(ctx, node, &proto.ForwardGroupStatusRequest{GroupId: uint64(g)})
	if err != nil || !st.Running {
		return nil, false
	}
	return st, true
}

// catchUpTrack follows the replica a shard's leader waits on to catch up
// (stepCatchUp). hashicorp/raft retries a failed append or snapshot to a
// follower only when a new entry is written or after CommitTimeout, which
// QuietTiming makes 30-60 s; the first send to a replica just added fails
// when its node has not started the replica yet (the group is NotFound
// there), and in a quiet shard nothing is written after it: a move, a
// drain or a heal then waited that long on the shard. stalled says when
// to wake the replication (fenceGroup.Nudge) again. Owned by the control
// loop (reconcileConfig).
type catchUpTrack struct {
	node    placement.NodeID
	applied uint64
	since   time.Time // since when node has been seen at applied
}

// stalled records that node was seen at applied (0 if it could not be
// asked) and reports whether it has been seen there for stalledAfter,
// which restarts the wait: a replica that stays stuck is nudged every
// stalledAfter.
func (t *catchUpTrack) stalled(node placement.NodeID, applied uint64, now time.Time) bool {
	if node != t.node || applied != t.applied || t.since.IsZero() {
		*t = catchUpTrack{node: node, applied: applied, since: now}
		return false
	}
	if now.Sub(t.since) < stalledAfter {
		return false
	}
	t.since = now
	return true
}

// stopIfRemoved shuts this node's replica of a shard down once the map no
// longer names it and a leader has confirmed that the group's committed
// configuration leaves it out (removedCanStop); until then it asks
// (confirmLeft). Its data stays until reclaim finds that it may go.
func (c *cluster) stopIfRemoved(ctx context.Context, i int, ls *localShard, m placement.Map, want placement.Shard) {
	r := ls.group.Raft()
	cf := r.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	if !removedCanStop(r.State(), cf.Configuration().Servers, ls.leftConfirmed.Load() == want.Version+1) {
		c.confirmLeft(ctx, ls, m, want)
		return
	}
	c.n.log.Info("this node's replica left the shard; stopping it", "shard", i)
	c.mu.Lock()
	delete(c.groups, i)
	c.leftovers[i] = &leftover{}
	c.mu.Unlock()
	ls.stop()
	// Not ready before the drop, as on a loss: a request that found the
	// shard before it left c.groups must not activate an instance after.
	ls.shard.setLeading(false)
	c.n.manager.dropShard(ls.shard)
	ls.group.Shutdown()
}

// confirmLeft asks, in the background and at most once every
// reclaimInterval, the replicas the map names whether the group's
// committed configuration leaves this node out (leftConfirmed), and
// records a yes in ls.leftConfirmed, with the shard's map version, for the
// next stopIfRemoved (a yes about an older version of the shard says
// nothing: the map may have given the shard back since, and the leader
// made this replica a voter again).
func (c *cluster) confirmLeft(ctx context.Context, ls *localShard, m placement.Map, want placement.Shard) {
	now := time.Now().UnixNano()
	if ls.leftConfirmed.Load() == want.Version+1 || now < ls.nextLeftCheck.Load() || !ls.checkingLeft.CompareAndSwap(false, true) {
		return
	}
	ls.nextLeftCheck.Store(now + int64(reclaimInterval))
	gid := ls.group.ID()
	c.n.wg.Add(1)
	go func() {
		defer c.n.wg.Done()
		defer ls.checkingLeft.Store(false)
		ask := func(id placement.NodeID) (*proto.ForwardGroupStatusResponse, error) {
			return c.groupStatusOf(ctx, m, id, gid, true)
		}
		if leftConfirmed(c.self, want.Replicas, ask) {
			ls.leftConfirmed.Store(want.Version + 1)
		}
	}()
}

// removedCanStop is the rule for a replica the map no longer names: it
// stops once a leader has confirmed that the group's committed
// configuration leaves it out (leftConfirmed), or at once if it has no
// configuration at all (no leader ever contacted it). A leader never stops
// itself: it hands leadership over first (reconcileConfig).
//
// Nothing the replica sees for itself is enough, because a voter that
// stops before its removal commits takes a voter out of the group's
// quorum early, and one more failure then leaves the group without a
// leader until the failed node is back or its replicas are re-created
// elsewhere (session 33's QA, under a rebalance with a node SIGKILLed
// while shards moved; each rule below was tried in turn and each lost a
// shard's leader for 22 s to 2 minutes):
//   - its own configuration leaving it out: raft uses a configuration from
//     when it is appended, and the leader that appended the removal may
//     die before it commits; this replica then alone holds it (and only it
//     can be elected: elect.go, raftstore Group.RemovalPending);
//   - every replica the map names voting, with the other voters alive
//     making a quorum without it: a quorum with nothing to spare, stopped
//     the moment before the leader appended the removal;
//   - no leader's contact for a while: the same quorum, seen from gossip.
//
// Waiting costs a status call a second to the map's replicas
// (confirmLeft) and the replica's raft running a second or two longer.
func removedCanStop(state raft.RaftState, servers []raft.Server, leftConfirmed bool) bool {
	return state != raft.Leader && (leftConfirmed || len(servers) == 0)
}

// balanceLeaders hands one shard's leadership to a less loaded voter when
// this node leads more than its share, so leaders spread evenly.
func (c *cluster) balanceLeaders(m placement.Map) (moved bool) {
	c.mu.Lock()
	groups := make(map[int]*localShard, len(c.groups))
	for i, ls := range c.groups {
		groups[i] = ls
	}
	c.mu.Unlock()
	// Shares are counted over the active nodes gossip sees alive: while a
	// node is down the others lead its shards, and passing those around
	// between them only stalls writes.
	alive := c.aliveIDs()
	active := 0
	for _, id := range m.NodesIn(placement.NodeActive) {
		if alive[id] {
			active++
		}
	}
	if active == 0 {
		return false
	}
	share := (m.Shards + active - 1) / active
	// leads counts the leaders of the groups this node holds: exact for
	// this node, which holds every group it leads, but short for another
	// that leads groups this node does not hold (with more nodes than
	// replicas). So it only rules candidates out; a candidate's own count
	// decides. Handing leaderships to nodes short in this count alone, which
	// may lead more than their share, moved leaders for ever.
	leads := map[raft.ServerID]int{}
	var mine []int
	for i, ls := range groups {
		_, id := ls.group.Raft().LeaderWithID()
		if id == "" {
			return false // an election is under way: wait until it settles
		}
		leads[id]++
		if id == raft.ServerID(c.self) {
			mine = append(mine, i)
		}
	}
	if len(mine) <= share {
		return false
	}
	slices.Sort(mine)
	for _, i := range mine {
		c.mu.Lock()
		recent := time.Since(c.handedOff[i]) < handOffBackoff
		if !recent {
			c.handedOff[i] = time.Now() // tried or not, look again only after the backoff
		}
		c.mu.Unlock()
		if recent {
			continue
		}
		r := groups[i].group.Raft()
		cf := r.GetConfiguration()
		if cf.Error() != nil {
			continue
		}
		for _, s := range cf.Configuration().Servers {
			if s.Suffrage != raft.Voter || s.ID == raft.ServerID(c.self) || leads[s.ID] >= share {
				continue
			}
			// Never to a replica the map no longer names: it would hand
			// the leadership straight back (reconcileConfig), and while
			// its removal is held (no live quorum without it) the two
			// would pass it to and fro, refusing writes at each pass.
			if i >= len(m.ShardMap) || !slices.Contains(m.ShardMap[i].Replicas, placement.NodeID(s.ID)) {
				continue
			}
			// Only a replica that runs the group and has caught up can take
			// over at once; anything else stalls the shard's writes while
			// the transfer times out.
			node, ok := m.Nodes[placement.NodeID(s.ID)]
			if !ok {
				continue
			}
			st, ok := c.replicaStatus(context.Background(), node, groups[i].group.ID())
			if !ok || !withinCatchUpLag(st.AppliedIndex, r.AppliedIndex()) || int(st.ShardsLed) >= share {
				continue
			}
			c.n.log.Debug("moving shard leadership to balance leaders", "shard", i, "to", s.ID)
			c.transfer(groups[i], s)
			return true
		}
	}
	return false
}

// handOffBackoff is how long a node waits before it considers handing the
// same shard's leadership away again.
const handOffBackoff = 10 * time.Second

// fail reports an error that stops this node from taking part in the
// cluster; Node.Failed delivers it.
func (c *cluster) fail(err error) { c.n.fail(err) }

// checkClusterID refuses a map of another cluster than the one this data
// dir belongs to.
func (c *cluster) checkClusterID(m placement.Map) error {
	if c.identity.ClusterID != "" && m.ClusterID != c.identity.ClusterID {
		return fmt.Errorf("%w: %s belongs to cluster %s, but the nodes this node joined form cluster %s; use an empty data dir to join them",
			ErrDataDirMismatch, c.n.cfg.DataDir, c.identity.ClusterID, m.ClusterID)
	}
	return nil
}
