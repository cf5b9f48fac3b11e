package node

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/roostdb/roost/placement"
	"github.com/roostdb/roost/proto"
)

// A node whose meta group has no log (a new node, or one whose data dir
// was lost) must find out what the cluster knows of it before it runs any
// Raft group, for two reasons:
//
//   - A node whose data dir was lost comes back under its ID with an
//     empty log, term and vote, while the groups still count it as the
//     voter it was. It could then vote for a candidate that lacks
//     committed entries, and acknowledged writes would be lost. Each data
//     dir has a random ID (node.json), which the map records when the
//     node registers (placement.Node.DataID); a node the map lists with
//     another data dir is refused.
//   - A new node that meets bootstrap-expect alive nodes while one of the
//     cluster's is down could count itself among the first voters and
//     bootstrap a second meta configuration. A node that hears of a
//     cluster joins it instead.
//
// So it asks every alive gossip member for what its map says (the Member
// RPC) and decides once the answers allow it (decideFirstStart).

// firstStartPoll is how often a node without state asks again while it
// cannot decide how to start.
const firstStartPoll = 200 * time.Millisecond

// firstStart waits until this node, which has no meta state, can tell how
// to start its meta group: with the voters to bootstrap it with, or none
// to join the cluster that exists. ok is false if ctx ended or the node
// must not start (it has then failed the node with the reason).
func (c *cluster) firstStart(ctx context.Context) (bootstrap []raft.Server, ok bool) {
	logged := ""
	for {
		alive := c.aliveMembers()
		own := formation{expect: c.n.cfg.BootstrapExpect, replicas: c.n.cfg.Replicas}
		bootstrap, wait, err := decideFirstStart(c.self, c.identity.DataID, own, alive, c.askMembers(ctx, alive))
		if err != nil {
			c.refuseFirstStart(true, err)
			return nil, false
		}
		if wait == "" {
			if len(bootstrap) > 0 {
				voters := make([]string, 0, len(bootstrap))
				for _, v := range bootstrap {
					voters = append(voters, string(v.ID))
				}
				c.n.log.Info("bootstrapping the meta group", "voters", voters)
			} else {
				c.n.log.Info("joining the cluster's meta group: its leader adds this node")
			}
			return bootstrap, true
		}
		c.firstStartWait.Store(&wait)
		if wait != logged {
			c.n.log.Info("waiting to start the meta group", "reason", wait)
			logged = wait
		}
		if !sleepCtx(ctx, firstStartPoll) {
			return nil, false
		}
	}
}

// memberAnswer is a peer's Member answer, or why there is none.
type memberAnswer struct {
	resp *proto.ForwardMemberResponse
	err  error
}

// askMembers asks every alive member but this node what its map says
// about this node, at once.
func (c *cluster) askMembers(ctx context.Context, alive []placement.Member) map[placement.NodeID]memberAnswer {
	answers := make(map[placement.NodeID]memberAnswer, len(alive))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range alive {
		if m.ID == c.self {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var a memberAnswer
			cl, err := c.n.manager.forwarder.client(peer{id: string(m.ID), addr: m.Meta.GRPCAddr})
			if err == nil {
				actx, cancel := context.WithTimeout(ctx, time.Second)
				a.resp, err = cl.Member(actx, &proto.ForwardMemberRequest{NodeId: string(c.self)})
				cancel()
			}
			if status.Code(err) == codes.Unimplemented {
				a.resp, err = &proto.ForwardMemberResponse{}, nil // a node that keeps no map
			}
			a.err = err
			mu.Lock()
			answers[m.ID] = a
			mu.Unlock()
		}()
	}
	wg.Wait()
	return answers
}

// decideFirstStart decides how a node without meta state starts, from the
// alive members (sorted by ID, this node among them) and their answers.
// It returns the voters to bootstrap the meta group with (nil: join the
// cluster as a new node), or, when it cannot decide yet, why (wait), or
// an error if the node must not start. The rules, in order:
//
//  1. A map that lists this node as removed, or with another data dir,
//     refuses it (see the comment at the top of this file).
//  2. Any other map means a cluster exists: join it.
//  3. A member whose meta log holds more than the first configuration is
//     of a cluster that exists but has not loaded its map yet: wait. One
//     whose log holds the first configuration only has bootstrapped the
//     meta group: a founder that configuration names bootstraps the very
//     same one (if every such member names the same), any other node
//     joins it.
//  4. Every alive member must have answered: one that has not could hold
//     the map.
//  5. Otherwise no cluster exists yet: once bootstrap-expect members are
//     alive, the first that many by ID bootstrap it, and the others join
//     it. A founder bootstraps only once every other founder's answer
//     shows the same first nodes alive: gossip spreads joins unevenly, and
//     a node that saw n1, n2 and n4 (n3's join not yet heard of) would
//     bootstrap a configuration of those while n1, n2 and n3 bootstrapped
//     another.
func decideFirstStart(self placement.NodeID, dataID string, own formation, alive []placement.Member, answers map[placement.NodeID]memberAnswer) (bootstrap []raft.Server, wait string, err error) {
	want := own.expect
	peers := make([]placement.NodeID, 0, len(answers))
	for id := range answers {
		peers = append(peers, id)
	}
	slices.Sort(peers)
	cluster := ""
	for _, id := range peers {
		r := answers[id].resp
		if r == nil || r.ClusterId == "" {
			continue
		}
		cluster = r.ClusterId
		if !r.Listed {
			continue
		}
		if r.State == placement.NodeRemoved.String() {
			return nil, "", fmt.Errorf("%w: node %s was removed from cluster %s (so says %s) and its ID is not used again: start it with a new --id and an empty data dir",
				placement.ErrNodeRemoved, self, r.ClusterId, id)
		}
		if r.DataId != "" && r.DataId != dataID {
			return nil, "", fmt.Errorf("%w: %w: %w: node %s is in cluster %s with data dir %s, and this data dir (%s) is new: the node's Raft log, term and votes are lost, and its replicas could help elect a leader that lacks acknowledged writes. Restore the node's data dir, or let the cluster replace the node (it re-creates a dead node's replicas after dead_node_grace; then `roost remove %s`) and start it with a new --id",
				ErrDataDirMismatch, ErrNodeStateLost, placement.ErrDataDirReplaced, self, r.ClusterId, r.DataId, dataID, self)
		}
	}
	if cluster != "" {
		return nil, "", nil
	}
	for _, id := range peers {
		if r := answers[id].resp; r != nil && r.MetaLastIndex > 1 {
			return nil, fmt.Sprintf("node %s has cluster state but no map loaded yet", id), nil
		}
	}
	var formed []raft.Server
	bootstrapped, agreed := false, true
	for _, id := range peers {
		r := answers[id].resp
		if r == nil || r.MetaLastIndex != 1 {
			continue
		}
		conf := firstConfiguration(r)
		if bootstrapped && !slices.Equal(conf, formed) {
			agreed = false
		}
		formed, bootstrapped = conf, true
	}
	if bootstrapped {
		// It bootstrapped the meta group, with the first nodes by ID
		// that it saw alive, which need not be the ones this node sees
		// (more than bootstrap-expect nodes starting at once). A founder
		// it names bootstraps the very same configuration, so that the
		// founders can elect a leader without the first of them; any
		// other node joins that group rather than bootstrap another.
		if agreed && slices.ContainsFunc(formed, func(s raft.Server) bool { return s.ID == raft.ServerID(self) }) {
			return formed, "", nil
		}
		return nil, "", nil
	}
	for _, m := range alive {
		if a, ok := answers[m.ID]; m.ID != self && (!ok || a.err != nil) {
			why := "no answer"
			if ok {
				why = a.err.Error()
			}
			return nil, fmt.Sprintf("asking node %s whether a cluster exists: %s", m.ID, why), nil
		}
	}
	if len(alive) < want {
		return nil, fmt.Sprintf("waiting for %d nodes to form the cluster (bootstrap-expect); %d alive", want, len(alive)), nil
	}
	first := alive[:want]
	if !slices.ContainsFunc(first, func(m placement.Member) bool { return m.ID == self }) {
		return nil, "", nil
	}
	founders := make([]string, 0, want)
	for _, m := range first {
		founders = append(founders, string(m.ID))
	}
	for _, m := range first {
		if why := own.differs(m); m.ID != self && why != "" {
			return nil, fmt.Sprintf("node %s, one of the first %d nodes alive (%v), %s: %s", m.ID, want, founders, why, sameFormationAdvice), nil
		}
	}
	for _, m := range first {
		if m.ID == self {
			continue
		}
		seen := slices.Sorted(slices.Values(answers[m.ID].resp.GetAlive()))
		if theirs := seen[:min(want, len(seen))]; !slices.Equal(theirs, founders) {
			return nil, fmt.Sprintf("node %s sees %v as the first %d nodes alive, this node %v: waiting for gossip to agree on the founders", m.ID, theirs, want, founders), nil
		}
	}
	servers := make([]raft.Server, 0, want)
	for _, m := range first {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.Meta.GRPCAddr)})
	}
	return servers, "", nil
}

// formation is what the founders of a cluster must agree on: nodes with
// other bootstrap-expect counts each count other founders, and could
// bootstrap two configurations of the meta group (a QA run did, in two of
// seven tries); with other replica counts, the map would take whichever
// founder's came first, unseen. Each node gossips its own
// (placement.NodeMeta); a founder waits while another says otherwise.
type formation struct{ expect, replicas int }

// sameFormationAdvice ends every reason to wait that formation.differs
// gives.
const sameFormationAdvice = "the nodes that form a cluster need the same; restart the one that is wrong"

// differs says how m's gossiped settings differ from f, "" if they do not
// (or m says none: an older node).
func (f formation) differs(m placement.Member) string {
	var theirs, ours []string
	if m.Meta.BootstrapExpect != 0 && m.Meta.BootstrapExpect != f.expect {
		theirs, ours = append(theirs, fmt.Sprintf("bootstrap-expect %d", m.Meta.BootstrapExpect)), append(ours, strconv.Itoa(f.expect))
	}
	if m.Meta.Replicas != 0 && m.Meta.Replicas != f.replicas {
		theirs, ours = append(theirs, fmt.Sprintf("replicas %d", m.Meta.Replicas)), append(ours, strconv.Itoa(f.replicas))
	}
	if len(theirs) == 0 {
		return ""
	}
	return fmt.Sprintf("was started with %s, this node with %s", strings.Join(theirs, " and "), strings.Join(ours, " and "))
}

// firstConfiguration is the voters of the first meta configuration an
// answer names, in its order.
func firstConfiguration(r *proto.ForwardMemberResponse) []raft.Server {
	servers := make([]raft.Server, 0, len(r.FirstConfiguration))
	for _, v := range r.FirstConfiguration {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(v.Id), Address: raft.ServerAddress(v.Address)})
	}
	return servers
}

// member answers the Member RPC from this node's copy of the map.
func (c *cluster) member(req *proto.ForwardMemberRequest) (*proto.ForwardMemberResponse, error) {
	resp := &proto.ForwardMemberResponse{}
	last, err := c.n.store.LogStore(metaGroup).LastIndex()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading the meta log: %v", err)
	}
	resp.MetaLastIndex = last
	if last == 1 {
		var entry raft.Log
		if err := c.n.store.LogStore(metaGroup).GetLog(1, &entry); err != nil {
			return nil, status.Errorf(codes.Unavailable, "reading the meta log's first entry: %v", err)
		}
		if entry.Type == raft.LogConfiguration {
			for _, s := range raft.DecodeConfiguration(entry.Data).Servers {
				if s.Suffrage == raft.Voter {
					resp.FirstConfiguration = append(resp.FirstConfiguration, &proto.ForwardMetaVoter{Id: string(s.ID), Address: string(s.Address)})
				}
			}
		}
	}
	m := c.metaFSM.Map()
	resp.ClusterId = m.ClusterID
	for _, a := range c.aliveMembers() {
		resp.Alive = append(resp.Alive, string(a.ID))
	}
	if nd, ok := m.Nodes[placement.NodeID(req.NodeId)]; ok {
		resp.Listed, resp.DataId, resp.State = true, nd.DataID, nd.State.String()
	}
	resp.GossipAddr = c.members.Addr()
	return resp, nil
}
