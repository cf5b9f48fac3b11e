package multiraft

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/roostdb/roost/proto"
)

// GRPCConfig configures a GRPCTransport. Start from DefaultGRPCConfig.
type GRPCConfig struct {
	// NodeID is this node's raft id, sent with every frame.
	NodeID uint64
	// Resolve returns the gRPC address of node id, or false if it is not
	// known (what is sent to it is then dropped).
	Resolve func(id uint64) (addr string, ok bool)
	// DialOptions are used for every connection to a peer (credentials
	// among them).
	DialOptions []grpc.DialOption
	// MaxFrameBytes: a peer's waiting messages are sent in frames of about
	// this size (a single larger message goes alone). It must stay below
	// the receivers' gRPC receive limit.
	MaxFrameBytes int
	// MaxQueueBytes bounds what waits for one peer; beyond it new messages
	// are dropped, as raft tolerates.
	MaxQueueBytes int
	// Logger receives connection failures; nil discards them.
	Logger *slog.Logger
}

// DefaultGRPCConfig returns frames of 1 MiB and queues of 64 MiB;
// NodeID and Resolve must still be set.
func DefaultGRPCConfig() GRPCConfig {
	return GRPCConfig{MaxFrameBytes: 1 << 20, MaxQueueBytes: 64 << 20}
}

// Validate reports the first thing wrong with c.
func (c GRPCConfig) Validate() error {
	switch {
	case c.NodeID == 0:
		return fmt.Errorf("%w: GRPCConfig.NodeID must be non-zero", ErrInvalidConfig)
	case c.Resolve == nil:
		return fmt.Errorf("%w: GRPCConfig.Resolve is required", ErrInvalidConfig)
	case c.MaxFrameBytes < 1:
		return fmt.Errorf("%w: GRPCConfig.MaxFrameBytes must be positive", ErrInvalidConfig)
	case c.MaxQueueBytes < c.MaxFrameBytes:
		return fmt.Errorf("%w: GRPCConfig.MaxQueueBytes must be at least MaxFrameBytes", ErrInvalidConfig)
	}
	return nil
}

// GRPCTransport carries an engine's messages over gRPC: one stream to
// each peer, opened when there is first something to send, on which a
// sender goroutine sends everything waiting for the peer as frames.
// Received frames go to the attached engine.
type GRPCTransport struct {
	pb.UnimplementedMultiRaftServer

	cfg    GRPCConfig
	logger *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	engine atomic.Pointer[Engine]

	mu    sync.Mutex
	peers map[uint64]*grpcPeer // nil once closed
}

var (
	_ Transport          = (*GRPCTransport)(nil)
	_ pb.MultiRaftServer = (*GRPCTransport)(nil)
)

// NewGRPCTransport returns a transport with no engine attached.
func NewGRPCTransport(cfg GRPCConfig) (*GRPCTransport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &GRPCTransport{cfg: cfg, logger: logger, ctx: ctx, cancel: cancel, peers: map[uint64]*grpcPeer{}}, nil
}

// Attach makes e the receiver of the messages that arrive; until then
// they are dropped.
func (t *GRPCTransport) Attach(e *Engine) { t.engine.Store(e) }

// ServerOptions are the options the gRPC server that serves the transport
// needs for engines with cfg: a receive limit that takes the largest
// message they send — an append of MaxMsgBytes of entries plus one entry
// of up to MaxEntryBytes — with room for the framing. (A snapshot goes in
// one message too, so a group's state must fit it; see docs/multiraft.md.)
func ServerOptions(cfg Config) []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(int(cfg.MaxMsgBytes) + cfg.MaxEntryBytes + 64<<10)}
}

// Register serves the MultiRaft service on s.
func (t *GRPCTransport) Register(s grpc.ServiceRegistrar) { pb.RegisterMultiRaftServer(s, t) }

// Close stops every sender and closes their connections. Later sends are
// dropped.
func (t *GRPCTransport) Close() {
	t.mu.Lock()
	peers := t.peers
	t.peers = nil
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
	for _, p := range peers {
		p.closeConn()
	}
}

// Send queues msgs for node to and wakes its sender.
func (t *GRPCTransport) Send(to uint64, msgs []Envelope) {
	t.mu.Lock()
	if t.peers == nil {
		t.mu.Unlock()
		return
	}
	p := t.peers[to]
	if p == nil {
		p = &grpcPeer{t: t, id: to, wake: make(chan struct{}, 1)}
		t.peers[to] = p
		t.wg.Go(p.run)
	}
	t.mu.Unlock()
	p.enqueue(msgs)
}

// Messages receives one peer's frames.
func (t *GRPCTransport) Messages(stream pb.MultiRaft_MessagesServer) error {
	for {
		frame, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&pb.MultiRaftDone{})
		}
		if err != nil {
			return err
		}
		msgs, err := decodeFrame(frame)
		if err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		if e := t.engine.Load(); e != nil && len(msgs) > 0 {
			e.Deliver(msgs)
		}
	}
}

// errBadFrame: a frame that does not decode, or claims another sender.
var errBadFrame = errors.New("multiraft: bad frame")

// decodeFrame returns a frame's messages.
func decodeFrame(f *pb.MultiRaftFrame) ([]Envelope, error) {
	if f.GetFrom() == 0 {
		return nil, fmt.Errorf("%w: no sender", errBadFrame)
	}
	out := make([]Envelope, len(f.GetMessages()))
	for i, env := range f.GetMessages() {
		if err := out[i].Msg.Unmarshal(env.GetMessage()); err != nil {
			return nil, fmt.Errorf("%w: message %d: %v", errBadFrame, i, err)
		}
		if out[i].Msg.From != f.GetFrom() {
			return nil, fmt.Errorf("%w: message %d is from %d in a frame from %d", errBadFrame, i, out[i].Msg.From, f.GetFrom())
		}
		out[i].Group = GroupID(env.GetGroup())
	}
	return out, nil
}

// grpcPeer is what waits for one peer, and its sender.
type grpcPeer struct {
	t    *GRPCTransport
	id   uint64
	wake chan struct{}

	mu     sync.Mutex
	queue  []Envelope
	queued int // bytes, as raft sizes them

	// Owned by run.
	addr   string
	conn   *grpc.ClientConn
	stream pb.MultiRaft_MessagesClient
}

func (p *grpcPeer) enqueue(msgs []Envelope) {
	p.mu.Lock()
	for i := range msgs {
		n := msgs[i].Msg.Size()
		if p.queued+n > p.t.cfg.MaxQueueBytes {
			break // dropped: raft sends again what is not acknowledged
		}
		p.queue = append(p.queue, msgs[i])
		p.queued += n
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// retryPause is how long a sender waits after a failed connection before
// it tries again; what is queued meanwhile is dropped.
const retryPause = 100 * time.Millisecond

func (p *grpcPeer) run() {
	ctx := p.t.ctx
	frame := &pb.MultiRaftFrame{From: p.t.cfg.NodeID}
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		}
		p.mu.Lock()
		msgs := p.queue
		p.queue, p.queued = nil, 0
		p.mu.Unlock()
		if len(msgs) == 0 {
			continue
		}
		if err := p.send(ctx, frame, msgs); err != nil {
			if ctx.Err() != nil {
				return
			}
			p.t.logger.Debug("multiraft: sending to a peer failed", "peer", p.id, "addr", p.addr, "err", err)
			p.resetStream()
			if e := p.t.engine.Load(); e != nil {
				e.ReportUnreachable(p.id)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(retryPause):
			}
		}
	}
}

// send sends msgs in frames of about MaxFrameBytes.
func (p *grpcPeer) send(ctx context.Context, frame *pb.MultiRaftFrame, msgs []Envelope) error {
	stream, err := p.open(ctx)
	if err != nil {
		return err
	}
	size := 0
	frame.Messages = frame.Messages[:0]
	flush := func() error {
		if len(frame.Messages) == 0 {
			return nil
		}
		err := stream.Send(frame)
		clear(frame.Messages)
		frame.Messages, size = frame.Messages[:0], 0
		return err
	}
	for i := range msgs {
		data, err := msgs[i].Msg.Marshal()
		if err != nil {
			return err
		}
		if size > 0 && size+len(data) > p.t.cfg.MaxFrameBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		frame.Messages = append(frame.Messages, &pb.MultiRaftEnvelope{Group: uint64(msgs[i].Group), Message: data})
		size += len(data)
	}
	return flush()
}

// open returns the stream to the peer, dialling it first if needed.
func (p *grpcPeer) open(ctx context.Context) (pb.MultiRaft_MessagesClient, error) {
	if p.stream != nil {
		return p.stream, nil
	}
	addr, ok := p.t.cfg.Resolve(p.id)
	if !ok {
		return nil, fmt.Errorf("no address for node %d", p.id)
	}
	if p.conn == nil || addr != p.addr {
		p.closeConn()
		conn, err := grpc.NewClient(addr, p.t.cfg.DialOptions...)
		if err != nil {
			return nil, err
		}
		p.conn, p.addr = conn, addr
	}
	stream, err := pb.NewMultiRaftClient(p.conn).Messages(ctx)
	if err != nil {
		return nil, err
	}
	p.stream = stream
	return stream, nil
}

func (p *grpcPeer) resetStream() {
	if p.stream != nil {
		_ = p.stream.CloseSend()
		p.stream = nil
	}
}

func (p *grpcPeer) closeConn() {
	p.resetStream()
	if p.conn != nil {
		_ = p.conn.Close()
		p.conn = nil
	}
}
