package raftstore

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/roostdb/roost/proto"
)

// lostRecorder collects PeerLost calls: {node told, peer lost}.
type lostRecorder chan [2]raft.ServerAddress

func (l lostRecorder) option(c *TransportConfig) {
	c.PeerLost = func(addr raft.ServerAddress, _ error) { l <- [2]raft.ServerAddress{c.LocalAddr, addr} }
}

// With QuietTiming a group heartbeats rarely, yet its followers see the
// leader's node alive (its liveness pings), answer LeaderCheck with it, and
// no one reports it lost. When the leader's node goes away they do, and a
// forced election elects a new leader long before raft's own timeout.
func TestQuietGroupFailsOverByNodeLiveness(t *testing.T) {
	lost := make(lostRecorder, 64)
	nodes := make([]*tnode, 3)
	for i := range nodes {
		nodes[i] = newTNode(t, string(rune('a'+i)), nil, lost.option)
	}
	groups := startAll(t, nodes, 1, QuietTiming)
	// No one would campaign for 30-60 s: force the first election.
	if err := groups[0].ForceElection(context.Background()); err != nil {
		t.Fatal(err)
	}
	li := leaderIndex(t, groups, -1, 3*time.Second)
	if li != 0 {
		t.Fatalf("replica %d leads after the first replica forced an election", li)
	}
	followers := []int{1, 2}
	for _, f := range followers {
		waitFor(t, 3*time.Second, "the leader alive to a follower", func() bool {
			leader, alive := groups[f].LiveLeader()
			return alive && leader == nodes[li].addr
		})
	}
	// Three silence timeouts with few heartbeats: the pings keep the
	// leader's node alive.
	time.Sleep(3 * DefaultSilenceTimeout)
	for _, f := range followers {
		if !nodes[f].tr.PeerAlive(nodes[li].addr) {
			t.Fatalf("%s: the idle leader's node is not alive", nodes[f].id)
		}
		leader, alive, err := groups[1].CheckLeader(context.Background(), nodes[f].addr)
		if err != nil || !alive || leader != nodes[li].addr {
			t.Fatalf("LeaderCheck of %s: %q alive=%v err=%v", nodes[f].id, leader, alive, err)
		}
	}
	select {
	case l := <-lost:
		t.Fatalf("%s reported %s lost while it was alive", l[0], l[1])
	default:
	}
	_ = nodes[li].tr.Close() // the leader's node goes away
	nodes[li].srv.Stop()
	told := map[raft.ServerAddress]bool{}
	deadline := time.After(5 * time.Second)
	for len(told) < 2 {
		select {
		case l := <-lost:
			if l[1] == nodes[li].addr {
				told[l[0]] = true
			}
		case <-deadline:
			t.Fatalf("followers told of the lost leader: %v", told)
		}
	}
	for _, f := range followers {
		if _, alive := groups[f].LiveLeader(); alive {
			t.Fatalf("%s: the lost leader is still alive to it", nodes[f].id)
		}
	}
	leader, alive, err := groups[1].CheckLeader(context.Background(), nodes[2].addr)
	if err != nil || alive {
		t.Fatalf("LeaderCheck after the loss: %q alive=%v err=%v", leader, alive, err)
	}
	start := time.Now()
	if err := groups[1].ForceElection(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Well inside QuietHeartbeatTimeout, which raft would otherwise wait.
	if got := leaderIndex(t, groups, li, QuietHeartbeatTimeout/2); got != 1 {
		t.Fatalf("replica %d leads after replica 1 forced an election", got)
	}
	t.Logf("new leader %v after the forced election", time.Since(start))
}

// A peer that stops sending anything (no pings, its rare heartbeats too
// far apart) is reported lost although its stream never broke, and comes
// back alive with its next heartbeat.
func TestSilentPeerIsLost(t *testing.T) {
	lost := make(lostRecorder, 64)
	leader := newTNode(t, "a", nil, func(c *TransportConfig) { c.LivenessInterval = -1 })
	follower := newTNode(t, "b", nil, lost.option, func(c *TransportConfig) { c.SilenceTimeout = 200 * time.Millisecond })
	nodes := []*tnode{leader, follower}
	groups := startAll(t, nodes, 1, QuietTiming)
	if err := groups[0].ForceElection(context.Background()); err != nil {
		t.Fatal(err)
	}
	leaderIndex(t, groups, -1, 3*time.Second)
	// QuietTiming heartbeats every 3-6 s: more than the 200 ms silence.
	select {
	case l := <-lost:
		if l[1] != leader.addr {
			t.Fatalf("%s reported lost, want %s", l[1], leader.addr)
		}
	case <-time.After(QuietHeartbeatTimeout/5 + 2*time.Second): // a first heartbeat, then silence
		t.Fatal("a silent peer was not reported lost")
	}
	// The next heartbeat is at most a fifth of the heartbeat timeout away.
	waitFor(t, QuietHeartbeatTimeout/5+2*time.Second, "the silent peer alive again after a heartbeat", func() bool {
		return follower.tr.PeerAlive(leader.addr)
	})
}

// A caller that makes up a new address with every request does not grow
// the liveness records without bound, and real peers stay tracked.
func TestLivenessRecordsAreBounded(t *testing.T) {
	// A silence timeout the flood cannot outlast: under -race on a busy
	// machine, marking 4,196 addresses once took longer than the default
	// 1.2 s, and the real peer, heard only before it, fell silent.
	tr := NewTransport(TransportConfig{LocalAddr: "self", SilenceTimeout: time.Minute})
	defer tr.Close()
	tr.markHeard("peer")
	for i := range maxTrackedPeers + 100 {
		tr.markHeard(raft.ServerAddress("made-up-" + strconv.Itoa(i)))
	}
	tr.livenessMu.RLock()
	n := len(tr.liveness)
	tr.livenessMu.RUnlock()
	if n > maxTrackedPeers {
		t.Fatalf("%d liveness records, want at most %d", n, maxTrackedPeers)
	}
	if !tr.PeerAlive("peer") {
		t.Fatal("a peer tracked before the flood is no longer alive")
	}
	// Once the made-up addresses fall silent, a new real peer is tracked
	// again: the silent records make room for it.
	tr.livenessMu.RLock()
	for addr, l := range tr.liveness {
		if addr != "peer" {
			l.heard.Store(time.Now().Add(-time.Hour).UnixNano())
		}
	}
	tr.livenessMu.RUnlock()
	tr.markHeard("newcomer")
	if !tr.PeerAlive("newcomer") {
		t.Fatal("a peer first heard after a flood of silent addresses is not alive")
	}
	if !tr.PeerAlive("peer") {
		t.Fatal("a live peer was forgotten to make room")
	}
}

// A request to a group this node does not run says nothing of its caller:
// a forged caller address cannot make a dead peer look alive that way.
func TestRequestToNoGroupDoesNotMarkItsCaller(t *testing.T) {
	n := newTNode(t, "a", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, fromMetadataKey, "dead-peer:1")
	_, err := rawClient(t, n.addr).RequestVote(ctx, &pb.RaftRequestVoteRequest{GroupId: 99, Header: &pb.RaftRPCHeader{}})
	wantCode(t, "RequestVote to group 99", err, codes.NotFound)
	if n.tr.PeerAlive("dead-peer:1") {
		t.Fatal("a request to no group marked its caller alive")
	}
}

// A node that stops pinging a peer (none of its groups heartbeats it any
// more) ends its stream cleanly: the peer does not report it lost.
func TestPingsEndWithoutALoss(t *testing.T) {
	lost := make(lostRecorder, 64)
	leader := newTNode(t, "a", nil, func(c *TransportConfig) { c.LivenessInterval = 50 * time.Millisecond })
	leader.tr.pingFor = 300 * time.Millisecond
	follower := newTNode(t, "b", nil, lost.option, func(c *TransportConfig) { c.SilenceTimeout = 200 * time.Millisecond })
	var resp raft.AppendEntriesResponse
	hb := &raft.AppendEntriesRequest{RPCHeader: header("a", leader.addr), Term: 1}
	// Group 5 runs nowhere: the heartbeat fails, but its batch opens the stream.
	_ = leader.tr.Group(5).AppendEntries("b", follower.addr, hb, &resp)
	select {
	case l := <-lost:
		t.Fatalf("%s reported %s lost after the pings ended", l[0], l[1])
	case <-time.After(leader.tr.pingFor + 5*200*time.Millisecond):
	}
	if follower.tr.PeerAlive(leader.addr) {
		t.Fatal("a peer that stopped pinging is still alive")
	}
	// It is not alive as a leader, but nothing says it cannot be reached:
	// a leader on this node must not fence itself off because of it.
	if !follower.tr.PeerReachable(leader.addr) {
		t.Fatal("a peer that ended its pings cleanly is unreachable")
	}
}

// A leader that stops leading on a node that stays alive (here its group
// shuts down; in a cluster, its lease ran out while the node was paused)
// names no successor, and raft's own timeout is 30-60 s with QuietTiming.
// Its followers stop counting it as a live leader once the group has been
// silent for leaderSilence, although its node still pings them, so a
// forced election can replace it.
func TestSilentGroupLeaderIsNotLive(t *testing.T) {
	nodes, groups := quietLeader(t)
	for _, f := range []int{1, 2} {
		waitFor(t, 3*time.Second, "the leader live to a follower", func() bool {
			_, alive := groups[f].LiveLeader()
			return alive
		})
	}
	if err := groups[0].Shutdown(); err != nil {
		t.Fatal(err)
	}
	silence := groups[1].trans.(*groupTransport).leaderSilence()
	start := time.Now()
	for _, f := range []int{1, 2} {
		waitFor(t, silence+3*time.Second, "a follower to count the silent leader as gone", func() bool {
			_, alive := groups[f].LiveLeader()
			return !alive
		})
	}
	t.Logf("followers gave the leader up %v after it stopped (leaderSilence %v)", time.Since(start), silence)
	if !nodes[1].tr.PeerAlive(nodes[0].addr) {
		t.Fatal("the leader's node stopped pinging: this test no longer tests a silent group on a live node")
	}
	leader, alive, err := groups[1].CheckLeader(context.Background(), nodes[2].addr)
	if err != nil || alive {
		t.Fatalf("LeaderCheck of the other follower: %q alive=%v err=%v", leader, alive, err)
	}
	if err := groups[1].ForceElection(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := leaderIndex(t, groups[1:], -1, 5*time.Second); got != 0 {
		t.Fatalf("replica %d leads after replica 1 forced an election", got+1)
	}
}

// quietLeader starts group 1 with QuietTiming on three nodes and makes
// the first replica its leader.
func quietLeader(t *testing.T) ([]*tnode, []*Group) {
	t.Helper()
	nodes := make([]*tnode, 3)
	for i := range nodes {
		nodes[i] = newTNode(t, string(rune('a'+i)), nil)
	}
	groups := startAll(t, nodes, 1, QuietTiming)
	if err := groups[0].ForceElection(context.Background()); err != nil {
		t.Fatal(err)
	}
	if li := leaderIndex(t, groups, -1, 3*time.Second); li != 0 {
		t.Fatalf("replica %d leads after the first replica forced an election", li)
	}
	// The new leader's first entry must reach both followers before a
	// test stops it: a follower without it cannot win the next election
	// (the other refuses its vote, as raft must), and with QuietTiming a
	// lost append is sent again only 30-60 s later.
	var last uint64
	waitFor(t, 3*time.Second, "the leader's first entry", func() bool {
		last = groups[0].Raft().LastIndex()
		return last > 1 // entry 1 is the bootstrap configuration
	})
	for _, g := range groups[1:] {
		waitFor(t, 3*time.Second, "the leader's first entry at a follower", func() bool { return g.Raft().LastIndex() >= last })
	}
	return nodes, groups
}

// A leader asked LeaderCheck heartbeats its followers at once, not at its
// next heartbeat, 3-6 s away with QuietTiming: a replica that knows no
// leader learns it that way.
func TestLeaderCheckHeartbeatsAtOnce(t *testing.T) {
	nodes, groups := quietLeader(t)
	follower := groups[1].trans.(*groupTransport)
	// Wait for a heartbeat to arrive: the next comes no sooner than 3 s.
	before := follower.received.Load()
	waitFor(t, QuietHeartbeatTimeout/5+2*time.Second, "a heartbeat at the follower", func() bool { return follower.received.Load() > before })
	got := follower.received.Load()
	if _, _, err := groups[1].CheckLeader(context.Background(), nodes[0].addr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 500*time.Millisecond, "the heartbeat the check prompts", func() bool { return follower.received.Load() > got })
}

// PublishCommitsAfter lets followers apply an entry as soon as it commits,
// although with QuietTiming nothing would tell them for 30-60 s.
func TestPublishCommitsAfter(t *testing.T) {
	nodes, groups := quietLeader(t)
	r := groups[0].Raft()
	// A configuration change, as the node's reconciler makes: a non-voter
	// that never answers, which commits without it.
	// PublishCommitsAfter waits on the future itself (one waiter only): the
	// entry's index comes from the leader's log.
	PublishCommitsAfter(r, r.AddNonvoter("x", "127.0.0.1:1", 0, 0))
	var index uint64
	logs := nodes[0].store.LogStore(1)
	waitFor(t, 3*time.Second, "the configuration change in the leader's log", func() bool {
		for i := r.LastIndex(); i > 1; i-- { // entry 1 is the bootstrap configuration
			var l raft.Log
			if logs.GetLog(i, &l) == nil && l.Type == raft.LogConfiguration {
				index = i
				return true
			}
		}
		return false
	})
	for _, g := range groups[1:] {
		waitFor(t, 3*time.Second, "a follower to apply the committed entry", func() bool { return g.Raft().AppliedIndex() >= index })
	}
}

// A leader whose node is cut off from the others loses its reachable
// quorum within about a silence timeout, long before raft's lease would
// step it down, and has it again once the network heals; its followers,
// which still reach each other, keep theirs.
func TestQuorumReachableFollowsLiveness(t *testing.T) {
	faults, nodes, groups := quietGroupLedByFirst(t)
	quorum := func(i int) bool {
		ok, err := groups[i].QuorumReachable()
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	// Three silence timeouts of pings answered.
	time.Sleep(3 * DefaultSilenceTimeout)
	for i := range groups {
		if !quorum(i) {
			t.Fatalf("replica %d: no reachable quorum on a healthy network", i)
		}
	}
	faults.Isolate(nodes[0].addr)
	start := time.Now()
	waitFor(t, 3*DefaultSilenceTimeout, "the isolated leader to lose its quorum", func() bool { return !quorum(0) })
	t.Logf("quorum lost %v after the isolation", time.Since(start))
	if groups[0].State() != raft.Leader {
		t.Fatalf("the isolated replica is %v, not the leader: raft's lease ran out first", groups[0].State())
	}
	for _, i := range []int{1, 2} {
		if !quorum(i) {
			t.Fatalf("replica %d: lost its quorum, though it reaches the other follower", i)
		}
	}
	faults.Heal()
	waitFor(t, 3*DefaultSilenceTimeout, "the healed leader to reach its quorum", func() bool { return quorum(0) })
}

// dyingCaller is a Heartbeats stream whose caller sends one ping and dies
// while this node answers it: the answer's Send is the first to fail, as
// gRPC's does once the stream is gone, and Recv is never called again.
type dyingCaller struct {
	grpc.ServerStream // not used; nil
	ctx               context.Context
	cancel            context.CancelFunc
	pinged            bool
}

func (d *dyingCaller) Context() context.Context { return d.ctx }

func (d *dyingCaller) Recv() (*pb.RaftHeartbeatBatch, error) {
	if d.pinged {
		<-d.ctx.Done()
		return nil, status.FromContextError(d.ctx.Err()).Err()
	}
	d.pinged = true
	return &pb.RaftHeartbeatBatch{}, nil
}

func (d *dyingCaller) Send(*pb.RaftHeartbeatBatchResponse) error {
	d.cancel()
	return status.FromContextError(d.ctx.Err()).Err()
}

// A peer whose stream breaks while its batch is being answered is reported
// lost, as one whose stream breaks while this node waits for the next
// batch is. (Before, only a broken Recv reported it: a leader that died
// during one of its pings' answers went unreported, about once in a
// hundred runs of TestQuietGroupFailsOverByNodeLiveness under load.)
func TestPeerDyingDuringAnAnswerIsLost(t *testing.T) {
	lost := make(lostRecorder, 4)
	tr := NewTransport(TransportConfig{LocalAddr: "127.0.0.1:1", SilenceTimeout: -1, PeerLost: func(a raft.ServerAddress, _ error) { lost <- [2]raft.ServerAddress{"", a} }})
	t.Cleanup(func() { _ = tr.Close() })
	const caller = "127.0.0.1:2"
	ctx, cancel := context.WithCancel(metadata.NewIncomingContext(context.Background(), metadata.Pairs(fromMetadataKey, caller)))
	defer cancel()
	err := (&transportServer{t: tr}).Heartbeats(&dyingCaller{ctx: ctx, cancel: cancel})
	if err == nil {
		t.Fatal("Heartbeats ended without an error although its stream broke")
	}
	select {
	case l := <-lost:
		if l[1] != caller {
			t.Fatalf("reported %s lost, want %s", l[1], caller)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a caller that died during an answer was not reported lost")
	}
	if tr.PeerAlive(caller) {
		t.Fatal("a caller whose stream broke is still alive")
	}
}

// A peer whose heartbeat stream to this node broke (it died) and that
// came back leading nothing here opens no new stream; once it answers this
// node's pings it is reachable again. Before, it stayed unreachable until
// it sent a request, and a leader counting on it stayed fenced.
func TestAnsweredPingsOutweighABrokenStream(t *testing.T) {
	a := newTNode(t, "a", nil)
	b := newTNode(t, "b", nil)
	a.tr.markBroken(b.addr)
	if a.tr.PeerReachable(b.addr) {
		t.Fatal("a peer whose stream broke is reachable before it answered anything")
	}
	var resp raft.AppendEntriesResponse
	hb := &raft.AppendEntriesRequest{RPCHeader: header("a", a.addr), Term: 1}
	// Group 5 runs nowhere: the heartbeat fails, but b answers the batch.
	_ = a.tr.Group(5).AppendEntries("b", b.addr, hb, &resp)
	waitFor(t, 2*time.Second, "b reachable once it answered a's pings", func() bool { return a.tr.PeerReachable(b.addr) })
}

// A node slow to answer a peer's heartbeats (a busy machine, an fsync)
// does not report the peer lost for it: the peer sends its next batch only
// once it has the answer, so silence counts while the node waits for the
// peer, not while it answers. Before, every answer slower than the
// silence timeout reported a live peer lost, which failed the requests
// forwarded to it (TestHealReplacesDeadNode, once in a few runs under
// -race).
func TestSlowAnswerDoesNotReportThePeerLost(t *testing.T) {
	lost := make(lostRecorder, 4)
	a := newTNode(t, "a", nil)
	b := newTNode(t, "b", nil, lost.option, func(c *TransportConfig) { c.SilenceTimeout = 600 * time.Millisecond })
	b.tr.Group(5).SetHeartbeatHandler(func(rpc raft.RPC) {
		time.Sleep(1500 * time.Millisecond)
		rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
	})
	var resp raft.AppendEntriesResponse
	hb := &raft.AppendEntriesRequest{RPCHeader: header("a", a.addr), Term: 1}
	if err := a.tr.Group(5).AppendEntries("b", b.addr, hb, &resp); err != nil || !resp.Success {
		t.Fatalf("heartbeat: %v %+v", err, resp)
	}
	// a pings b every LivenessInterval from now on, well within b's
	// silence timeout.
	select {
	case l := <-lost:
		t.Fatalf("%s reported %s lost while it answered slowly", l[0], l[1])
	case <-time.After(time.Second):
	}
	if !b.tr.PeerAlive(a.addr) {
		t.Fatal("a is not alive to b after b answered its heartbeat slowly")
	}
}

// A peer whose pings stop while its other requests keep coming (a busy
// machine, its pinger starved; its leaders' appends still arrive) is not
// reported silent: PeerAlive counts those requests, and so does the
// silence watch. Once nothing at all comes, it is reported. Before, the
// watch counted the heartbeat stream alone and reported a peer that
// PeerAlive still called alive, which failed the requests forwarded to it.
func TestPeerHeardOtherwiseIsNotReportedSilent(t *testing.T) {
	lost := make(lostRecorder, 4)
	const silence = 300 * time.Millisecond
	a := newTNode(t, "a", nil, func(c *TransportConfig) { c.LivenessInterval = -1 })
	b := newTNode(t, "b", nil, lost.option, func(c *TransportConfig) { c.SilenceTimeout = silence })
	serveFake(t, b.tr.Group(5), nil)
	var resp raft.AppendEntriesResponse
	hb := &raft.AppendEntriesRequest{RPCHeader: header("a", a.addr), Term: 1}
	// One heartbeat opens a's stream to b; a sends no pings after it.
	if err := a.tr.Group(5).AppendEntries("b", b.addr, hb, &resp); err != nil || !resp.Success {
		t.Fatalf("heartbeat: %v %+v", err, resp)
	}
	appendReq := &raft.AppendEntriesRequest{RPCHeader: header("a", a.addr), Term: 1, PrevLogEntry: 1, PrevLogTerm: 1}
	for end := time.Now().Add(5 * silence); time.Now().Before(end); time.Sleep(silence / 6) {
		if err := a.tr.Group(5).AppendEntries("b", b.addr, appendReq, &resp); err != nil {
			t.Fatalf("append: %v", err)
		}
		select {
		case l := <-lost:
			t.Fatalf("%s reported %s lost while its appends kept coming", l[0], l[1])
		default:
		}
	}
	select {
	case l := <-lost:
		if l[1] != a.addr {
			t.Fatalf("%s reported lost, want %s", l[1], a.addr)
		}
	case <-time.After(5 * silence):
		t.Fatal("a peer that fell silent on every request was not reported lost")
	}
	if b.tr.PeerAlive(a.addr) {
		t.Fatal("a peer reported silent is still alive")
	}
}

// A voter whose forced election failed (its vote requests were lost) is
// a candidate of a newer term than the leader's, which the others still
// follow: it refuses the leader's heartbeats, and hashicorp/raft's
// heartbeat loop ignores the newer term they answer with. In an idle group
// that voter stayed without a leader for good. The leader now steps down
// on the answer, and an election (the node's elector forces one) brings
// every voter to one term.
func TestLeaderStepsDownForAFollowersNewerTerm(t *testing.T) {
	faults, nodes, groups := quietGroupLedByFirst(t)
	waitLeaderAliveToFollowers(t, groups)
	term := groups[0].Raft().CurrentTerm()
	faults.Isolate(nodes[2].addr)
	if err := groups[2].ForceElection(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "the cut-off voter campaigning", func() bool { return groups[2].Raft().CurrentTerm() > term })
	time.Sleep(100 * time.Millisecond) // its vote requests fail
	faults.Heal()
	// The leader's next heartbeat to it goes within 3–6 s; raft would
	// leave it leading at its old term for good.
	waitFor(t, 10*time.Second, "the leader to step down", func() bool { return groups[0].Raft().State() != raft.Leader })
	if err := groups[0].ForceElection(context.Background()); err != nil { // as the elector would
		t.Fatal(err)
	}
	for i := range groups {
		waitFor(t, 10*time.Second, fmt.Sprintf("replica %d to have a live leader", i), func() bool {
			_, alive := groups[i].LiveLeader()
			return alive
		})
	}
}

// The leader of {a,b,c,d} appends b's removal, which reaches b alone, and
// is cut off before it commits. c and d cannot elect one of them: the old
// configuration's quorum needs b, and b refuses them (its log is longer).
// b can be elected, by c and d in the new configuration {a,c,d}: forced
// to campaign, it wins, commits its removal, and steps down, its raft
// still running (ShutdownOnRemove off); then c or d lead.
func TestReplicaHoldingItsOwnRemovalCanBeElected(t *testing.T) {
	// Raft sends a removed replica its removal on the way out, once, and
	// does not wait for it: now and then it does not arrive, and then
	// there is nothing to test. Each try is a fresh group.
	var faults *Faults
	var nodes []*tnode
	var groups []*Group
	for try := 1; ; try++ {
		var held bool
		faults, nodes, groups, held = groupWithAReplicaHoldingItsRemoval(t)
		if held {
			break
		}
		if try == 8 {
			t.Fatal("in 8 tries, raft never delivered a removed replica its removal")
		}
		t.Logf("try %d: b did not get its removal; again", try)
	}
	faults.Isolate(nodes[0].addr)
	for _, i := range []int{2, 3} {
		if groups[i].RemovalPending() {
			t.Fatalf("replica %d holds a removal it cannot have received", i)
		}
	}
	// c cannot win: b refuses it, and a is gone.
	term := groups[2].Raft().CurrentTerm()
	if err := groups[2].ForceElection(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "c to campaign", func() bool { return groups[2].Raft().CurrentTerm() > term })
	time.Sleep(500 * time.Millisecond)
	if st := groups[2].Raft().State(); st == raft.Leader {
		t.Fatal("c won an election that b's longer log should have refused it")
	}
	if err := groups[1].ForceElection(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "b's removal to commit at c", func() bool {
		f := groups[2].Raft().GetConfiguration()
		if f.Error() != nil {
			return false
		}
		for _, s := range f.Configuration().Servers {
			if s.ID == nodes[1].id {
				return false
			}
		}
		return groups[2].Raft().CommitIndex() >= f.Index()
	})
	waitFor(t, 5*time.Second, "b to step down, still running", func() bool { return groups[1].Raft().State() == raft.Follower })
	for _, i := range []int{2, 3} {
		if err := groups[i].ForceElection(context.Background()); err != nil {
			t.Fatal(err)
		}
		if li := leaderIndex(t, groups, 0, 10*time.Second); li == 2 || li == 3 {
			return
		}
	}
	t.Fatal("neither c nor d leads the group without b")
}

// groupWithAReplicaHoldingItsRemoval starts a group of four, {a,b,c,d},
// led by a, cuts a off from c and d, and has a remove b: the removal
// reaches b alone and cannot commit. held reports whether b got it
// within 3 s.
func groupWithAReplicaHoldingItsRemoval(t *testing.T) (faults *Faults, nodes []*tnode, groups []*Group, held bool) {
	t.Helper()
	faults = &Faults{}
	nodes = make([]*tnode, 4)
	for i := range nodes {
		// Without pipelines raft's last append to b is a call of its own,
		// which a pipeline closed right after it cannot drop.
		nodes[i] = newTNode(t, string(rune('a'+i)), faults, func(c *TransportConfig) { c.NoPipelines = true })
	}
	groups = startAll(t, nodes, 1, QuietTiming)
	if err := groups[0].ForceElection(context.Background()); err != nil {
		t.Fatal(err)
	}
	if li := leaderIndex(t, groups, -1, 3*time.Second); li != 0 {
		t.Fatalf("replica %d leads after the first replica forced an election", li)
	}
	if err := groups[0].Raft().Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	faults.Partition(nodes[0].addr, nodes[2].addr)
	faults.Partition(nodes[0].addr, nodes[3].addr)
	groups[0].Raft().RemoveServer(nodes[1].id, 0, 0) // cannot commit: c and d are cut off
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if groups[1].RemovalPending() {
			return faults, nodes, groups, true
		}
	}
	faults.Isolate(nodes[0].addr) // leaves the group stuck, not committing b's removal
	return faults, nodes, groups, false
}

// Two voters of three that campaign in one term, each with its own vote,
// and the third cut off: no one can win that term, and raft has each wait
// out ElectionTimeout (30–60 s with QuietTiming) before it campaigns
// again. ForceElection on a candidate starts its election afresh, a term
// up, which the other candidate grants.
func TestForceElectionRestartsAStuckCampaign(t *testing.T) {
	faults, nodes, groups := quietGroupLedByFirst(t)
	term := groups[0].Raft().CurrentTerm()
	// Both followers hold the leader's entries (either can win), then the
	// leader is cut off, and the two followers from each other.
	if err := groups[0].Raft().Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the followers to hold the barrier", func() bool {
		last := groups[0].Raft().LastIndex()
		return groups[1].Raft().LastIndex() == last && groups[2].Raft().LastIndex() == last
	})
	faults.Isolate(nodes[0].addr)
	faults.Partition(nodes[1].addr, nodes[2].addr)
	for _, i := range []int{1, 2} {
		if err := groups[i].ForceElection(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []int{1, 2} {
		waitFor(t, 3*time.Second, fmt.Sprintf("replica %d campaigning", i), func() bool {
			return groups[i].Raft().State() == raft.Candidate && groups[i].Raft().CurrentTerm() == term+1
		})
	}
	time.Sleep(100 * time.Millisecond) // their vote requests fail
	faults.Heal()
	faults.Isolate(nodes[0].addr)
	if err := groups[1].ForceElection(context.Background()); err != nil {
		t.Fatal(err)
	}
	if li := leaderIndex(t, groups, 0, 5*time.Second); li != 1 {
		t.Fatalf("replica %d leads after replica 1 started its campaign afresh", li)
	}
	if got := groups[1].Raft().CurrentTerm(); got <= term+1 {
		t.Fatalf("the new leader's term is %d, want more than the stuck campaigns' %d", got, term+1)
	}
	waitFor(t, 5*time.Second, "the other candidate to follow the new leader", func() bool {
		leader, _ := groups[2].Raft().LeaderWithID()
		return groups[2].Raft().State() == raft.Follower && leader == nodes[1].addr
	})
}

// quietGroupLedByFirst starts group 1 on three nodes sharing one fault
// injector, with QuietTiming, and has the first replica lead it.
func quietGroupLedByFirst(t *testing.T) (*Faults, []*tnode, []*Group) {
	t.Helper()
	faults := &Faults{}
	nodes := make([]*tnode, 3)
	for i := range nodes {
		nodes[i] = newTNode(t, string(rune('a'+i)), faults)
	}
	groups := startAll(t, nodes, 1, QuietTiming)
	if err := groups[0].ForceElection(context.Background()); err != nil {
		t.Fatal(err)
	}
	if li := leaderIndex(t, groups, -1, 3*time.Second); li != 0 {
		t.Fatalf("replica %d leads after the first replica forced an election", li)
	}
	return faults, nodes, groups
}

// waitLeaderAliveToFollowers waits until the replicas after the first
// count the first, their leader, as alive.
func waitLeaderAliveToFollowers(t *testing.T, groups []*Group) {
	t.Helper()
	for _, f := range groups[1:] {
		waitFor(t, 3*time.Second, "the leader alive to a follower", func() bool {
			_, alive := f.LiveLeader()
			return alive
		})
	}
}

// LostWithin: a peer reported lost counts as lost for the window given,
// until it is heard again; one never reported is not, heard or not.
func TestLostWithin(t *testing.T) {
	reported := make(chan raft.ServerAddress, 4)
	tr := NewTransport(TransportConfig{LocalAddr: "self", PeerLost: func(a raft.ServerAddress, _ error) { reported <- a }})
	defer tr.Close()
	const window = time.Minute
	if tr.LostWithin("a", window) || tr.LostWithin("b", window) {
		t.Fatal("a peer never reported lost counts as lost")
	}
	tr.reportLost("a", ErrPeerSilent)
	if got := <-reported; got != "a" {
		t.Fatalf("PeerLost told of %q", got)
	}
	if !tr.LostWithin("a", window) || tr.LostWithin("b", window) {
		t.Fatalf("after a's loss: a lost %v, b lost %v; want true, false", tr.LostWithin("a", window), tr.LostWithin("b", window))
	}
	if tr.LostWithin("a", time.Nanosecond) {
		t.Fatal("a loss older than the window still counts")
	}
	tr.MarkHeard("a")
	if tr.LostWithin("a", window) {
		t.Fatal("a peer heard again after its loss still counts as lost")
	}
}

// A heartbeat stream that does not name its sender (no peer's transport
// opened it) is refused: before, its end reported a peer "" lost, which
// the node logged as a lost peer.
func TestAnonymousHeartbeatStreamIsRefused(t *testing.T) {
	lost := make(lostRecorder, 4)
	tr := NewTransport(TransportConfig{LocalAddr: "127.0.0.1:1", SilenceTimeout: -1, PeerLost: func(a raft.ServerAddress, _ error) { lost <- [2]raft.ServerAddress{"", a} }})
	t.Cleanup(func() { _ = tr.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := (&transportServer{t: tr}).Heartbeats(&dyingCaller{ctx: ctx, cancel: cancel})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an anonymous heartbeat stream ended with %v, want InvalidArgument", err)
	}
	select {
	case l := <-lost:
		t.Fatalf("an anonymous heartbeat stream reported peer %q lost", l[1])
	default:
	}
}

// A call of this node's that could not reach a peer makes it unreachable
// for the silence limit, unless a call reaches it meanwhile: the
// evidence a node has of a peer it pings not, whose own pings it hears
// (a one-way partition).
func TestMarkUnreachable(t *testing.T) {
	const silence = 300 * time.Millisecond
	tr := NewTransport(TransportConfig{LocalAddr: "127.0.0.1:1", SilenceTimeout: silence})
	t.Cleanup(func() { _ = tr.Close() })
	const peer = "127.0.0.1:2"
	if !tr.PeerReachable(peer) {
		t.Fatal("a peer nothing is known of is unreachable")
	}
	tr.MarkUnreachable(peer)
	if tr.PeerReachable(peer) {
		t.Fatal("a peer a call could not reach is reachable")
	}
	tr.MarkHeard(peer) // a later call reached it
	if !tr.PeerReachable(peer) {
		t.Fatal("a peer a call reached since is unreachable")
	}
	tr.MarkUnreachable(peer)
	time.Sleep(silence + 50*time.Millisecond)
	if !tr.PeerReachable(peer) {
		t.Fatalf("a peer last found unreachable %s ago, past the silence limit, is still unreachable", silence)
	}
	tr.MarkUnreachable(tr.local)
	if !tr.PeerReachable(tr.local) {
		t.Fatal("this node is unreachable to itself")
	}
}

// A follower that was cut off while its idle group committed learns the
// commit as soon as it is reachable again: its leader publishes its
// commits to a peer whose heartbeat stream answers again after failing.
// Before, it learned it from the next AppendEntries, 30–60 s later with
// QuietTiming (found by QA: a restarted node's replicas lagged up to 58 s,
// and leadership transfers to them were refused meanwhile). The leader's
// stream to the follower may have broken in the partition, or never have
// opened: a leader elected while the follower was away has never reached
// it (that case failed three runs in eight until its first answer
// published the commits too).
func TestReturningFollowerLearnsCommitsAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name         string
		streamOpened bool // the leader reached the follower before the partition
	}{
		{"its stream broke", true},
		{"it had no stream yet", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			faults := &Faults{}
			nodes := make([]*tnode, 3)
			for i := range nodes {
				nodes[i] = newTNode(t, string(rune('a'+i)), faults)
			}
			away := nodes[2]
			if !tc.streamOpened {
				faults.Partition(nodes[0].addr, away.addr)
			}
			groups := startAll(t, nodes, 1, QuietTiming)
			if err := groups[0].ForceElection(context.Background()); err != nil {
				t.Fatal(err)
			}
			if li := leaderIndex(t, groups, -1, 3*time.Second); li != 0 {
				t.Fatalf("replica %d leads after the first replica forced an election", li)
			}
			if tc.streamOpened {
				waitFor(t, 3*time.Second, "the leader's heartbeat stream to the follower", func() bool {
					b, err := nodes[0].tr.batcher(away.addr)
					return err == nil && b.streams.Load() > 0
				})
				faults.Partition(nodes[0].addr, away.addr)
			}
			for v := uint64(1); v <= 5; v++ {
				if err := applyAtLeader(groups, Entry{Batches: []ObjectBatch{batch(oid(1), v, put("n", fmt.Sprint(v)))}}, 5*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			// Long enough for the leader's liveness pings (every 300 ms)
			// to the cut-off node to fail.
			time.Sleep(2 * time.Second)
			faults.Heal()
			healed := time.Now()
			want := groups[0].Raft().AppliedIndex()
			waitFor(t, 10*time.Second, "the returning follower to apply what was committed while it was away", func() bool {
				return groups[2].Raft().AppliedIndex() >= want
			})
			t.Logf("the returning follower applied index %d %v after the partition healed", want, time.Since(healed).Round(10*time.Millisecond))
		})
	}
}
