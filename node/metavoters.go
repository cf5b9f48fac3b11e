package node

import (
	"cmp"
	"context"
	"slices"
	"strings"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
)

// The meta group's voters. The first BootstrapExpect nodes bootstrap it
// as voters; every later node runs it as a non-voter, so that it has the
// map. The meta leader keeps the voters up:
//
//   - growMeta: as nodes join, alive, active, caught-up non-voters are
//     promoted, one a control tick, until the group has the largest odd
//     number of voters up to maxMetaVoters that it can have. An odd count,
//     because a fourth voter would need three of four for a quorum and
//     survive no more failures than three;
//   - healMeta: a voter dead past DeadNodeGrace is replaced by an alive
//     non-voter, added before the dead one is removed; with no spare, it
//     leaves only an even group (deadVoterRemovable);
//   - controlMeta (cluster.go): a removed node leaves the group, a voter
//     after a spare took its vote, and only if the voters alive without it
//     make a quorum (removalKeepsLiveQuorum).
//
// Live voters are never taken away only to reach an odd count: a cluster
// bootstrapped with four keeps four.

// maxMetaVoters is how many voters the meta group grows to. Five survive
// two failures; more would make every map change wait on more nodes for
// little gain.
const maxMetaVoters = 5

// growMeta promotes one non-voter of the meta group when the group has
// fewer voters than metaVoterTarget allows and enough caught-up non-voters
// to reach it. It runs on the meta leader each control tick.
func (c *cluster) growMeta(ctx context.Context, r *raft.Raft) {
	cf := r.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	m := c.metaFSM.Map()
	servers := cf.Configuration().Servers
	voters := 0
	for _, s := range servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	spares := c.metaSpares(servers, c.aliveIDs())
	target := metaVoterTarget(voters, len(spares))
	if voters >= target {
		return
	}
	applied := r.AppliedIndex()
	var ready []raft.Server
	for _, s := range spares {
		if voters+len(ready) >= target {
			break
		}
		if c.caughtUp(ctx, m.Nodes[placement.NodeID(s.ID)], metaGroup, applied) {
			ready = append(ready, s)
		}
	}
	if voters+len(ready) < target {
		return // not yet enough caught up to reach an odd count: wait
	}
	c.n.log.Info("adding a voter to the meta group", "node", ready[0].ID, "voters", voters+1, "target", target)
	if err := r.AddVoter(ready[0].ID, ready[0].Address, 0, membershipTimeout).Error(); err != nil {
		c.n.log.Warn("promoting a meta non-voter", "node", ready[0].ID, "err", err)
	}
}

// metaSuffrage returns each member of the meta group's configuration, as
// this node knows it, with "voter" or "nonvoter".
func (c *cluster) metaSuffrage() map[placement.NodeID]string {
	c.mu.Lock()
	g := c.meta
	c.mu.Unlock()
	out := map[placement.NodeID]string{}
	if g == nil {
		return out
	}
	cf := g.Raft().GetConfiguration()
	if cf.Error() != nil {
		return out
	}
	for _, s := range cf.Configuration().Servers {
		out[placement.NodeID(s.ID)] = strings.ToLower(s.Suffrage.String())
	}
	return out
}

// metaVoterTarget is how many voters a meta group with voters voters and
// spares promotable non-voters should have: the largest odd number up to
// maxMetaVoters that they make, and never fewer than it has.
func metaVoterTarget(voters, spares int) int {
	target := min(maxMetaVoters, voters+spares)
	if target%2 == 0 {
		target--
	}
	return max(target, voters)
}

// healMeta replaces one dead voter of the meta group by an alive
// non-voter, adding the new voter before removing the dead one.
func (c *cluster) healMeta(r *raft.Raft, alive, dead map[placement.NodeID]bool) {
	cf := r.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	servers := cf.Configuration().Servers
	for _, s := range servers {
		if s.Suffrage == raft.Voter && dead[placement.NodeID(s.ID)] {
			if !c.promoteSpareMetaVoter(r, servers, alive) && !deadVoterRemovable(servers, s.ID, alive) {
				return // no spare: the dead voter stays, still one of a quorum
			}
			c.n.log.Warn("removing a dead voter of the meta group", "node", s.ID)
			if err := r.RemoveServer(s.ID, 0, membershipTimeout).Error(); err != nil {
				c.n.log.Warn("removing a dead meta voter", "node", s.ID, "err", err)
			}
			return
		}
	}
}

// deadVoterRemovable reports whether the dead voter id may leave the meta
// group (servers) although no spare takes its vote: when the group has an
// even number of voters and the others alive make a quorum without it.
// Four voters with one dead need all three others, and three survive the
// loss of one more; this is how a group that had a spare promoted and then
// failed to remove the dead voter (the meta leadership moved, say) gets
// back to an odd count. With an odd number the dead voter stays: removing
// it gains nothing, and it may come back.
func deadVoterRemovable(servers []raft.Server, id raft.ServerID, alive map[placement.NodeID]bool) bool {
	voters := 0
	for _, s := range servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	return voters%2 == 0 && removalKeepsLiveQuorum(servers, id, alive)
}

// removalKeepsLiveQuorum reports whether, with id taken out of a group's
// configuration servers (a shard's, or the meta group's), the voters left that gossip sees alive
// (alive) make a quorum of the voters left. Taking out a non-voter always
// does.
func removalKeepsLiveQuorum(servers []raft.Server, id raft.ServerID, alive map[placement.NodeID]bool) bool {
	voters, up, isVoter := 0, 0, false
	for _, s := range servers {
		switch {
		case s.Suffrage != raft.Voter:
		case s.ID == id:
			isVoter = true
		default:
			voters++
			if alive[placement.NodeID(s.ID)] {
				up++
			}
		}
	}
	return !isVoter || voters > 0 && up >= voters/2+1
}

// metaSpares returns, sorted by ID, the non-voters of the meta group
// (servers) that may become voters: alive, and active in the map — not a
// node being drained or removed, which would soon need replacing itself.
func (c *cluster) metaSpares(servers []raft.Server, alive map[placement.NodeID]bool) []raft.Server {
	m := c.metaFSM.Map()
	var spares []raft.Server
	for _, s := range servers {
		id := placement.NodeID(s.ID)
		if nd, ok := m.Nodes[id]; s.Suffrage == raft.Nonvoter && alive[id] && ok && nd.State == placement.NodeActive {
			spares = append(spares, s)
		}
	}
	slices.SortFunc(spares, func(a, b raft.Server) int { return cmp.Compare(a.ID, b.ID) })
	return spares
}

// promoteSpareMetaVoter makes the first of metaSpares that has caught up
// a voter, before a voter leaves, and reports whether it did. A spare that
// has not caught up (one alive in gossip but cut off from Raft, say) is
// not promoted: as a voter it would count towards every quorum without
// answering, and with the voter it replaces dead, the group would have
// two voters missing of four, without a quorum, where it had one of three.
func (c *cluster) promoteSpareMetaVoter(r *raft.Raft, servers []raft.Server, alive map[placement.NodeID]bool) bool {
	m := c.metaFSM.Map()
	applied := r.AppliedIndex()
	for _, s := range c.metaSpares(servers, alive) {
		if !c.caughtUp(context.Background(), m.Nodes[placement.NodeID(s.ID)], metaGroup, applied) {
			continue
		}
		c.n.log.Info("promoting a meta non-voter to voter", "node", s.ID)
		if err := r.AddVoter(s.ID, s.Address, 0, membershipTimeout).Error(); err != nil {
			c.n.log.Warn("promoting a meta non-voter", "node", s.ID, "err", err)
			return false
		}
		return true
	}
	return false
}
