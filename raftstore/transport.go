package raftstore

import (
	"context"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/roostdb/roost/proto"
)

const (
	// DefaultTransportTimeout is TransportConfig.Timeout's default.
	DefaultTransportTimeout = 5 * time.Second

	// MaxRaftMessageSize is the largest raft message the transport
	// exchanges: an AppendEntries carries up to MaxAppendEntries entries of
	// up to MaxEntryBytes, far more than gRPC's 4 MiB default. The node's
	// gRPC server must accept it: see TransportServerOptions.
	MaxRaftMessageSize = 1 << 30

	// snapshotChunkSize is the size of the data messages of InstallSnapshot.
	snapshotChunkSize = 256 << 10
	// pipelineMaxInFlight is how many pipelined AppendEntries may await
	// their responses at once. hashicorp/raft's NetworkTransport defaults to
	// 2, having measured that deeper pipelines combine badly with batching.
	pipelineMaxInFlight = 2
	// HTTP/2 flow-control windows. Setting them turns off gRPC's
	// bandwidth-delay estimator, which pings for every data frame received
	// and so roughly doubled the packets of an idle node's heartbeats.
	streamWindow = 4 << 20
	connWindow   = 16 << 20
	// fromMetadataKey carries the caller's advertised address with every
	// call, so that a server can apply Faults to what it receives.
	fromMetadataKey = "roost-raft-from"
)

// TransportServerOptions are the grpc.ServerOptions the node's gRPC server
// needs for the raft transport: a receive limit of MaxRaftMessageSize and
// fixed flow-control windows (which the clients use too).
func TransportServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxRaftMessageSize),
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
	}
}

// TransportConfig configures a node's Transport.
type TransportConfig struct {
	// LocalAddr is this node's advertised gRPC address: what peers dial and
	// what raft records as this node's address in every group.
	LocalAddr raft.ServerAddress
	// DialOptions are added to every connection to a peer, after the
	// transport's own (insecure credentials, reconnect backoff), so
	// transport credentials given here replace the insecure default.
	DialOptions []grpc.DialOption
	// Faults, if set, injects partitions, drops and delays. For tests.
	Faults *Faults
	// Timeout bounds each unary RPC, heartbeat batch and pipelined
	// AppendEntries response; 0 means DefaultTransportTimeout.
	// InstallSnapshot gets at least 10× as long, more for big snapshots
	// (see snapshotTimeout).
	Timeout time.Duration
	// PeerLost, if set, is called (on its own goroutine) with the address of
	// a peer whose stream of heartbeats to this node broke (its process
	// most likely died: why is ErrPeerStreamBroke) or stayed silent for
	// SilenceTimeout (it hangs or is cut off: ErrPeerSilent): the groups it
	// led may need an election (liveness.go). It may be called again for
	// the same loss.
	PeerLost func(addr raft.ServerAddress, why error)
	// LivenessInterval is how often a node sends a peer it heartbeats an
	// empty batch when no heartbeat is due, so that the peer can tell it is
	// alive however rarely its groups heartbeat (node liveness,
	// transport_heartbeat.go); 0 means DefaultLivenessInterval, a negative
	// value sends none.
	LivenessInterval time.Duration
	// SilenceTimeout is how long a peer's open heartbeat stream may carry
	// nothing before PeerLost is called; 0 means DefaultSilenceTimeout, a
	// negative value never calls it for silence (only for broken streams).
	SilenceTimeout time.Duration
	// HeartbeatWindow is the least time between two batches of heartbeats
	// to one peer, so the longest a heartbeat waits for other groups' to go
	// with it (transport_heartbeat.go); leadership checks do not wait. 0
	// means DefaultHeartbeatWindow, a negative value sends each at once.
	HeartbeatWindow time.Duration
	// NoPipelines refuses raft's pipelined AppendEntries, so that it sends
	// one at a time. For tests that change a member's address:
	// hashicorp/raft v1.8.0 logs a failed pipelined send with a read of the
	// peer that the address change writes, without the lock that guards it
	// (hashicorp/raft#681, fixed upstream in #682, unreleased), and the race
	// detector reports the library's race.
	NoPipelines bool
}

// Transport is a node's raft transport: one gRPC service, one connection
// per peer, shared by every raft group of the node (DESIGN.md §7: a
// transport per group costs ~50 MB of buffers at 64 groups). Group returns
// the raft.Transport of one group; requests carry the group's ID and the
// receiving node routes them to that group's view.
type Transport struct {
	local   raft.ServerAddress
	timeout time.Duration
	window  atomic.Int64 // HeartbeatWindow in nanoseconds; tests change it
	faults  *Faults
	dial    []grpc.DialOption
	lost    func(raft.ServerAddress, error) // PeerLost
	// lastLoss is when some peer was last reported lost (unix
	// nanoseconds), so that LostWithin answers most calls with no lookup.
	lastLoss atomic.Int64
	ping     time.Duration // LivenessInterval, 0 when off
	pingFor  time.Duration // defaultPingFor; tests shorten it
	silence  time.Duration // SilenceTimeout, 0 when off
	noPipes  bool          // NoPipelines
	// callCtx carries this node's address in the outgoing metadata; every
	// call derives its context from it.
	callCtx context.Context
	// declining is set by DeclineLeadership: TimeoutNow is refused.
	declining atomic.Bool

	// runCtx bounds the heartbeat batchers' goroutines, counted in wg;
	// Close cancels it.
	runCtx  context.Context
	stopRun context.CancelFunc
	wg      sync.WaitGroup

	livenessMu sync.RWMutex
	liveness   map[raft.ServerAddress]*peerLiveness // what the server saw of each peer

	mu       sync.RWMutex // guards closed, conns, batchers and writes to groups
	closed   bool
	conns    map[raft.ServerAddress]*peerConn
	batchers map[raft.ServerAddress]*heartbeatBatcher
	// groups is copied on write (registrations are rare) so the server's
	// lookup on every RPC takes no lock.
	groups atomic.Pointer[map[GroupID]*groupTransport]
}

type peerConn struct {
	cc     *grpc.ClientConn
	client pb.RaftTransportClient
}

// NewTransport returns the node's transport. Register serves it on the
// node's gRPC server; connections to peers are made on first use.
func NewTransport(cfg TransportConfig) *Transport {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTransportTimeout
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	orDefault := func(d, def time.Duration) time.Duration {
		if d == 0 {
			return def
		}
		return max(d, 0)
	}
	t := &Transport{
		ping:     orDefault(cfg.LivenessInterval, DefaultLivenessInterval),
		pingFor:  defaultPingFor,
		silence:  orDefault(cfg.SilenceTimeout, DefaultSilenceTimeout),
		liveness: make(map[raft.ServerAddress]*peerLiveness),
		local:    cfg.LocalAddr,
		timeout:  timeout,
		faults:   cfg.Faults,
		dial:     cfg.DialOptions,
		lost:     cfg.PeerLost,
		noPipes:  cfg.NoPipelines,
		callCtx:  metadata.NewOutgoingContext(context.Background(), metadata.Pairs(fromMetadataKey, string(cfg.LocalAddr))),
		runCtx:   runCtx,
		stopRun:  stopRun,
		conns:    make(map[raft.ServerAddress]*peerConn),
		batchers: make(map[raft.ServerAddress]*heartbeatBatcher),
	}
	t.groups.Store(&map[GroupID]*groupTransport{})
	t.window.Store(int64(orDefault(cfg.HeartbeatWindow, DefaultHeartbeatWindow)))
	return t
}

// LocalAddr is this node's advertised address.
// PeerConnectParams is how a node dials its peers: gRPC's default backoff
// grows to 120 s, which would keep a restarted peer out of its groups, and
// out of the requests forwarded to it, for minutes. A dial twice a second
// to a dead peer costs nothing.
func PeerConnectParams(minConnectTimeout time.Duration) grpc.ConnectParams {
	return grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
		MinConnectTimeout: minConnectTimeout,
	}
}

func (t *Transport) LocalAddr() raft.ServerAddress { return t.local }

// Register serves the RaftTransport service on s, the node's gRPC server
// (which should be built with TransportServerOptions).
func (t *Transport) Register(s *grpc.Server) {
	pb.RegisterRaftTransportServer(s, &transportServer{t: t})
}

// Group returns group g's view of the transport, to pass as
// GroupConfig.Transport. It registers the view so that the node receives
// g's RPCs; until then (and once the view is closed) requests for g are
// answered with codes.NotFound. While a view of g is open Group returns
// it; raft closes the view when the group shuts down (the view implements
// raft.WithClose), which unregisters it, and a later Group(g) makes a new
// one. After Transport.Close it returns a closed view.
func (t *Transport) Group(g GroupID) raft.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	groups := *t.groups.Load()
	if v := groups[g]; v != nil {
		return v
	}
	v := &groupTransport{
		t:          t,
		id:         g,
		consumeCh:  make(chan raft.RPC),
		shutdownCh: make(chan struct{}),
		pipelines:  make(map[*pipeline]struct{}),
	}
	v.waiting, v.stopWaiting = context.WithCancel(context.Background())
	if t.closed {
		v.close()
		return v
	}
	next := make(map[GroupID]*groupTransport, len(groups)+1)
	for id, gv := range groups {
		next[id] = gv
	}
	next[g] = v
	t.groups.Store(&next)
	return v
}

// lookup returns the open view of group g, or nil.
func (t *Transport) lookup(g GroupID) *groupTransport {
	return (*t.groups.Load())[g]
}

// unregister removes v if it is still g's registered view.
func (t *Transport) unregister(v *groupTransport) {
	t.mu.Lock()
	defer t.mu.Unlock()
	groups := *t.groups.Load()
	if groups[v.id] != v {
		return
	}
	next := make(map[GroupID]*groupTransport, len(groups))
	for id, gv := range groups {
		if gv != v {
			next[id] = gv
		}
	}
	t.groups.Store(&next)
}

// Close closes every group view (their RPCs then fail, incoming ones with
// codes.NotFound) and every peer connection. Shut the groups down first.
// It does not stop the gRPC server. It is idempotent.
// DeclineLeadership makes this node refuse leadership transfers to it
// from now on (raft's TimeoutNow fails, so the leader that asked keeps its
// leadership): a node about to stop calls it, since a leadership it won
// would last only until its groups shut down. Elections are not affected.
func (t *Transport) DeclineLeadership() { t.declining.Store(true) }

func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	conns := t.conns
	t.conns = nil
	groups := *t.groups.Load()
	t.groups.Store(&map[GroupID]*groupTransport{})
	t.mu.Unlock()

	for _, v := range groups {
		v.close()
	}
	t.stopRun()
	t.wg.Wait()
	var first error
	for _, pc := range conns {
		if err := pc.cc.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// peer returns the client of target, making its connection on first use.
func (t *Transport) peer(target raft.ServerAddress) (pb.RaftTransportClient, error) {
	t.mu.RLock()
	pc, closed := t.conns[target], t.closed
	t.mu.RUnlock()
	if pc != nil {
		return pc.client, nil
	}
	if closed {
		return nil, raft.ErrTransportShutdown
	}
	if target == "" {
		return nil, fmt.Errorf("raftstore: transport: empty peer address")
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, raft.ErrTransportShutdown
	}
	if pc := t.conns[target]; pc != nil {
		return pc.client, nil
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Heartbeats and appends wait for the connection (WaitForReady),
		// so the backoff is how long after a restart they reach the peer.
		grpc.WithConnectParams(PeerConnectParams(t.timeout)),
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
	}
	opts = append(opts, t.faults.DialOptions(t.local, target)...)
	opts = append(opts, t.dial...)
	cc, err := grpc.NewClient(string(target), opts...)
	if err != nil {
		return nil, fmt.Errorf("raftstore: transport: connecting to %s: %w", target, err)
	}
	pc = &peerConn{cc: cc, client: pb.NewRaftTransportClient(cc)}
	t.conns[target] = pc
	return pc.client, nil
}

// snapshotTimeout bounds a whole InstallSnapshot, which includes the
// follower restoring it: at least 10× Timeout, plus Timeout per 4 MiB.
func (t *Transport) snapshotTimeout(size int64) time.Duration {
	const per = 4 << 20
	n := 10 + max(size, 0)/per
	if n > math.MaxInt64/int64(t.timeout) { // a size no snapshot has
		return math.MaxInt64
	}
	return t.timeout * time.Duration(n)
}

// appendTimeout bounds an AppendEntries: Timeout, plus Timeout per 8 MiB
// of entries. A follower catching up is sent up to MaxAppendEntries
// entries at once, hundreds of MiB when they are large, which it must
// write and sync before it answers. Under the bare Timeout such a call
// timed out after the follower had stored it; raft then retried from the
// same previous entry, which a follower that had just installed a
// snapshot no longer has in its log (hashicorp/raft looks for it there,
// not in the snapshot), so the leader stepped back to a trimmed index,
// sent the snapshot again, and went round for good (found by QA: 90
// entries of 5 MiB after a snapshot, gigabytes of memory on both nodes).
func (t *Transport) appendTimeout(args *raft.AppendEntriesRequest) time.Duration {
	const per = 8 << 20
	bytes := 0
	for _, e := range args.Entries {
		bytes += entrySize(e)
	}
	return t.timeout * time.Duration(1+bytes/per)
}

// groupTransport is one group's view of the Transport: a raft.Transport
// (with raft.WithClose, raft.WithPreVote and raft.WithPeers).
type groupTransport struct {
	t  *Transport
	id GroupID

	consumeCh   chan raft.RPC
	heartbeatFn atomic.Pointer[func(raft.RPC)]

	closeOnce  sync.Once
	shutdownCh chan struct{}

	mu        sync.Mutex
	pipelines map[*pipeline]struct{} // nil once closed

	// verifying counts leadership checks under way (beginVerify).
	verifying atomic.Int32
	// steppingDown: a barrier to make the leader see a newer term is
	// under way (heardNewerTerm).
	steppingDown atomic.Bool
	// newerTerm is the highest term a follower has answered this
	// replica's heartbeats with that was newer than the replica's own
	// (heardNewerTerm); 0 if none.
	newerTerm atomic.Uint64

	raft atomic.Pointer[raft.Raft] // the group's raft once started (attach)
	// heartbeatTimeout is the group's raft HeartbeatTimeout (attach): its
	// leader heartbeats each follower at least every fifth of it.
	heartbeatTimeout atomic.Int64

	// waiting ends the calls that wait for a peer's connection
	// (WaitForReady) when the group shuts down: raft waits for its
	// replication goroutines before it closes the transport, and they
	// would otherwise sit out the transport timeout.
	waiting     context.Context
	stopWaiting context.CancelFunc

	// Counters of what the server handed to this group, for tests.
	received      atomic.Uint64 // RPCs, heartbeats and pipelined appends included
	snapshotBytes atomic.Uint64 // InstallSnapshot data bytes
}

var (
	_ raft.Transport   = (*groupTransport)(nil)
	_ raft.WithClose   = (*groupTransport)(nil)
	_ raft.WithPreVote = (*groupTransport)(nil)
	_ raft.WithPeers   = (*groupTransport)(nil)
)

// Consumer implements raft.Transport.
func (v *groupTransport) Consumer() <-chan raft.RPC { return v.consumeCh }

// LocalAddr implements raft.Transport.
func (v *groupTransport) LocalAddr() raft.ServerAddress { return v.t.local }

// EncodePeer implements raft.Transport.
func (v *groupTransport) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte {
	return []byte(addr)
}

// DecodePeer implements raft.Transport.
func (v *groupTransport) DecodePeer(b []byte) raft.ServerAddress { return raft.ServerAddress(b) }

// SetHeartbeatHandler implements raft.Transport: heartbeats (AppendEntries
// without entries or log position) are handed to cb on the gRPC handler's
// goroutine instead of waiting behind the group's disk I/O in Consumer.
func (v *groupTransport) SetHeartbeatHandler(cb func(raft.RPC)) {
	if cb == nil {
		v.heartbeatFn.Store(nil)
		return
	}
	v.heartbeatFn.Store(&cb)
}

// Close implements raft.WithClose: it unregisters the view (the node then
// answers the group's RPCs with codes.NotFound) and closes its pipelines.
func (v *groupTransport) Close() error {
	v.t.unregister(v)
	v.close()
	return nil
}

func (v *groupTransport) close() {
	v.stopWaiting()
	v.closeOnce.Do(func() { close(v.shutdownCh) })
	v.mu.Lock()
	ps := v.pipelines
	v.pipelines = nil
	v.mu.Unlock()
	for p := range ps {
		_ = p.Close()
	}
}

func (v *groupTransport) isClosed() bool {
	select {
	case <-v.shutdownCh:
		return true
	default:
		return false
	}
}

// Connect implements raft.WithPeers: it starts connecting to peer (the
// raft.Transport argument is ignored).
func (v *groupTransport) Connect(peer raft.ServerAddress, _ raft.Transport) {
	if _, err := v.t.peer(peer); err == nil {
		v.t.mu.RLock()
		if pc := v.t.conns[peer]; pc != nil {
			pc.cc.Connect()
		}
		v.t.mu.RUnlock()
	}
}

// Disconnect implements raft.WithPeers: it closes the group's pipelines
// to peer. The connection and the heartbeat stream, shared with the
// node's other groups, stay.
func (v *groupTransport) Disconnect(peer raft.ServerAddress) {
	v.closeStreams(func(addr raft.ServerAddress) bool { return addr == peer })
}

// DisconnectAll implements raft.WithPeers: it closes the group's pipelines.
func (v *groupTransport) DisconnectAll() {
	v.closeStreams(func(raft.ServerAddress) bool { return true })
}

func (v *groupTransport) closeStreams(match func(raft.ServerAddress) bool) {
	v.mu.Lock()
	var ps []*pipeline
	for p := range v.pipelines {
		if match(p.target) {
			ps = append(ps, p)
		}
	}
	v.mu.Unlock()
	for _, p := range ps {
		_ = p.Close()
	}
}

// client returns target's client and a context for one unary call.
func (v *groupTransport) client(target raft.ServerAddress, timeout time.Duration) (pb.RaftTransportClient, context.Context, context.CancelFunc, error) {
	if v.isClosed() {
		return nil, nil, nil, raft.ErrTransportShutdown
	}
	c, err := v.t.peer(target)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(v.t.callCtx, timeout)
	stop := context.AfterFunc(v.waiting, cancel)
	return c, ctx, func() { stop(); cancel() }, nil
}

// openStream opens a stream to target with open (a method expression of
// the client, such as pb.RaftTransportClient.Heartbeats). A peer whose
// connection is down (it is restarting) is waited for, up to the
// transport timeout, rather than failed at once, as appends and heartbeats
// are. The stream lasts until the returned cancel is called, the transport
// closes or until ends.
func openStream[S any](t *Transport, target raft.ServerAddress, until context.Context, what string,
	open func(pb.RaftTransportClient, context.Context, ...grpc.CallOption) (S, error)) (S, func(), error) {
	var zero S
	c, err := t.peer(target)
	if err != nil {
		return zero, nil, err
	}
	ctx, cancelCtx := context.WithCancel(t.callCtx)
	stop := context.AfterFunc(until, cancelCtx)
	cancel := func() { stop(); cancelCtx() }
	opening := time.AfterFunc(t.timeout, cancelCtx)
	stream, err := open(c, ctx, grpc.WaitForReady(true))
	if !opening.Stop() && err == nil {
		err = status.Errorf(codes.DeadlineExceeded, "raftstore: %s to %s: no connection within %v", what, target, t.timeout)
	}
	if err != nil {
		cancel()
		return zero, nil, err
	}
	return stream, cancel, nil
}

// AppendEntries implements raft.Transport. Heartbeats go with other
// groups' (transport_heartbeat.go).
func (v *groupTransport) AppendEntries(_ raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if isHeartbeat(args) {
		return v.heartbeat(target, args, resp)
	}
	c, ctx, cancel, err := v.client(target, v.t.appendTimeout(args))
	if err != nil {
		return err
	}
	defer cancel()
	v.t.leads(target)
	// Like heartbeats (batchStream.exchange), an append to a peer whose
	// connection is down waits for it, up to the timeout, instead of
	// failing at once: each failure lengthens raft's backoff before the
	// next try (up to about 10 s), which a restarted follower would wait
	// out before its leader sends it anything — the meta group's map
	// included.
	out, err := c.AppendEntries(ctx, appendEntriesRequestToProto(v.id, args), grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	appendEntriesResponseFromProto(out, resp)
	return nil
}

// RequestVote implements raft.Transport.
func (v *groupTransport) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	c, ctx, cancel, err := v.client(target, v.t.timeout)
	if err != nil {
		return err
	}
	defer cancel()
	out, err := c.RequestVote(ctx, &pb.RaftRequestVoteRequest{
		GroupId:            uint64(v.id),
		Header:             headerToProto(args.RPCHeader),
		Term:               args.Term,
		Candidate:          args.Candidate,
		LastLogIndex:       args.LastLogIndex,
		LastLogTerm:        args.LastLogTerm,
		LeadershipTransfer: args.LeadershipTransfer,
	})
	if err != nil {
		return err
	}
	*resp = raft.RequestVoteResponse{
		RPCHeader: headerFromProto(out.Header),
		Term:      out.Term,
		Peers:     out.Peers,
		Granted:   out.Granted,
	}
	return nil
}

// RequestPreVote implements raft.WithPreVote.
func (v *groupTransport) RequestPreVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	c, ctx, cancel, err := v.client(target, v.t.timeout)
	if err != nil {
		return err
	}
	defer cancel()
	out, err := c.RequestPreVote(ctx, &pb.RaftRequestPreVoteRequest{
		GroupId:      uint64(v.id),
		Header:       headerToProto(args.RPCHeader),
		Term:         args.Term,
		LastLogIndex: args.LastLogIndex,
		LastLogTerm:  args.LastLogTerm,
	})
	if err != nil {
		return err
	}
	*resp = raft.RequestPreVoteResponse{
		RPCHeader: headerFromProto(out.Header),
		Term:      out.Term,
		Granted:   out.Granted,
	}
	return nil
}

// TimeoutNow implements raft.Transport.
func (v *groupTransport) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	c, ctx, cancel, err := v.client(target, v.t.timeout)
	if err != nil {
		return err
	}
	defer cancel()
	out, err := c.TimeoutNow(ctx, &pb.RaftTimeoutNowRequest{GroupId: uint64(v.id), Header: headerToProto(args.RPCHeader)})
	if err != nil {
		return err
	}
	*resp = raft.TimeoutNowResponse{RPCHeader: headerFromProto(out.Header)}
	return nil
}

// InstallSnapshot implements raft.Transport: the request, then data in
// snapshotChunkSize messages.
func (v *groupTransport) InstallSnapshot(_ raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	c, ctx, cancel, err := v.client(target, v.t.snapshotTimeout(args.Size))
	if err != nil {
		return err
	}
	defer cancel()
	stream, err := c.InstallSnapshot(ctx)
	if err != nil {
		return err
	}
	first := &pb.RaftInstallSnapshotChunk{Msg: &pb.RaftInstallSnapshotChunk_Request{Request: &pb.RaftInstallSnapshotRequest{
		GroupId:            uint64(v.id),
		Header:             headerToProto(args.RPCHeader),
		SnapshotVersion:    int64(args.SnapshotVersion),
		Term:               args.Term,
		Leader:             args.Leader,
		LastLogIndex:       args.LastLogIndex,
		LastLogTerm:        args.LastLogTerm,
		Peers:              args.Peers,
		Configuration:      args.Configuration,
		ConfigurationIndex: args.ConfigurationIndex,
		Size:               args.Size,
	}}}
	sendErr := stream.Send(first)
	for sendErr == nil {
		// A fresh buffer per message: gRPC may keep a sent message.
		buf := make([]byte, snapshotChunkSize)
		n, rerr := io.ReadFull(data, buf)
		if n > 0 {
			sendErr = stream.Send(&pb.RaftInstallSnapshotChunk{Msg: &pb.RaftInstallSnapshotChunk_Data{Data: buf[:n]}})
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("raftstore: reading snapshot for %s: %w", target, rerr)
		}
	}
	// io.EOF from Send means the server ended the stream: its status
	// comes from CloseAndRecv.
	if sendErr != nil && sendErr != io.EOF {
		return sendErr
	}
	out, err := stream.CloseAndRecv()
	if err != nil {
		return err
	}
	*resp = raft.InstallSnapshotResponse{
		RPCHeader: headerFromProto(out.Header),
		Term:      out.Term,
		Success:   out.Success,
	}
	return nil
}
