package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
	"github.com/roostdb/roost/proto"
)

// rejoinInterval is how often a node reaches out, through gossip, to one
// node of the map that gossip does not show alive.
const rejoinInterval = 5 * time.Second

// defaultDuplicatePatience is Node.duplicatePatience: well past the few
// seconds gossip takes to declare a node's old self dead.
const defaultDuplicatePatience = 30 * time.Second

// conflictFresh is how recent the last refusal must be for a run of them
// to go on: a rejoin every rejoinInterval, one of which may wait out a
// dead node's TCP timeout (10 s) before the next.
const conflictFresh = 4 * rejoinInterval

// rejoin keeps gossip in one piece. memberlist gossips only with members
// it sees alive, so two sides that each hold the other dead stay apart
// for good, while Raft, over gRPC, still connects them: a node restarted
// with no --join that answers (the first node, which joins nobody, or one
// whose seed is down), or the two halves of a partition that lasted past
// memberlist's gossip to the dead. Healing would then move replicas off
// nodes that are alive. So, as serf's reconnect does, every rejoinInterval
// this node joins the gossip address of the next node of the map (removed
// nodes aside) that it does not see alive; with no map and no other
// member, that of a meta voter (gossipOfMetaVoter); and while the cluster
// may not have taken this node's new address, that of a live member again
// (unannounced). It also watches for
// another live process with this node's ID (duplicateWatch).
//
// A join can wait for memberlist's TCP timeout (10 s) on a node that does
// not answer. It runs on its own goroutine, which rejoin does not wait
// for when ctx ends: that goroutine ends by itself within the timeout,
// and Close is not held up.
func (c *cluster) rejoin(ctx context.Context) {
	t := time.NewTicker(rejoinInterval)
	defer t.Stop()
	var last placement.NodeID // the node tried last; the next try goes to the one after it
	var dup duplicateWatch
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.rejoinKick:
		}
		if err := dup.check(c, time.Now()); err != nil {
			c.fail(err)
			return
		}
		id, addr := c.nextToRejoin(last)
		if addr == "" {
			id, addr = c.gossipOfMetaVoter(ctx)
		}
		if addr == "" {
			id, addr = c.unannounced()
		}
		if addr == "" {
			continue
		}
		last = id
		done := make(chan error, 1)
		go func() {
			_, err := c.members.Join([]string{addr})
			done <- err
		}()
		select {
		case <-ctx.Done():
			return
		case err := <-done:
			switch {
			case err == nil:
				c.n.log.Info("gossip: rejoined a node of the map that gossip saw as gone", "node", id, "gossip", addr)
			case errors.Is(err, placement.ErrShutdown):
				return
			default:
				c.n.log.Debug("gossip: rejoining a node of the map", "node", id, "gossip", addr, "err", err)
			}
		}
	}
}

// nextToRejoin returns the first node after last, in ID order, that the
// map lists (not removed, with a gossip address) and gossip does not show
// alive; an empty addr if there is none.
func (c *cluster) nextToRejoin(last placement.NodeID) (placement.NodeID, string) {
	m := c.metaFSM.Map()
	alive := c.aliveIDs()
	var gone []placement.NodeID
	for id, nd := range m.Nodes {
		if !alive[id] && nd.State != placement.NodeRemoved && nd.GossipAddr != "" {
			gone = append(gone, id)
		}
	}
	if len(gone) == 0 {
		return "", ""
	}
	slices.Sort(gone)
	i, _ := slices.BinarySearch(gone, last)
	if i < len(gone) && gone[i] == last {
		i++
	}
	id := gone[i%len(gone)]
	return id, m.Nodes[id].GossipAddr
}

// unannounced returns the gossip address of a live member to join again
// through while the cluster may not have taken this node's address: it
// restarted and has no map yet, or its map lists another gRPC address for
// it. Gossip refuses a crashed node's new address until it has declared
// the old one dead and its reclaim time (deadNodeReclaim) has passed, and
// only this node's next alive message offers it again — a join's
// push/pull, where gossip's own would come at its 30 s push/pull interval.
func (c *cluster) unannounced() (placement.NodeID, string) {
	m := c.metaFSM.Map()
	me, listed := m.Nodes[c.self]
	waiting := m.ClusterID == "" && c.restarted || listed && me.GRPCAddr != c.advGRPC
	if !waiting {
		return "", ""
	}
	for _, mem := range c.aliveMembers() {
		if mem.ID != c.self {
			return mem.ID, mem.Addr
		}
	}
	return "", ""
}

// gossipOfMetaVoter finds a gossip address to join through for a node
// that gossip shows no other member and that has no map to rejoin through:
// one restarted at a new address before its data dir held a meta snapshot.
// The meta leader dials its old address, so nothing would reach it. Its
// meta group's Raft log names the voters' gRPC addresses; the first that
// answers the Member RPC gives its gossip address.
func (c *cluster) gossipOfMetaVoter(ctx context.Context) (placement.NodeID, string) {
	if c.metaFSM.Map().ClusterID != "" || len(c.aliveMembers()) > 1 {
		return "", ""
	}
	c.mu.Lock()
	g := c.meta
	c.mu.Unlock()
	if g == nil {
		return "", ""
	}
	cf := g.Raft().GetConfiguration()
	if cf.Error() != nil {
		return "", ""
	}
	for _, s := range cf.Configuration().Servers {
		if s.ID == raft.ServerID(c.self) {
			continue
		}
		cl, err := c.n.manager.forwarder.client(peer{id: string(s.ID), addr: string(s.Address)})
		if err != nil {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := cl.Member(actx, &proto.ForwardMemberRequest{NodeId: string(c.self)})
		cancel()
		if err != nil || resp.GossipAddr == "" {
			c.n.log.Debug("gossip: asking a meta voter for its gossip address", "node", s.ID, "grpc", s.Address, "err", err)
			continue
		}
		c.n.log.Info("gossip: no other member and no map to rejoin through; joining through a meta voter", "node", s.ID, "gossip", resp.GossipAddr)
		return placement.NodeID(s.ID), resp.GossipAddr
	}
	return "", ""
}

// duplicateWatch stops a node that another live process shares its ID
// with, as a copy of a node's data dir started as a second node would:
// that copy rejoins through its map, every merge is refused (the cluster
// has the ID alive elsewhere), and it would run alone, answering 503, for
// good. A node refused that way for the node's duplicatePatience while it
// sees no other member fails saying so; meanwhile /readyz says it. The
// patience lets a node restarted at a new address wait for gossip to
// declare its old self dead (seconds), and the node that is a member of
// the cluster sees the others alive, so only the one left out stops. It is
// the rejoin goroutine's.
type duplicateWatch struct {
	since time.Time // when this run of refusals began; zero if none is under way
}

// check looks at the membership's last conflict at now: it returns the
// error to fail the node with once the conflict has lasted the patience.
func (w *duplicateWatch) check(c *cluster, now time.Time) error {
	at, err := c.members.Conflict()
	if err == nil || now.Sub(at) > conflictFresh || len(c.aliveMembers()) > 1 {
		w.since = time.Time{}
		c.duplicateID.Store(nil)
		return nil
	}
	if w.since.IsZero() {
		w.since = at
	}
	c.duplicateID.Store(&err)
	if patience := c.n.duplicatePatience; now.Sub(w.since) >= patience {
		return fmt.Errorf("%w; stopping after %s of it: give this node its own --id and an empty data dir (a copy of another node's data dir is that node)", err, patience)
	}
	return nil
}
