package multiraft

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"

	pb "github.com/roostdb/roost/proto"
)

// grpcNode is one engine served over real gRPC on 127.0.0.1.
type grpcNode struct {
	id        uint64
	addr      string
	db        *pebble.DB
	transport *GRPCTransport
	server    *grpc.Server
	engine    *Engine
	groups    map[GroupID]*Group
	sms       map[GroupID]*counters
}

// grpcBook is the address book the nodes resolve each other with.
type grpcBook struct {
	mu    sync.Mutex
	addrs map[uint64]string
}

func (b *grpcBook) resolve(id uint64) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	a, ok := b.addrs[id]
	return a, ok
}

func startGRPCNode(t testing.TB, id uint64, fs vfs.FS, book *grpcBook, groups ...GroupID) *grpcNode {
	t.Helper()
	db, err := pebble.Open("db", &pebble.Options{FS: fs, Logger: quietPebble{}})
	if err != nil {
		t.Fatal(err)
	}
	tcfg := DefaultGRPCConfig()
	tcfg.NodeID, tcfg.Resolve = id, book.resolve
	tcfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	tr, err := NewGRPCTransport(tcfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.NodeID, cfg.DB, cfg.Transport = id, db, tr
	// Elections after 2-4 s: the loop that encodes, writes and syncs a
	// largest entry under -race on a loaded machine (make test) can be
	// busy longer than the default 0.5-1 s (docs/multiraft.md).
	cfg.ElectionTicks = 40
	srv := grpc.NewServer(ServerOptions(cfg)...)
	tr.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr.Attach(e)
	n := &grpcNode{id: id, addr: lis.Addr().String(), db: db, transport: tr, server: srv, engine: e,
		groups: map[GroupID]*Group{}, sms: map[GroupID]*counters{}}
	book.mu.Lock()
	book.addrs[id] = n.addr
	book.mu.Unlock()
	for _, g := range groups {
		n.sms[g] = newCounters(t, db, g)
		h, err := e.StartGroup(GroupConfig{ID: g, StateMachine: n.sms[g], Voters: []uint64{1, 2, 3}})
		if err != nil {
			t.Fatal(err)
		}
		n.groups[g] = h
	}
	return n
}

func (n *grpcNode) stop(t testing.TB) {
	n.server.Stop()
	n.transport.Close()
	n.engine.Close()
	if err := n.db.Close(); err != nil {
		t.Fatal(err)
	}
}

// incrementOn increments name in group g through whichever node leads it.
func incrementOn(t testing.TB, nodes []*grpcNode, g GroupID, name string) uint64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if n == nil || n.groups[g].Status().Role != Leader {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			v, err := n.groups[g].Propose(ctx, []byte("+"+name))
			cancel()
			if err == nil {
				return v.(uint64)
			}
			if !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrLeadershipLost) {
				t.Fatalf("increment %s in group %s on node %d: %v", name, g, n.id, err)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("increment %s in group %s: no leader took it in 10 s", name, g)
	return 0
}

// leaderOf waits for a node that leads group g.
func leaderOf(t testing.TB, nodes []*grpcNode, g GroupID) *grpcNode {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, n := range nodes {
			if n != nil && n.groups[g].Status().Role == Leader {
				return n
			}
		}
	}
	t.Fatalf("group %s: no leader in 10 s", g)
	return nil
}

// Three engines over real gRPC: many groups' messages share each peer's
// stream, a node restarts on a new port and catches up.
func TestGRPCTransport(t *testing.T) {
	book := &grpcBook{addrs: map[uint64]string{}}
	groups := []GroupID{1, 2, 3, 4}
	fss := []vfs.FS{vfs.NewMem(), vfs.NewMem(), vfs.NewMem()}
	nodes := make([]*grpcNode, 3)
	for i := range nodes {
		nodes[i] = startGRPCNode(t, uint64(i+1), fss[i], book, groups...)
	}
	defer func() {
		for _, n := range nodes {
			if n != nil {
				n.stop(t)
			}
		}
	}()
	for _, g := range groups {
		for i := uint64(1); i <= 10; i++ {
			if v := incrementOn(t, nodes, g, "x"); v != i {
				t.Fatalf("group %s increment %d returned %d", g, i, v)
			}
		}
	}
	// The largest entry a proposal may make crosses the transport (the
	// servers take it: ServerOptions); committed means a follower has it.
	big := make([]byte, DefaultConfig().MaxEntryBytes)
	big[0] = '='
	var bigErr error
	for range 5 { // a leadership may still move on a loaded machine
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var v any
		v, bigErr = leaderOf(t, nodes, groups[0]).groups[groups[0]].Propose(ctx, big)
		cancel()
		if bigErr == nil {
			if v.(uint64) != uint64(len(big)) {
				t.Fatalf("a %d-byte entry applied as %v", len(big), v)
			}
			break
		}
	}
	if bigErr != nil {
		t.Fatalf("a %d-byte entry: %v", len(big), bigErr)
	}
	nodes[1].stop(t)
	nodes[1] = nil
	for _, g := range groups {
		incrementOn(t, nodes, g, "x")
	}
	nodes[1] = startGRPCNode(t, 2, fss[1], book, groups...)
	for _, g := range groups {
		want := incrementOn(t, nodes, g, "x")
		deadline := time.Now().Add(10 * time.Second)
		for nodes[1].sms[g].get("x") != want {
			if time.Now().After(deadline) {
				t.Fatalf("group %s: the restarted node has x=%d, want %d", g, nodes[1].sms[g].get("x"), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// Frames that do not decode, or that claim another sender, end their
// stream with INVALID_ARGUMENT and change nothing; raw garbage on the port
// does not stop the server.
func TestGRPCBadFrames(t *testing.T) {
	book := &grpcBook{addrs: map[uint64]string{}}
	n := startGRPCNode(t, 1, vfs.NewMem(), book, 1)
	defer n.stop(t)
	conn, err := grpc.NewClient(n.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	good, err := (&Envelope{Group: 1}).Msg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		frame *pb.MultiRaftFrame
	}{
		{"no sender", &pb.MultiRaftFrame{Messages: []*pb.MultiRaftEnvelope{{Group: 1, Message: good}}}},
		{"garbage message", &pb.MultiRaftFrame{From: 2, Messages: []*pb.MultiRaftEnvelope{{Group: 1, Message: []byte{0xff, 0xff, 0xff}}}}},
		{"message from another node", &pb.MultiRaftFrame{From: 2, Messages: []*pb.MultiRaftEnvelope{{Group: 1, Message: good}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream, err := pb.NewMultiRaftClient(conn).Messages(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(tc.frame); err != nil {
				t.Fatal(err)
			}
			_, err = stream.CloseAndRecv()
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v, want INVALID_ARGUMENT", err)
			}
		})
	}
	raw, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = raw.Write([]byte("GET / HTTP/1.1\r\n\r\n\x00\x01garbage"))
	_ = raw.Close()
	// The node still serves: its one-voter-short group has no leader, but
	// a well-formed empty frame is taken.
	stream, err := pb.NewMultiRaftClient(conn).Messages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.MultiRaftFrame{From: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatalf("a well-formed frame after the garbage: %v", err)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	msg, _ := (&Envelope{Group: 1}).Msg.Marshal()
	seed, _ := gproto.Marshal(&pb.MultiRaftFrame{From: 1, Messages: []*pb.MultiRaftEnvelope{{Group: 3, Message: msg}}})
	f.Add(seed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var frame pb.MultiRaftFrame
		if gproto.Unmarshal(data, &frame) != nil {
			return
		}
		msgs, err := decodeFrame(&frame)
		if err != nil {
			if !errors.Is(err, errBadFrame) {
				t.Fatalf("error %v is not errBadFrame", err)
			}
			return
		}
		for _, m := range msgs {
			if m.Msg.From != frame.From {
				t.Fatalf("a message from %d in a frame from %d", m.Msg.From, frame.From)
			}
		}
	})
}
