package raftstore

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Faults is a kill switch for the raft transport, for tests only: it cuts,
// drops and delays raft messages between nodes, identified by their
// advertised addresses (TransportConfig.LocalAddr). Pass one Faults to the
// Transport of every node of an in-process cluster, dial the node's
// other gRPC clients with DialOptions, and judge its gossip with Drops, so
// that a partition cuts forwarded requests and gossip as a real one would.
//
// Closing hashicorp/raft's NetworkTransport does not cut a leader off
// (pooled connections keep heartbeating; DESIGN.md §7), so fault tests need
// a switch that acts on every message: Faults is checked in client-side
// interceptors on every unary call and on every message of a stream (an
// established AppendEntries pipeline is cut as soon as a partition starts)
// and by the server, which applies partitions to what it receives using
// the caller's address from the gRPC metadata. A cut or dropped message
// fails with codes.Unavailable at once rather than timing out. Drop and
// delay are applied on the sending side only.
//
// The zero value and a nil *Faults inject nothing. Methods are safe for
// concurrent use.
type Faults struct {
	mu       sync.RWMutex
	cutPairs map[[2]raft.ServerAddress]bool // both orders are stored
	isolated map[raft.ServerAddress]bool
	// muted: calls these nodes make are cut, the ones they answer are not
	// (IsolateAfterTimeoutNow).
	muted map[raft.ServerAddress]bool
	// frozen: messages to and from these nodes wait until thaw is closed
	// (Heal) or their context ends (Freeze).
	frozen map[raft.ServerAddress]bool
	thaw   chan struct{}
	drop   float64
	delay  time.Duration
	// unreachable: calls other nodes make to these fail; the calls they
	// make, and the answers, pass (CutInbound).
	unreachable map[raft.ServerAddress]bool
	// aliases maps a node's other addresses (its gossip address) to the
	// one its faults are keyed by; Heal keeps them.
	aliases map[raft.ServerAddress]raft.ServerAddress
}

// Partition cuts a and b off from each other, in both directions.
func (f *Faults) Partition(a, b raft.ServerAddress) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cutPairs == nil {
		f.cutPairs = make(map[[2]raft.ServerAddress]bool)
	}
	f.cutPairs[[2]raft.ServerAddress{a, b}] = true
	f.cutPairs[[2]raft.ServerAddress{b, a}] = true
}

// Isolate cuts addr off from every other node.
func (f *Faults) Isolate(addr raft.ServerAddress) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.isolated == nil {
		f.isolated = make(map[raft.ServerAddress]bool)
	}
	f.isolated[addr] = true
}

// IsolateAfterTimeoutNow cuts addr off from every other node the moment
// it has accepted a TimeoutNow, the request that starts a leadership
// transfer's election: the leader that sent it sees its transfer begin, and
// the target's election reaches no one, as if the target had lost the
// network right after accepting. Until then the calls addr makes are cut
// (so that no vote request of its election gets out first); the calls it
// answers are not.
func (f *Faults) IsolateAfterTimeoutNow(addr raft.ServerAddress) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.muted == nil {
		f.muted = make(map[raft.ServerAddress]bool)
	}
	f.muted[addr] = true
}

// CutInbound makes addr unreachable to the other nodes while it still
// reaches them, as a firewall that drops the connections others open to
// it but not the ones it opens would: calls to addr fail, the calls addr
// makes and their answers pass, and gossip to and from it is lost (such
// a firewall drops the datagrams of its gossip port both ways).
func (f *Faults) CutInbound(addr raft.ServerAddress) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unreachable == nil {
		f.unreachable = make(map[raft.ServerAddress]bool)
	}
	f.unreachable[addr] = true
}

// Freeze holds every message to or from addr, as a paused process
// (SIGSTOP, docker pause) would: none fails, none arrives, each waits
// until Heal or until its sender gives up (its context ends). Connections
// stay up, so only timeouts and liveness checks notice.
func (f *Faults) Freeze(addr raft.ServerAddress) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen == nil {
		f.frozen = make(map[raft.ServerAddress]bool)
		f.thaw = make(chan struct{})
	}
	f.frozen[addr] = true
}

// Alias makes alias, another address of the node at addr (its gossip
// address), share that node's faults, for Drops.
func (f *Faults) Alias(alias, addr raft.ServerAddress) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.aliases == nil {
		f.aliases = make(map[raft.ServerAddress]raft.ServerAddress)
	}
	f.aliases[alias] = addr
}

// Drops reports whether a message from one node to another, sent other
// than through a gRPC client Faults is in (gossip, by either node's
// address or an Alias of it), is lost now: the two are cut off from each
// other, or either is frozen (such a message cannot be held, so it is
// lost, as a datagram to a paused process would be) or cut off inbound
// (CutInbound). Random drops and
// delays do not apply. A nil f drops nothing.
func (f *Faults) Drops(from, to raft.ServerAddress) bool {
	if f == nil {
		return false
	}
	f.mu.RLock()
	if a, ok := f.aliases[from]; ok {
		from = a
	}
	if a, ok := f.aliases[to]; ok {
		to = a
	}
	lost := f.frozen[from] || f.frozen[to] || f.unreachable[from] || f.unreachable[to]
	f.mu.RUnlock()
	return lost || f.cut(from, to) != nil
}

// Heal removes every fault: partitions, isolations, inbound cuts, freezes,
// drops and delays (not the aliases).
func (f *Faults) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.thaw != nil {
		close(f.thaw)
	}
	f.cutPairs, f.isolated, f.muted, f.unreachable, f.frozen, f.thaw, f.drop, f.delay = nil, nil, nil, nil, nil, nil, 0, 0
}

// callCut is cut for a call or stream message from one node to another:
// a muted node's calls are cut too.
func (f *Faults) callCut(from, to raft.ServerAddress) error {
	if err := f.cut(from, to); err != nil {
		return err
	}
	f.mu.RLock()
	muted, unreachable := f.muted[from], f.unreachable[to]
	f.mu.RUnlock()
	if unreachable {
		return status.Errorf(codes.Unavailable, "raftstore faults: %s -> %s is cut (calls to %s)", from, to, to)
	}
	if muted {
		return status.Errorf(codes.Unavailable, "raftstore faults: %s -> %s is cut (calls from %s)", from, to, from)
	}
	return nil
}

// acceptedTimeoutNow isolates to if it is muted (IsolateAfterTimeoutNow):
// a TimeoutNow call to it has just succeeded.
func (f *Faults) acceptedTimeoutNow(to raft.ServerAddress) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.muted[to] {
		return
	}
	delete(f.muted, to)
	if f.isolated == nil {
		f.isolated = make(map[raft.ServerAddress]bool)
	}
	f.isolated[to] = true
}

// SetDrop makes each message fail with probability p (0 turns it off).
func (f *Faults) SetDrop(p float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drop = p
}

// SetDelay delays each message by d before it is sent (0 turns it off).
func (f *Faults) SetDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

// cut reports, as a codes.Unavailable status, whether messages from one
// node to another are cut off.
func (f *Faults) cut(from, to raft.ServerAddress) error {
	if f == nil {
		return nil
	}
	f.mu.RLock()
	blocked := f.isolated[from] || f.isolated[to] || f.cutPairs[[2]raft.ServerAddress{from, to}]
	f.mu.RUnlock()
	if blocked {
		return status.Errorf(codes.Unavailable, "raftstore faults: %s -> %s is cut", from, to)
	}
	return nil
}

// send applies every fault to a message about to go from one node to
// another: the cut, a random drop, then the delay.
func (f *Faults) send(ctx context.Context, from, to raft.ServerAddress) error {
	if f == nil {
		return nil
	}
	if err := f.callCut(from, to); err != nil {
		return err
	}
	if err := f.hold(ctx, from, to); err != nil {
		return err
	}
	f.mu.RLock()
	drop, delay := f.drop, f.delay
	f.mu.RUnlock()
	if drop > 0 && rand.Float64() < drop {
		return status.Errorf(codes.Unavailable, "raftstore faults: message %s -> %s dropped", from, to)
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		// The cut may have started while the message was held back.
		return f.callCut(from, to)
	}
	return nil
}

// hold waits while from or to is frozen (Freeze).
func (f *Faults) hold(ctx context.Context, from, to raft.ServerAddress) error {
	f.mu.RLock()
	frozen, thaw := f.frozen[from] || f.frozen[to], f.thaw
	f.mu.RUnlock()
	if !frozen {
		return nil
	}
	select {
	case <-thaw:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// DialOptions are the gRPC dial options that apply f to every call and
// stream a client at from makes to to. The node's other gRPC clients (its
// forwarder, GroupStatus) dial with them too, so a partition cuts all of
// a node's traffic, not only Raft's. A nil f gives none.
func (f *Faults) DialOptions(from, to raft.ServerAddress) []grpc.DialOption {
	if f == nil {
		return nil
	}
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(f.unaryInterceptor(from, to)),
		grpc.WithChainStreamInterceptor(f.streamInterceptor(from, to)),
	}
}

func (f *Faults) unaryInterceptor(from, to raft.ServerAddress) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if err := f.send(ctx, from, to); err != nil {
			return err
		}
		if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
			return err
		}
		// A response that arrives across a cut is lost too.
		if err := f.answerCut(from, to); err != nil {
			return err
		}
		if strings.HasSuffix(method, "/TimeoutNow") {
			f.acceptedTimeoutNow(to)
		}
		return nil
	}
}

func (f *Faults) streamInterceptor(from, to raft.ServerAddress) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if err := f.callCut(from, to); err != nil {
			return nil, err
		}
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &faultyStream{ClientStream: s, f: f, from: from, to: to}, nil
	}
}

// faultyStream applies Faults to every message of a client stream.
type faultyStream struct {
	grpc.ClientStream
	f        *Faults
	from, to raft.ServerAddress
}

func (s *faultyStream) SendMsg(m any) error {
	if err := s.f.send(s.Context(), s.from, s.to); err != nil {
		return err
	}
	return s.ClientStream.SendMsg(m)
}

func (s *faultyStream) RecvMsg(m any) error {
	if err := s.ClientStream.RecvMsg(m); err != nil {
		return err
	}
	if err := s.f.hold(s.Context(), s.to, s.from); err != nil {
		return err
	}
	return s.f.answerCut(s.from, s.to)
}

// answerCut is cut for an answer, on a call or stream that from made to
// to: an unreachable node's answers to calls made to it are lost too
// (CutInbound).
func (f *Faults) answerCut(from, to raft.ServerAddress) error {
	if err := f.cut(to, from); err != nil {
		return err
	}
	f.mu.RLock()
	unreachable := f.unreachable[to]
	f.mu.RUnlock()
	if unreachable {
		return status.Errorf(codes.Unavailable, "raftstore faults: %s -> %s is cut (answers of %s)", to, from, to)
	}
	return nil
}
