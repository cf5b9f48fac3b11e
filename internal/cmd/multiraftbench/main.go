// Command multiraftbench measures what batching across Raft groups would
// save, as evidence for the engine docs/raftstore.md ("What the spread
// target would take") describes: three nodes in one process, each driving
// all its groups (etcd-io/raft's RawNode) from one loop that writes every
// group's entries and hard state in one synced Pebble batch, sends one gRPC
// message per peer carrying every group's messages, and applies every
// group's committed entries in one batch.
//
// The load is raftstore's BenchmarkTransportSpread's, so the two can be set
// side by side: 48 groups, leaders spread evenly, 64 proposers each
// committing its own object's versions in group (proposer mod 48), one
// apply in flight each; an apply writes the value, the object's version
// and the group's applied index, on every node. It prints applies/s, the
// process's CPU per apply, WAL syncs per apply (all three nodes) and how
// many groups' work a synced round carried. -send-per-group and
// -apply-per-group switch the message and the apply batching off (the one
// loop and its one synced write stay), to tell what each saves.
//
//	go run ./internal/cmd/multiraftbench [-n 30000] [-groups 48] [-proposers 64] [-send-per-group] [-apply-per-group]
//	go test -run XXX -bench TransportSpread -benchtime 30000x ./raftstore
//
// It is a measurement, not an engine: raft's log lives in memory
// (MemoryStorage) as well as in Pebble and is never compacted, nothing is
// recovered from disk, there are no snapshots, configuration changes,
// leadership transfers or leases, and a proposal lost to a leader change
// stops the run. What it keeps of a real engine's costs: every entry is
// written and synced on every node before its messages leave, every
// message crosses a real gRPC connection, every entry is applied to Pebble
// on every node.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
)

// rawCodec sends a frame's bytes as they are: the frames are this tool's
// own encoding (encodeEnvelopes), not protobuf messages.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	p := v.(*[]byte)
	*p = append((*p)[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "raw" }

var _ encoding.Codec = rawCodec{}

// envelope is one raft message of one group.
type envelope struct {
	group uint64
	msg   raftpb.Message
}

// encodeEnvelopes frames envs as a run of (uvarint group, uvarint length,
// marshalled message); decodeEnvelopes reads it back.
func encodeEnvelopes(envs []envelope) []byte {
	var b []byte
	for _, e := range envs {
		m, err := e.msg.Marshal()
		if err != nil {
			panic(err)
		}
		b = binary.AppendUvarint(b, e.group)
		b = binary.AppendUvarint(b, uint64(len(m)))
		b = append(b, m...)
	}
	return b
}

func decodeEnvelopes(b []byte) ([]envelope, error) {
	var out []envelope
	for len(b) > 0 {
		g, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errors.New("bad group")
		}
		b = b[n:]
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return nil, errors.New("bad length")
		}
		b = b[n:]
		var m raftpb.Message
		if err := m.Unmarshal(b[:l]); err != nil {
			return nil, err
		}
		b = b[l:]
		out = append(out, envelope{g, m})
	}
	return out, nil
}

// proposal is one write for a group, with the channel closed once it is
// applied on the leader.
type proposal struct {
	group uint64
	data  []byte
	done  chan struct{}
}

type group struct {
	id      uint64
	rn      *raft.RawNode
	storage *raft.MemoryStorage
}

// peer is the messages waiting for one peer; its sender goroutine takes
// all of them at each wake-up and sends them as one frame.
type peer struct {
	mu   sync.Mutex
	out  []envelope
	wake chan struct{}
}

// node is one node: its Pebble, its groups and the loop that owns them
// (groups and waiters are touched by run only).
type node struct {
	id      uint64
	db      *pebble.DB
	groups  []*group // index group id - 1
	inbox   chan []envelope
	props   chan proposal
	peers   map[uint64]*peer
	waiters map[[16]byte]chan struct{}
	leads   []atomic.Bool // by group index: this node leads it
	syncs   atomic.Uint64
	readies atomic.Uint64 // groups with a Ready, summed over the loop's rounds that synced
	server  *grpc.Server
	// Batching switched off, to tell what each kind saves: one frame per
	// group's messages instead of one per peer; one apply batch per group
	// instead of one per round.
	sendPerGroup, applyPerGroup bool
}

// close stops the node's server and closes its Pebble; its loop has
// ended.
func (n *node) close() {
	if n.server != nil {
		n.server.Stop()
	}
	_ = n.db.Close()
}

// key is the Pebble key of parts, big-endian.
func key(parts ...uint64) []byte {
	var b []byte
	for _, p := range parts {
		b = binary.BigEndian.AppendUint64(b, p)
	}
	return b
}

func newNode(id uint64, dir string, ngroups int) (*node, error) {
	// raftstore's memtable size; the rest Pebble's defaults.
	db, err := pebble.Open(dir, &pebble.Options{MemTableSize: 32 << 20, FormatMajorVersion: pebble.FormatNewest, Logger: quietPebble{}})
	if err != nil {
		return nil, err
	}
	n := &node{id: id, db: db, inbox: make(chan []envelope, 1024), props: make(chan proposal, 1024),
		peers: map[uint64]*peer{}, waiters: map[[16]byte]chan struct{}{}, leads: make([]atomic.Bool, ngroups)}
	for g := 1; g <= ngroups; g++ {
		st := raft.NewMemoryStorage()
		if err := st.ApplySnapshot(raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{Index: 1, Term: 1, ConfState: raftpb.ConfState{Voters: []uint64{1, 2, 3}}}}); err != nil {
			return nil, err
		}
		// Heartbeats every 100 ms tick, as raftstore's default timing; a
		// 5 s election timeout, so a loop starved on a busy machine does
		// not start an election that would drop proposals mid-run.
		rn, err := raft.NewRawNode(&raft.Config{ID: id, ElectionTick: 50, HeartbeatTick: 1, Storage: st,
			MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 256, PreVote: true, Logger: discardLogger{}})
		if err != nil {
			return nil, err
		}
		n.groups = append(n.groups, &group{id: uint64(g), rn: rn, storage: st})
	}
	return n, nil
}

// run is the node's loop: it takes every message and proposal waiting,
// then handles the Ready of every group that has one, together.
func (n *node) run(ctx context.Context) {
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			for _, g := range n.groups {
				g.rn.Tick()
			}
		case envs := <-n.inbox:
			n.step(envs)
		case p := <-n.props:
			n.propose(p)
		}
	drain:
		for {
			select {
			case envs := <-n.inbox:
				n.step(envs)
			case p := <-n.props:
				n.propose(p)
			default:
				break drain
			}
		}
		n.ready()
	}
}

func (n *node) step(envs []envelope) {
	for _, e := range envs {
		_ = n.groups[e.group-1].rn.Step(e.msg)
	}
}

func (n *node) propose(p proposal) {
	var id [16]byte
	copy(id[:], p.data)
	n.waiters[id] = p.done
	if err := n.groups[p.group-1].rn.Propose(p.data); err != nil {
		delete(n.waiters, id)
	}
}

// groupReady is one group's Ready in a round.
type groupReady struct {
	g  *group
	rd raft.Ready
}

// ready handles a round: every group's entries and hard state in one
// synced batch, then every group's messages (one frame a peer), then every
// group's committed entries in one batch, then Advance.
func (n *node) ready() {
	var rds []groupReady
	b := n.db.NewBatch()
	for _, g := range n.groups {
		if !g.rn.HasReady() {
			continue
		}
		rd := g.rn.Ready()
		if rd.SoftState != nil {
			n.leads[g.id-1].Store(rd.SoftState.Lead == n.id)
		}
		if !raft.IsEmptyHardState(rd.HardState) {
			_ = g.storage.SetHardState(rd.HardState)
			hs, _ := rd.HardState.Marshal()
			_ = b.Set(key(g.id, 0), hs, nil)
		}
		if len(rd.Entries) > 0 {
			_ = g.storage.Append(rd.Entries)
			for _, e := range rd.Entries {
				data, _ := e.Marshal()
				_ = b.Set(key(g.id, 1, e.Index), data, nil)
			}
		}
		rds = append(rds, groupReady{g, rd})
	}
	if len(rds) == 0 {
		b.Close()
		return
	}
	if b.Count() > 0 {
		if err := b.Commit(pebble.Sync); err != nil {
			log.Fatal(err)
		}
		n.syncs.Add(1)
		n.readies.Add(uint64(len(rds)))
	}
	b.Close()
	out := map[uint64][]envelope{}
	for _, r := range rds {
		for _, m := range r.rd.Messages {
			out[m.To] = append(out[m.To], envelope{r.g.id, m})
		}
	}
	for to, envs := range out {
		p := n.peers[to]
		p.mu.Lock()
		p.out = append(p.out, envs...)
		p.mu.Unlock()
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	ab := n.db.NewBatch()
	var done []chan struct{}
	for _, r := range rds {
		var last uint64
		for _, e := range r.rd.CommittedEntries {
			last = e.Index
			if e.Type != raftpb.EntryNormal || len(e.Data) < 16 {
				continue
			}
			obj := binary.BigEndian.Uint64(e.Data)
			ver := binary.BigEndian.Uint64(e.Data[8:])
			_ = ab.Set(key(r.g.id, 2, obj), e.Data[16:], nil)
			_ = ab.Set(key(r.g.id, 3, obj), key(ver), nil)
			var id [16]byte
			copy(id[:], e.Data)
			if ch, ok := n.waiters[id]; ok {
				delete(n.waiters, id)
				done = append(done, ch)
			}
		}
		if last > 0 {
			_ = ab.Set(key(r.g.id, 4), key(last), nil)
		}
		if n.applyPerGroup {
			commitApplied(ab)
			ab = n.db.NewBatch()
		}
	}
	commitApplied(ab)
	for _, ch := range done {
		close(ch)
	}
	for _, r := range rds {
		r.g.rn.Advance(r.rd)
	}
}

// commitApplied commits (without a sync) and closes an apply batch.
func commitApplied(b *pebble.Batch) {
	if b.Count() > 0 {
		if err := b.Commit(pebble.NoSync); err != nil {
			log.Fatal(err)
		}
	}
	b.Close()
}

// batchStream is the one gRPC stream each node opens to each peer.
func batchStream() grpc.StreamDesc { return grpc.StreamDesc{StreamName: "Batch", ClientStreams: true} }

// serve answers peers' streams on lis, handing each frame to the loop.
func (n *node) serve(lis net.Listener) *grpc.Server {
	s := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	desc := batchStream()
	desc.Handler = func(_ any, ss grpc.ServerStream) error {
		for {
			var b []byte
			if err := ss.RecvMsg(&b); err != nil {
				return err
			}
			envs, err := decodeEnvelopes(b)
			if err != nil {
				return err
			}
			select {
			case n.inbox <- envs:
			case <-ss.Context().Done(): // the server stopped
				return ss.Context().Err()
			}
		}
	}
	s.RegisterService(&grpc.ServiceDesc{ServiceName: "mr.T", HandlerType: (*any)(nil), Streams: []grpc.StreamDesc{desc}}, struct{}{})
	go s.Serve(lis)
	return s
}

// connect opens the stream to peer to at addr and starts its sender.
func (n *node) connect(ctx context.Context, to uint64, addr string) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	desc := batchStream()
	stream, err := cc.NewStream(ctx, &desc, "/mr.T/Batch", grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	p := &peer{wake: make(chan struct{}, 1)}
	n.peers[to] = p
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-p.wake:
			}
			p.mu.Lock()
			envs := p.out
			p.out = nil
			p.mu.Unlock()
			if len(envs) == 0 {
				continue
			}
			frames := [][]envelope{envs}
			if n.sendPerGroup {
				frames = splitByGroup(envs)
			}
			for _, f := range frames {
				b := encodeEnvelopes(f)
				if err := stream.SendMsg(&b); err != nil {
					if ctx.Err() == nil { // not the run's end
						log.Printf("send to %d: %v", to, err)
					}
					return
				}
			}
		}
	}()
	return nil
}

// splitByGroup splits envs into runs of one group's messages, in order.
func splitByGroup(envs []envelope) [][]envelope {
	var out [][]envelope
	for i, e := range envs {
		if i == 0 || e.group != envs[i-1].group {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], e)
	}
	return out
}

// quietPebble keeps Pebble's routine messages out of the output.
type quietPebble struct{}

func (quietPebble) Infof(string, ...any)      {}
func (quietPebble) Errorf(f string, v ...any) { log.Printf("pebble: "+f, v...) }
func (quietPebble) Fatalf(f string, v ...any) { log.Fatalf("pebble: "+f, v...) }

// discardLogger keeps raft quiet.
type discardLogger struct{}

func (discardLogger) Debug(...any)            {}
func (discardLogger) Debugf(string, ...any)   {}
func (discardLogger) Error(...any)            {}
func (discardLogger) Errorf(string, ...any)   {}
func (discardLogger) Info(...any)             {}
func (discardLogger) Infof(string, ...any)    {}
func (discardLogger) Warning(...any)          {}
func (discardLogger) Warningf(string, ...any) {}
func (discardLogger) Fatal(v ...any)          { log.Fatal(v...) }
func (discardLogger) Fatalf(f string, v ...any) {
	log.Fatalf(f, v...)
}
func (discardLogger) Panic(v ...any)            { log.Panic(v...) }
func (discardLogger) Panicf(f string, v ...any) { log.Panicf(f, v...) }

// processCPU is the user and system time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	var cfg config
	flag.IntVar(&cfg.groups, "groups", 48, "Raft groups, each with a voter on all three nodes")
	flag.IntVar(&cfg.proposers, "proposers", 64, "proposers, one apply in flight each")
	flag.IntVar(&cfg.applies, "n", 30000, "applies to measure")
	flag.BoolVar(&cfg.sendPerGroup, "send-per-group", false, "send each group's messages to a peer as a frame of their own")
	flag.BoolVar(&cfg.applyPerGroup, "apply-per-group", false, "apply each group's committed entries in a batch of their own")
	flag.Parse()
	res, err := measure(cfg)
	if err != nil {
		log.Fatalf("multiraftbench: %v", err)
	}
	fmt.Println(res)
}

type config struct {
	groups, proposers, applies  int
	sendPerGroup, applyPerGroup bool
}

// result is what one run measured.
type result struct {
	applies        int
	elapsed, cpu   time.Duration
	syncs, readies uint64 // of all three nodes, over the measured part
}

func (r result) String() string {
	return fmt.Sprintf("%d applies in %v: %.0f applies/s, %.0f cpu-us/apply, %.2f wal-syncs/apply, %.1f groups a synced round",
		r.applies, r.elapsed.Round(time.Millisecond), float64(r.applies)/r.elapsed.Seconds(),
		float64(r.cpu.Microseconds())/float64(r.applies), float64(r.syncs)/float64(r.applies),
		float64(r.readies)/float64(max(r.syncs, 1)))
}

// measure starts three nodes, waits for the leaders to spread, runs the
// load and stops everything.
func measure(cfg config) (res result, err error) {
	if cfg.groups < 1 || cfg.proposers < 1 || cfg.applies < 1 {
		return res, errors.New("-groups, -proposers and -n must be at least 1")
	}
	dir, err := os.MkdirTemp("", "multiraftbench")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	var loops sync.WaitGroup
	nodes := make([]*node, 3)
	addrs := make([]string, 3)
	defer func() {
		cancel()
		loops.Wait()
		for _, n := range nodes {
			if n != nil {
				n.close()
			}
		}
	}()
	for i := range nodes {
		if nodes[i], err = newNode(uint64(i+1), fmt.Sprintf("%s/n%d", dir, i+1), cfg.groups); err != nil {
			return res, err
		}
		nodes[i].sendPerGroup, nodes[i].applyPerGroup = cfg.sendPerGroup, cfg.applyPerGroup
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return res, err
		}
		addrs[i] = lis.Addr().String()
		nodes[i].server = nodes[i].serve(lis)
	}
	for i, n := range nodes {
		for j := range nodes {
			if i != j {
				if err := n.connect(ctx, uint64(j+1), addrs[j]); err != nil {
					return res, err
				}
			}
		}
	}
	// Leaders spread evenly: group g campaigns on node g mod 3.
	for _, n := range nodes {
		for _, g := range n.groups {
			if int(g.id)%3 == int(n.id-1) {
				_ = g.rn.Campaign()
			}
		}
	}
	for _, n := range nodes {
		loops.Go(func() { n.run(ctx) })
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		settled := true
		for g := 1; g <= cfg.groups; g++ {
			settled = settled && nodes[g%3].leads[g-1].Load()
		}
		if settled {
			break
		}
		if time.Now().After(deadline) {
			return res, errors.New("the leaders did not settle in 30 s")
		}
	}

	counters := func() (syncs, readies uint64) {
		for _, n := range nodes {
			syncs += n.syncs.Load()
			readies += n.readies.Load()
		}
		return syncs, readies
	}
	var left atomic.Int64
	left.Store(int64(cfg.applies))
	var failed atomic.Pointer[error]
	syncs0, readies0 := counters()
	cpu0 := processCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for p := 1; p <= cfg.proposers; p++ {
		g := uint64(p%cfg.groups) + 1
		leader := nodes[int(g)%3]
		wg.Go(func() {
			for v := uint64(1); failed.Load() == nil && left.Add(-1) >= 0; v++ {
				data := binary.BigEndian.AppendUint64(nil, uint64(p))
				data = binary.BigEndian.AppendUint64(data, v)
				data = append(data, fmt.Sprintf(`{"counter":%d,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`, v)...)
				done := make(chan struct{})
				leader.props <- proposal{group: g, data: data, done: done}
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					err := fmt.Errorf("proposer %d: version %d not applied in 10 s (a leader changed?)", p, v)
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if e := failed.Load(); e != nil {
		return res, *e
	}
	res.applies, res.elapsed, res.cpu = cfg.applies, time.Since(start), processCPU()-cpu0
	syncs, readies := counters()
	res.syncs, res.readies = syncs-syncs0, readies-readies0
	return res, nil
}
