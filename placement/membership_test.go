package placement

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// logSink is a slog.Handler that keeps records (t.Log cannot be used:
// memberlist logs from its goroutines after a test ends).
type logSink struct {
	mu   sync.Mutex
	recs []string
}

func (s *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (s *logSink) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	s.mu.Lock()
	s.recs = append(s.recs, b.String())
	s.mu.Unlock()
	return nil
}
func (s *logSink) WithAttrs([]slog.Attr) slog.Handler { return s }
func (s *logSink) WithGroup(string) slog.Handler      { return s }
func (s *logSink) contains(sub string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.recs {
		if strings.Contains(r, sub) {
			return true
		}
	}
	return false
}

type testMember struct {
	*Membership
	log *logSink

	mu     sync.Mutex
	events []Event
	done   chan struct{}
}

func (tm *testMember) eventsFor(id NodeID, kind EventKind) int {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	n := 0
	for _, ev := range tm.events {
		if ev.Member.ID == id && ev.Kind == kind {
			n++
		}
	}
	return n
}

func (tm *testMember) member(id NodeID) (Member, bool) {
	for _, m := range tm.Members() {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

func testConfig(id NodeID) MembershipConfig {
	cfg := DefaultMembershipConfig(id).WithFastTiming()
	cfg.BindAddr = "127.0.0.1"
	cfg.BindPort = 0
	cfg.Meta = NodeMeta{GRPCAddr: "127.0.0.1:1" + string(id[len(id)-1]) + "000", HTTPAddr: "127.0.0.1:8787", AdminAddr: "127.0.0.1:8789"}
	return cfg
}

func startMember(t *testing.T, cfg MembershipConfig) *testMember {
	t.Helper()
	sink := &logSink{}
	cfg.Logger = slog.New(sink)
	m, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start(%s): %v", cfg.NodeID, err)
	}
	tm := &testMember{Membership: m, log: sink, done: make(chan struct{})}
	go func() {
		defer close(tm.done)
		for ev := range m.Events() {
			tm.mu.Lock()
			tm.events = append(tm.events, ev)
			tm.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		m.Shutdown()
		<-tm.done // Shutdown closes Events
	})
	return tm
}

func eventually(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// allSee reports whether every member sees every id alive with its meta.
func allSee(ms []*testMember, want map[NodeID]MembershipConfig) bool {
	for _, m := range ms {
		for id, cfg := range want {
			got, ok := m.member(id)
			if !ok || !got.Alive || got.Meta != cfg.Meta {
				return false
			}
		}
	}
	return true
}

func TestMembershipJoinAndFail(t *testing.T) {
	ids := []NodeID{"a1", "b2", "c3"}
	cfgs := map[NodeID]MembershipConfig{}
	var ms []*testMember
	for _, id := range ids {
		cfg := testConfig(id)
		cfgs[id] = cfg
		ms = append(ms, startMember(t, cfg))
	}
	seed := ms[0].Addr()
	for _, m := range ms[1:] {
		if n, err := m.Join([]string{seed}); err != nil || n != 1 {
			t.Fatalf("%s join: %d, %v", m.ID(), n, err)
		}
	}
	eventually(t, "every member to see every other with its meta", 5*time.Second, func() bool { return allSee(ms, cfgs) })
	for _, m := range ms {
		got := m.Members()
		if len(got) != 3 || got[0].ID != "a1" || got[2].ID != "c3" {
			t.Fatalf("%s Members() = %+v, want three sorted by ID", m.ID(), got)
		}
		for _, mem := range got {
			if _, port, err := net.SplitHostPort(mem.Addr); err != nil || port == "0" {
				t.Fatalf("member address %q", mem.Addr)
			}
		}
	}
	// The events reach the test's reader after the member list has them.
	eventually(t, "a1 and b2 to get a join event for c3", 5*time.Second, func() bool {
		return ms[0].eventsFor("c3", EventJoin) > 0 && ms[1].eventsFor("c3", EventJoin) > 0
	})

	// c3 dies without a word: the others detect it.
	if err := ms[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := ms[2].Join([]string{seed}); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Join after Shutdown: %v", err)
	}
	eventually(t, "a1 and b2 to see c3 fail", 10*time.Second, func() bool {
		for _, m := range ms[:2] {
			if mem, ok := m.member("c3"); !ok || mem.Alive || m.eventsFor("c3", EventLeave) == 0 {
				return false
			}
		}
		return true
	})
	for _, m := range ms[:2] {
		for _, id := range ids[:2] {
			if mem, _ := m.member(id); !mem.Alive {
				t.Fatalf("%s sees %s dead", m.ID(), id)
			}
		}
	}

	// b2 leaves politely: a1 hears of it at once.
	if err := ms[1].Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a1 to see b2 leave", 5*time.Second, func() bool {
		mem, ok := ms[0].member("b2")
		return ok && !mem.Alive
	})
}

func TestMembershipUpdateMeta(t *testing.T) {
	a := startMember(t, testConfig("a1"))
	b := startMember(t, testConfig("b2"))
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "join", 5*time.Second, func() bool { _, ok := a.member("b2"); return ok })
	meta := NodeMeta{GRPCAddr: "10.1.2.3:8790"}
	if err := b.UpdateMeta(meta, time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a1 to see b2's new meta", 5*time.Second, func() bool {
		mem, _ := a.member("b2")
		return mem.Meta == meta && a.eventsFor("b2", EventUpdate) > 0
	})
	if err := b.UpdateMeta(NodeMeta{GRPCAddr: "nope"}, time.Second); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("bad meta: %v", err)
	}
}

func TestMembershipDuplicateID(t *testing.T) {
	a := startMember(t, testConfig("a1"))
	b := startMember(t, testConfig("b2"))
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "join", 5*time.Second, func() bool { _, ok := a.member("b2"); return ok })

	// A second process calls itself b2.
	dup := startMember(t, testConfig("b2"))
	_, err := dup.Join([]string{a.Addr()})
	if !errors.Is(err, ErrDuplicateNodeID) {
		t.Fatalf("duplicate join: %v, want ErrDuplicateNodeID", err)
	}
	if msg := err.Error(); !strings.Contains(msg, `"b2"`) || !strings.Contains(msg, b.Addr()) {
		t.Fatalf("error does not name the id and the other address: %v", err)
	}
	t.Logf("duplicate join error: %v", err)
	// Nobody merged anything: a still has the real b2, the impostor
	// knows only itself.
	time.Sleep(300 * time.Millisecond)
	if mem, _ := a.member("b2"); mem.Addr != b.Addr() || !mem.Alive {
		t.Fatalf("a1 sees b2 as %+v", mem)
	}
	if got := dup.Members(); len(got) != 1 {
		t.Fatalf("the impostor merged: %+v", got)
	}
	if _, ok := dup.member("a1"); ok {
		t.Fatal("the impostor knows a1")
	}
	eventually(t, "a1 to report the conflict", 5*time.Second, func() bool {
		return a.eventsFor("b2", EventConflict) > 0 && a.log.contains("duplicate node id")
	})
	if at, err := dup.Conflict(); !errors.Is(err, ErrDuplicateNodeID) || time.Since(at) > 10*time.Second {
		t.Fatalf("impostor's Conflict() = %v, %v", err, at)
	}
	if _, err := b.Conflict(); err != nil {
		t.Fatalf("the real b2 reports a conflict: %v", err)
	}
	// The cluster contacting the impostor is refused too.
	if _, err := a.Join([]string{dup.Addr()}); !errors.Is(err, ErrDuplicateNodeID) {
		t.Fatalf("a1 joining the impostor: %v", err)
	}
	if mem, _ := a.member("b2"); mem.Addr != b.Addr() {
		t.Fatalf("a1 took the impostor's address for b2: %+v", mem)
	}
	// The same process joining again is fine (not a duplicate of itself).
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatalf("rejoin of the real b2: %v", err)
	}
}

// TestMembershipGarbage sends random bytes to a member's gossip port over
// UDP and TCP; it must keep working.
func TestMembershipGarbage(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		name := "plain"
		if encrypted {
			name = "encrypted"
		}
		t.Run(name, func(t *testing.T) {
			key := bytes.Repeat([]byte{7}, 32)
			cfg := func(id NodeID) MembershipConfig {
				c := testConfig(id)
				if encrypted {
					c.SecretKey = key
				}
				return c
			}
			a := startMember(t, cfg("a1"))
			b := startMember(t, cfg("b2"))
			if _, err := b.Join([]string{a.Addr()}); err != nil {
				t.Fatal(err)
			}
			addr := a.Addr()
			rng := rand.New(rand.NewPCG(1, 2))
			garbage := func() []byte {
				p := make([]byte, 1+rng.IntN(1400))
				for i := range p {
					p[i] = byte(rng.UintN(256))
				}
				// Also lead with every message type byte memberlist knows.
				if rng.IntN(2) == 0 {
					p[0] = byte(rng.IntN(16))
				}
				return p
			}
			udp, err := net.Dial("udp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer udp.Close()
			for i := 0; i < 500; i++ {
				udp.Write(garbage())
			}
			var wg sync.WaitGroup
			for i := 0; i < 40; i++ {
				p := garbage()
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := net.DialTimeout("tcp", addr, time.Second)
					if err != nil {
						return
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(2 * time.Second))
					c.Write(p)
					if len(p)%3 == 0 {
						c.Write(bytes.Repeat([]byte{0xff}, 64<<10)) // a long stream too
					}
					c.Read(make([]byte, 512))
				}()
			}
			wg.Wait()
			// Still a working member: the pair is intact, and a new node joins.
			c := startMember(t, cfg("c3"))
			if _, err := c.Join([]string{addr}); err != nil {
				t.Fatalf("join after garbage: %v", err)
			}
			eventually(t, "three members after garbage", 5*time.Second, func() bool {
				for _, m := range []*testMember{a, b, c} {
					n := 0
					for _, mem := range m.Members() {
						if mem.Alive {
							n++
						}
					}
					if n != 3 {
						return false
					}
				}
				return true
			})
		})
	}
}

// TestMembershipClosesIdleStreams: TCP connections to the gossip port that
// send nothing, or only the start of a message, are closed by the member
// after TCPTimeout (1 s here; memberlist's 10 s on a node), not held open.
func TestMembershipClosesIdleStreams(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		cfg := testConfig("a1")
		if encrypted {
			cfg.SecretKey = bytes.Repeat([]byte{7}, 32)
		}
		a := startMember(t, cfg)
		var wg sync.WaitGroup
		for i, first := range [][]byte{nil, {6}, {6, 0x80}, {7, 0xff, 0xff}, {1}} { // pushPull, compound, stream headers cut short
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := net.DialTimeout("tcp", a.Addr(), time.Second)
					if err != nil {
						t.Error(err)
						return
					}
					defer c.Close()
					c.Write(first)
					c.SetReadDeadline(time.Now().Add(30 * time.Second))
					_, err = io.Copy(io.Discard, c)
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						t.Errorf("encrypted %v, case %d: the member kept an idle connection open for 30 s", encrypted, i)
					}
				}()
			}
		}
		wg.Wait()
		if n := len(a.Members()); n != 1 {
			t.Fatalf("%d members after idle connections, want 1", n)
		}
	}
}

func TestMembershipKeyMismatch(t *testing.T) {
	ca := testConfig("a1")
	ca.SecretKey = bytes.Repeat([]byte{1}, 16)
	a := startMember(t, ca)
	cb := testConfig("b2")
	cb.SecretKey = bytes.Repeat([]byte{2}, 16)
	b := startMember(t, cb)
	_, err := b.Join([]string{a.Addr()})
	if err == nil {
		t.Fatal("join with another key succeeded")
	}
	// One line, as a start's error is: memberlist's own is a multierror
	// over several ("1 error occurred:\n\t* ...").
	if msg := err.Error(); strings.ContainsAny(msg, "\n\t") || strings.Contains(msg, "error occurred") {
		t.Errorf("join error %q: want it on one line, without multierror's framing", msg)
	}
	c := startMember(t, testConfig("c3"))
	if _, err := c.Join([]string{a.Addr()}); err == nil {
		t.Fatal("join without a key succeeded")
	}
	if len(a.Members()) != 1 {
		t.Fatalf("a1 merged someone: %+v", a.Members())
	}
}

func TestMembershipConfigValidate(t *testing.T) {
	ok := DefaultMembershipConfig("n1")
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(c *MembershipConfig){
		"bad id":     func(c *MembershipConfig) { c.NodeID = "N 1" },
		"empty id":   func(c *MembershipConfig) { c.NodeID = "" },
		"port":       func(c *MembershipConfig) { c.BindPort = 70000 },
		"adv port":   func(c *MembershipConfig) { c.AdvertisePort = -1 },
		"key length": func(c *MembershipConfig) { c.SecretKey = []byte("short") },
		"meta addr":  func(c *MembershipConfig) { c.Meta.GRPCAddr = "no-port" },
		"meta size": func(c *MembershipConfig) {
			c.Meta.HTTPAddr = strings.Repeat("h", 280) + ":1"
			c.Meta.AdminAddr = c.Meta.HTTPAddr
		},
		"negative":    func(c *MembershipConfig) { c.ProbeInterval = -time.Second },
		"suspicion":   func(c *MembershipConfig) { c.SuspicionMult = -1 },
		"events":      func(c *MembershipConfig) { c.EventBuffer = -1 },
		"reclaim neg": func(c *MembershipConfig) { c.DeadNodeReclaimTime = -1 },
	} {
		c := ok
		mutate(&c)
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Validate = %v", name, err)
		}
		if _, err := Start(c); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Start = %v", name, err)
		}
	}
	for _, n := range []int{16, 24, 32} {
		c := ok
		c.SecretKey = make([]byte, n)
		if err := c.Validate(); err != nil {
			t.Errorf("%d-byte key: %v", n, err)
		}
	}
}

func TestMembershipPortInUse(t *testing.T) {
	a := startMember(t, testConfig("a1"))
	_, port, _ := net.SplitHostPort(a.Addr())
	cfg := testConfig("b2")
	cfg.BindPort = atoiT(t, port)
	if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), "starting gossip") {
		t.Fatalf("second bind of one port: %v", err)
	}
}

func atoiT(t *testing.T, s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("not a port: %q", s)
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func TestMembershipAdvertiseHostName(t *testing.T) {
	cfg := testConfig("a1")
	cfg.AdvertiseAddr = "localhost"
	a := startMember(t, cfg)
	host, _, _ := net.SplitHostPort(a.Addr())
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Fatalf("advertised %q for localhost", a.Addr())
	}
}

func TestLogWriterLevels(t *testing.T) {
	sink := &logSink{}
	w := newLogWriter(slog.New(sink))
	for _, line := range []string{
		"[DEBUG] memberlist: d1\n", "[INFO] memberlist: i1\n", "[WARN] memberlist: w1\n", "[ERR] memberlist: e1\n", "plain\n",
		"[ERR] memberlist: Failed to send indirect UDP ping: write udp 127.0.0.1:1->127.0.0.1:2: use of closed network connection\n",
	} {
		w.Write([]byte(line))
	}
	for _, want := range []string{"DEBUG d1", "INFO i1", "WARN w1", "ERROR e1", "INFO plain", "DEBUG Failed to send indirect UDP ping"} {
		if !sink.contains(want) {
			t.Errorf("no %q in %v", want, sink.recs)
		}
	}
}

// Lines past logBurst in a window are dropped, and counted once the next
// window lets a line through.
func TestLogWriterDropsFloods(t *testing.T) {
	sink := &logSink{}
	now := time.Unix(1_700_000_000, 0)
	w := newLogWriter(slog.New(sink))
	w.now = func() time.Time { return now }
	for i := range logBurst + 30 {
		fmt.Fprintf(w, "[ERR] memberlist: garbage %d\n", i)
	}
	if n := len(sink.recs); n != logBurst {
		t.Fatalf("%d lines logged of %d in one window, want %d", n, logBurst+30, logBurst)
	}
	now = now.Add(logWindow)
	fmt.Fprintf(w, "[WARN] memberlist: later\n")
	want := []string{fmt.Sprintf("WARN 30 gossip log lines dropped: more than %d came in %s", logBurst, logWindow), "WARN later"}
	if got := sink.recs[logBurst:]; len(got) != 2 || !strings.HasPrefix(got[0], want[0]) || got[1] != want[1] {
		t.Fatalf("after the window: %q, want %q", got, want)
	}
}

func TestEventKindString(t *testing.T) {
	for k, s := range map[EventKind]string{EventJoin: "join", EventLeave: "leave", EventUpdate: "update", EventConflict: "conflict", 0: "EventKind(0)"} {
		if k.String() != s {
			t.Errorf("%d.String() = %q", k, k.String())
		}
	}
}

// A node of another cluster, or with another shard count, is refused at
// the join, and neither side takes the other's members; a node with no
// cluster yet and the same shard count joins.
func TestMembershipRefusesOtherClusters(t *testing.T) {
	withMeta := func(id NodeID, cluster string, shards int) MembershipConfig {
		cfg := testConfig(id)
		cfg.Meta.ClusterID, cfg.Meta.Shards = cluster, shards
		return cfg
	}
	a := startMember(t, withMeta("a1", "c-one", 16))
	for _, tc := range []struct {
		name string
		cfg  MembershipConfig
		want string
	}{
		{"another shard count", withMeta("b2", "", 12), "has 16 shards, this node 12"},
		{"another cluster", withMeta("c3", "c-two", 16), "belongs to cluster c-one, this node to cluster c-two"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other := startMember(t, tc.cfg)
			_, err := other.Join([]string{a.Addr()})
			if !errors.Is(err, ErrOtherCluster) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("join: %v, want ErrOtherCluster saying %q", err, tc.want)
			}
			time.Sleep(300 * time.Millisecond)
			if _, ok := a.member(tc.cfg.NodeID); ok {
				t.Fatalf("a1 took %s as a member", tc.cfg.NodeID)
			}
			if got := other.Members(); len(got) != 1 {
				t.Fatalf("%s merged a1's members: %+v", tc.cfg.NodeID, got)
			}
		})
	}
	fresh := startMember(t, withMeta("d4", "", 16))
	if _, err := fresh.Join([]string{a.Addr()}); err != nil {
		t.Fatalf("a new node with the cluster's shard count: %v", err)
	}
	eventually(t, "d4 to join", 5*time.Second, func() bool { _, ok := a.member("d4"); return ok })
}

// TestMembershipJoinBlamesOnlyItsOwnMerges: while a member's own Join
// runs (here one that waits on a seed that never answers), another node
// that tries to join it and is refused (another shard count) is that
// node's failure, not the member's: Join reported the other node's
// rejection as its own, and a restarted node whose --join was still being
// tried failed with ErrOtherCluster because a misconfigured node had
// tried to join through it meanwhile.
func TestMembershipJoinBlamesOnlyItsOwnMerges(t *testing.T) {
	withShards := func(id NodeID, shards int) MembershipConfig {
		cfg := testConfig(id)
		cfg.Meta.Shards = shards
		return cfg
	}
	a := startMember(t, withShards("a1", 16))
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	joined := make(chan error, 1)
	go func() {
		_, err := a.Join([]string{silent.Addr().String()})
		joined <- err
	}()
	time.Sleep(200 * time.Millisecond)
	x := startMember(t, withShards("x9", 12))
	if _, err := x.Join([]string{a.Addr()}); !errors.Is(err, ErrOtherCluster) {
		t.Fatalf("x9 joining a1: %v, want ErrOtherCluster", err)
	}
	err = <-joined
	if err == nil {
		t.Fatal("a1's join through a seed that never answers succeeded")
	}
	if errors.Is(err, ErrOtherCluster) || errors.Is(err, ErrDuplicateNodeID) {
		t.Fatalf("a1's join failed with another node's refusal: %v", err)
	}
}

// foreignDelegate gossips meta as another service speaking memberlist would.
type foreignDelegate struct{ meta []byte }

func (d foreignDelegate) NodeMeta(int) []byte             { return d.meta }
func (d foreignDelegate) NotifyMsg([]byte)                {}
func (d foreignDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d foreignDelegate) LocalState(bool) []byte          { return nil }
func (d foreignDelegate) MergeRemoteState([]byte, bool)   {}

// TestMembershipRefusesForeignGossip: a --join that names another service
// speaking memberlist (serf, as Consul's and Nomad's agents do) is refused
// saying so. Before, the join succeeded: a peer with other meta was merged
// silently (and not taken as a member), one with none was taken as a member
// with no addresses, and the node waited for the cluster to form for good.
func TestMembershipRefusesForeignGossip(t *testing.T) {
	for name, meta := range map[string][]byte{
		"serf tags": {0x81, 0xa4, 'r', 'o', 'l', 'e', 0xa6, 'c', 'o', 'n', 's', 'u', 'l'}, // msgpack {"role": "consul"}
		"no meta":   nil,
	} {
		t.Run(name, func(t *testing.T) {
			mc := memberlist.DefaultLANConfig()
			mc.Name, mc.BindAddr, mc.BindPort = "consul-server-1", "127.0.0.1", 0
			mc.Delegate = foreignDelegate{meta}
			mc.LogOutput = io.Discard
			foreign, err := memberlist.Create(mc)
			if err != nil {
				t.Fatal(err)
			}
			defer foreign.Shutdown()
			a := startMember(t, testConfig("a1"))
			_, err = a.Join([]string{foreign.LocalNode().Address()})
			if !errors.Is(err, ErrOtherCluster) || !strings.Contains(err.Error(), "not a roost node") {
				t.Fatalf("join: %v, want ErrOtherCluster saying the seed is not a roost node", err)
			}
			time.Sleep(300 * time.Millisecond)
			if got := a.Members(); len(got) != 1 {
				t.Fatalf("a1 took the other service's node as a member: %+v", got)
			}
		})
	}
}

// A member whose gossip Cut loses (a partition, in fault tests) is
// declared dead by the others and by Alive, and is alive again once the
// cut ends; the members it can still reach stay alive all along.
func TestMembershipCut(t *testing.T) {
	var mu sync.Mutex
	cutOff := map[string]bool{} // gossip addresses cut off from every other
	ids := []NodeID{"a1", "b2", "c3"}
	var ms []*testMember
	for _, id := range ids {
		cfg := testConfig(id)
		var self string
		cfg.Cut = func(peer string) bool {
			mu.Lock()
			defer mu.Unlock()
			return cutOff[self] || cutOff[peer]
		}
		m := startMember(t, cfg)
		mu.Lock()
		self = m.Addr() // memberlist may call Cut before: self "" is cut off from nobody
		mu.Unlock()
		ms = append(ms, m)
	}
	for _, m := range ms[1:] {
		if _, err := m.Join([]string{ms[0].Addr()}); err != nil {
			t.Fatal(err)
		}
	}
	everyoneAlive := func() bool {
		for _, m := range ms {
			for _, id := range ids {
				if !m.Alive(id) {
					return false
				}
			}
		}
		return true
	}
	eventually(t, "every member to see every other alive", 5*time.Second, everyoneAlive)
	if ms[0].Alive("x9") {
		t.Fatal("Alive of a member never heard of: true")
	}

	mu.Lock()
	cutOff[ms[2].Addr()] = true
	mu.Unlock()
	eventually(t, "c3 and the others to see each other dead", 10*time.Second, func() bool {
		return !ms[0].Alive("c3") && !ms[1].Alive("c3") && !ms[2].Alive("a1") && !ms[2].Alive("b2")
	})
	if !ms[0].Alive("b2") || !ms[1].Alive("a1") || !ms[2].Alive("c3") {
		t.Fatal("a member the cut does not separate was declared dead")
	}

	mu.Lock()
	delete(cutOff, ms[2].Addr())
	mu.Unlock()
	for _, m := range ms[:2] { // as a rejoin would
		if _, err := m.Join([]string{ms[2].Addr()}); err != nil {
			t.Logf("%s rejoining c3: %v", m.ID(), err)
		}
	}
	eventually(t, "every member to see every other alive after the cut", 10*time.Second, everyoneAlive)
}

// TestMembershipBoundsItsStreams: connections held open on the gossip port
// past MaxStreams are closed at once, unread, so they cannot take every
// file descriptor of the node (memberlist holds each for up to its 10 s
// TCP timeout); once they go, a member joins as before. Without the bound
// every one was held (found by QA: a node under ulimit -n 1024 whose
// gossip port was flooded ran out of descriptors for its storage).
func TestMembershipBoundsItsStreams(t *testing.T) {
	const maxStreams, flood = 4, 30
	cfg := testConfig("a1")
	cfg.MaxStreams = maxStreams
	cfg.TCPTimeout = 10 * time.Second // memberlist's own: how long it waits on an idle stream
	a := startMember(t, cfg)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range flood {
		c, err := net.DialTimeout("tcp", a.Addr(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.Sleep(500 * time.Millisecond) // the member takes them all in
	closed := 0
	for _, c := range conns {
		// Each its own deadline: a read past its deadline fails at once,
		// without looking for the EOF of a closed connection.
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF || err != nil && !isTimeout(err) {
			closed++
		}
	}
	if closed < flood-maxStreams {
		t.Fatalf("%d of %d idle connections closed; want all but the %d handled", closed, flood, maxStreams)
	}
	if !a.log.contains("refused a TCP connection") {
		t.Errorf("the refusals were not logged")
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	b := startMember(t, testConfig("b2"))
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := b.Join([]string{a.Addr()}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("joining after the flood: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// fakeStreams is a transport whose Shutdown, like memberlist's
// NetTransport, waits for its accept loop, which has just accepted a
// connection and blocks handing it on.
type fakeStreams struct {
	memberlist.NodeAwareTransport
	ch chan net.Conn
}

func (f *fakeStreams) StreamCh() <-chan net.Conn { return f.ch }

func (f *fakeStreams) Shutdown() error {
	accepted := make(chan struct{})
	go func() {
		a, b := net.Pipe()
		defer b.Close()
		f.ch <- a
		close(accepted)
	}()
	<-accepted
	return nil
}

// A stream accepted while the transport shuts down is taken and closed:
// the accept loop handing it on no longer blocks Shutdown, which hung a
// node's Close for good (seen in a CI run under load).
func TestStreamLimitShutsDownWithAStreamPending(t *testing.T) {
	sl := newStreamLimit(&fakeStreams{ch: make(chan net.Conn)}, 4, slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan error, 1)
	go func() { done <- sl.Shutdown() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown hung on a stream accepted while it ran")
	}
}
