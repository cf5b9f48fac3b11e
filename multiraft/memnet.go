package multiraft

import (
	"sync"

	"go.etcd.io/raft/v3/raftpb"
)

// MemNetwork connects engines in one process, for tests: every message is
// encoded and decoded as a real transport would, delivered in order per
// link by the link's own goroutine, and can be dropped by cutting links.
type MemNetwork struct {
	mu      sync.Mutex
	engines map[uint64]*Engine
	links   map[[2]uint64]*memLink
	cut     map[[2]uint64]bool
	closed  bool
	wg      sync.WaitGroup
}

// memLink is the queue of messages from one node to another.
type memLink struct {
	queue chan []Envelope
}

// NewMemNetwork returns a network with no engines.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{engines: map[uint64]*Engine{}, links: map[[2]uint64]*memLink{}, cut: map[[2]uint64]bool{}}
}

// Transport is node from's side of the network.
func (n *MemNetwork) Transport(from uint64) Transport { return memTransport{n, from} }

// Attach makes e receive what is sent to node id; Detach stops it (what is
// sent to id is then dropped), as a crash would.
func (n *MemNetwork) Attach(id uint64, e *Engine) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.engines[id] = e
}

// Detach: see Attach.
func (n *MemNetwork) Detach(id uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.engines, id)
}

// Isolate cuts the links between node id and each of others, both ways.
func (n *MemNetwork) Isolate(id uint64, others ...uint64) {
	for _, o := range others {
		n.Cut(id, o)
	}
}

// Cut drops every message between a and b, both ways, until Heal.
func (n *MemNetwork) Cut(a, b uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut[[2]uint64{a, b}], n.cut[[2]uint64{b, a}] = true, true
}

// Heal restores every link.
func (n *MemNetwork) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cut)
}

// Close stops the links' goroutines; later sends are dropped. Closing
// again does nothing.
func (n *MemNetwork) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	for _, l := range n.links {
		close(l.queue)
	}
	n.mu.Unlock()
	n.wg.Wait()
}

func (n *MemNetwork) send(from, to uint64, msgs []Envelope) {
	n.mu.Lock()
	defer n.mu.Unlock()
	key := [2]uint64{from, to}
	if n.closed || n.cut[key] {
		return
	}
	l := n.links[key]
	if l == nil {
		l = &memLink{queue: make(chan []Envelope, 1024)}
		n.links[key] = l
		n.wg.Go(func() { n.deliver(key, l) })
	}
	select {
	case l.queue <- copyEnvelopes(msgs):
	default: // a full link drops, as a congested network would
	}
}

func (n *MemNetwork) deliver(key [2]uint64, l *memLink) {
	for msgs := range l.queue {
		n.mu.Lock()
		e, cut := n.engines[key[1]], n.cut[key]
		n.mu.Unlock()
		if e != nil && !cut {
			e.Deliver(msgs)
		}
	}
}

// copyEnvelopes round-trips msgs through their wire encoding, so that the
// receiver shares no memory with the sender.
func copyEnvelopes(msgs []Envelope) []Envelope {
	out := make([]Envelope, len(msgs))
	for i, m := range msgs {
		b, err := m.Msg.Marshal()
		if err != nil {
			panic(err)
		}
		var c raftpb.Message
		if err := c.Unmarshal(b); err != nil {
			panic(err)
		}
		out[i] = Envelope{Group: m.Group, Msg: c}
	}
	return out
}

type memTransport struct {
	n    *MemNetwork
	from uint64
}

func (t memTransport) Send(to uint64, msgs []Envelope) { t.n.send(t.from, to, msgs) }

var _ Transport = memTransport{}
