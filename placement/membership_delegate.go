package placement

import (
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate receives memberlist's callbacks. Event callbacks run under
// memberlist's node lock: they only touch the Membership's own table and
// never call back into memberlist.
type delegate struct {
	m *Membership

	metaMu   sync.Mutex
	meta     []byte
	selfMeta NodeMeta // meta, decoded
}

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.MergeDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
	_ memberlist.AliveDelegate    = (*delegate)(nil)
)

func (d *delegate) setMeta(meta NodeMeta, b []byte) {
	d.metaMu.Lock()
	d.meta, d.selfMeta = b, meta
	d.metaMu.Unlock()
}

// incompatible returns an error wrapping ErrOtherCluster if peer cannot
// be in this node's cluster (NodeMeta.Compatible), nil otherwise.
func (d *delegate) incompatible(name, addr string, peer NodeMeta) error {
	d.metaMu.Lock()
	self := d.selfMeta
	d.metaMu.Unlock()
	if ok, why := self.Compatible(peer); !ok {
		if self.otherIDKey(peer) {
			return fmt.Errorf("%w (%w): member %s at %s cannot be in this node's cluster: %s", ErrOtherCluster, ErrOtherIDKey, name, addr, why)
		}
		return fmt.Errorf("%w: member %s at %s cannot be in this node's cluster: %s", ErrOtherCluster, name, addr, why)
	}
	return nil
}

// NodeMeta implements memberlist.Delegate.
func (d *delegate) NodeMeta(limit int) []byte {
	d.metaMu.Lock()
	defer d.metaMu.Unlock()
	if len(d.meta) > limit {
		return nil // cannot happen: checked against MetaMaxSize
	}
	return d.meta
}

// roost sends no user messages or state over gossip.
func (d *delegate) NotifyMsg([]byte)                    {}
func (d *delegate) GetBroadcasts(int, int) [][]byte     { return nil }
func (d *delegate) LocalState(bool) []byte              { return nil }
func (d *delegate) MergeRemoteState(buf []byte, _ bool) {}

// NotifyAlive implements memberlist.AliveDelegate: a peer whose name is not
// a valid NodeID, or whose meta does not decode or has no gRPC address, is
// not taken as a member.
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	if err := NodeID(n.Name).Validate(); err != nil {
		return err
	}
	meta, err := roostMeta(n.Meta)
	if err != nil {
		return fmt.Errorf("member %s: %v", n.Name, err)
	}
	return d.incompatible(n.Name, n.Address(), meta)
}

// roostMeta decodes a peer's meta, which a roost node's always is, with a
// gRPC address: one without is another service's that speaks memberlist.
func roostMeta(b []byte) (NodeMeta, error) {
	meta, err := decodeNodeMeta(b)
	if err == nil && meta.GRPCAddr == "" {
		err = fmt.Errorf("node meta: no grpc address")
	}
	return meta, err
}

// NotifyMerge implements memberlist.MergeDelegate. It runs on both sides of
// a join (before either merges the other's view) and refuses the merge when
// the other side has a live member of another cluster or shard count, or
// one that is not a roost node (another service's gossip: ErrOtherCluster),
// or one under an ID that this side knows as a live
// member at another address — two processes with one node ID.
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range peers {
		if p.State != memberlist.StateAlive && p.State != memberlist.StateSuspect {
			continue
		}
		meta, err := roostMeta(p.Meta)
		if err != nil {
			// Not a roost node's: --join names another gossip service.
			err = fmt.Errorf("%w: member %s at %s is not a roost node (%v): --join takes the --gossip address of a node of this node's cluster",
				ErrOtherCluster, p.Name, p.Address(), err)
		} else {
			err = d.incompatible(p.Name, p.Address(), meta)
		}
		if err != nil {
			m.log.Error("refusing to merge gossip state", "err", err)
			m.refusedLocked(err)
			return err
		}
		known, ok := m.members[NodeID(p.Name)]
		if !ok || !known.Alive || known.Addr == p.Address() {
			continue
		}
		self := NodeID(p.Name) == m.cfg.NodeID
		if self {
			err = fmt.Errorf("%w: node id %q is already used by a live member at %s (this node is at %s); give this node another id, or, if it is this node restarted at a new address, retry once the old one is declared dead",
				ErrDuplicateNodeID, p.Name, p.Address(), known.Addr)
		} else {
			err = fmt.Errorf("%w: node id %q is used both by %s and by %s; refusing to merge",
				ErrDuplicateNodeID, p.Name, known.Addr, p.Address())
		}
		if self {
			m.selfDup, m.selfDupAt = err, time.Now()
		}
		m.log.Error("refusing to merge gossip state", "err", err)
		m.refusedLocked(err)
		m.emitLocked(Event{Kind: EventConflict, Member: memberOf(p)})
		return err
	}
	return nil
}

// NotifyConflict implements memberlist.ConflictDelegate: gossip says a
// member we know is alive at another address.
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	err := fmt.Errorf("%w: node id %q is claimed at %s and at %s", ErrDuplicateNodeID, existing.Name, existing.Address(), other.Address())
	if NodeID(existing.Name) == m.cfg.NodeID {
		err = fmt.Errorf("%w: another process at %s uses this node's id %q (this node is at %s)",
			ErrDuplicateNodeID, other.Address(), existing.Name, existing.Address())
		m.selfDup, m.selfDupAt = err, time.Now()
	}
	m.log.Error("gossip name conflict", "err", err)
	m.emitLocked(Event{Kind: EventConflict, Member: memberOf(other)})
}

// NotifyJoin implements memberlist.EventDelegate.
func (d *delegate) NotifyJoin(n *memberlist.Node) {
	m := d.m
	mem := memberOf(n)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.members[mem.ID] = mem
	m.emitLocked(Event{Kind: EventJoin, Member: mem})
}

// NotifyLeave implements memberlist.EventDelegate (left or dead).
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	m := d.m
	mem := memberOf(n)
	mem.Alive = false
	m.mu.Lock()
	defer m.mu.Unlock()
	m.members[mem.ID] = mem
	m.emitLocked(Event{Kind: EventLeave, Member: mem})
}

// NotifyUpdate implements memberlist.EventDelegate.
func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	m := d.m
	mem := memberOf(n)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.members[mem.ID] = mem
	m.emitLocked(Event{Kind: EventUpdate, Member: mem})
}
