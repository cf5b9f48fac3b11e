package raftstore

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/roostdb/roost/proto"
)

// Quiet groups and node liveness (docs/raftstore.md).
//
// hashicorp/raft detects a dead leader per group: every leader heartbeats
// each follower every HeartbeatTimeout/10, and a follower that hears
// nothing for HeartbeatTimeout campaigns. At 64 groups a node that is the
// cheap half of the cost, and fast failover (500 ms timeouts) costs an idle
// three-node cluster about half a core. QuietTiming gives groups long
// timeouts instead, so an idle group heartbeats every few seconds, and
// failures are detected per pair of nodes: a node pings every peer that
// follows one of its groups (transport_heartbeat.go), and a peer whose
// stream breaks or goes silent is not alive (Transport.PeerAlive).
//
// The long lease would let a leader cut off from its followers go on
// believing it leads for seconds after the others elected a new one.
// Group.QuorumReachable tells its node sooner, from the same pings, so that
// it stops serving (node/fence.go).
//
// A follower whose leader is not alive to it does not wait out the long
// timeout. The node asks the group's other voters (LeaderCheck) whether
// they still have a live leader; when a quorum of voters, itself counted,
// has none, one of them forces an election at once (Group.ForceElection:
// raft's TimeoutNow, the leadership-transfer election, which voters grant
// although they still name a leader). A voter that still hears its leader
// refuses, so a follower cut off from a live leader alone cannot unseat it,
// and elections stay Raft's: forcing one is never unsafe, only disruptive.
// Which voter forces, and when, is the caller's choice (node/elect.go).

// QuietHeartbeatTimeout is the heartbeat and election timeout of
// QuietTiming: an idle leader heartbeats each follower every 3–6 s.
const QuietHeartbeatTimeout = 30 * time.Second

// QuietLeaderLease is QuietTiming's LeaderLeaseTimeout: it must exceed the
// longest gap between two heartbeats (a fifth of QuietHeartbeatTimeout)
// plus the batching window, with room for a busy machine.
const QuietLeaderLease = 10 * time.Second

// QuietHeartbeatWindow is the TransportConfig.HeartbeatWindow to use with
// QuietTiming: the liveness interval, so that an idle node sends each peer
// one message per interval, its groups' heartbeats riding on the ping.
const QuietHeartbeatWindow = DefaultLivenessInterval

// QuietTiming is a GroupConfig.Tune for groups whose failures are detected
// by node liveness. The lease must cover a heartbeat interval (at most a
// fifth of the heartbeat timeout) and the batching window; a leader cut off
// from its followers steps down after it. Reads do not rely on the lease
// (they verify leadership with a round of heartbeats).
func QuietTiming(c *raft.Config) {
	c.HeartbeatTimeout = QuietHeartbeatTimeout
	c.ElectionTimeout = QuietHeartbeatTimeout
	c.LeaderLeaseTimeout = QuietLeaderLease
	c.CommitTimeout = QuietHeartbeatTimeout
}

// PublishCommits makes the group's followers learn soon that what its
// leader has committed so far is committed. A follower learns the commit
// index from the leader's next AppendEntries, which with QuietTiming's long
// CommitTimeout may be 30–60 s away when nothing else is written; PublishCommits
// appends a barrier entry, whose replication carries the commit index at
// once. Call it on the leader after a write that followers must apply
// promptly (the meta group's map, which every node acts on).
func PublishCommits(r *raft.Raft) {
	_ = r.Barrier(0) // the future is not needed: replicating the entry is the point
}

// PublishCommitsAfter is PublishCommits once f (a configuration change,
// say) has committed, for callers that do not wait for it. The followers,
// a replica just added among them, learn at once that f committed: the
// steps of a rebalance or drain wait on that, and without it each waited
// for the next AppendEntries (a drain of 51 moves over a loaded four-node
// cluster took 86 s instead of 7 s). It waits on f itself, and a raft
// future allows one waiter: the caller must not wait on f too. The
// goroutine ends when f does, at the latest when the group shuts down.
func PublishCommitsAfter(r *raft.Raft, f raft.Future) {
	go func() {
		if f.Error() == nil {
			PublishCommits(r)
		}
	}()
}

// publishCommitsTo has every group led here that has target among its
// servers publish its commits (PublishCommits). A follower learns the
// commit index only from its leader's AppendEntries, which for an idle
// group with QuietTiming come every 30–60 s: a replica that was away — its
// node restarted — lagged that long, and a leadership transfer to it was
// refused meanwhile (found by QA: up to 58 s).
func (t *Transport) publishCommitsTo(target raft.ServerAddress) {
	for _, v := range *t.groups.Load() {
		r := v.raft.Load()
		if r == nil || r.State() != raft.Leader {
			continue
		}
		f := r.GetConfiguration()
		if f.Error() != nil {
			continue
		}
		for _, srv := range f.Configuration().Servers {
			if srv.Address == target {
				PublishCommits(r)
				break
			}
		}
	}
}

// peerLiveness is what the transport's server has seen of a peer. Every
// request marks it, so its fields are atomics read and written under
// livenessMu's read lock.
type peerLiveness struct {
	heard   atomic.Int64 // unix nanoseconds of the last request or heartbeat batch (pings included)
	broken  atomic.Int64 // unix nanoseconds when the heartbeat stream broke, 0 if something came since
	pinging atomic.Int32 // heartbeat streams from the peer now open: it pings this node
	lost    atomic.Int64 // unix nanoseconds when the peer was last reported lost (PeerLost), 0 if never
	// unreachable: unix nanoseconds of the last call of this node's that
	// could not reach the peer (MarkUnreachable), 0 once one reached it.
	unreachable atomic.Int64
}

// peerState is addr's liveness record, made on first use.
func (t *Transport) peerState(addr raft.ServerAddress) *peerLiveness {
	l := t.livenessRecord(addr)
	if l != nil {
		return l
	}
	t.livenessMu.Lock()
	defer t.livenessMu.Unlock()
	if l = t.liveness[addr]; l == nil {
		l = new(peerLiveness)
		// The caller's address comes from its request metadata: a client
		// making up addresses must not grow the map without bound. At
		// maxTrackedPeers the records of peers silent past the silence
		// limit go (a real peer that comes back is tracked anew); if none
		// is, a new address is tracked nowhere (never alive) until some are.
		if len(t.liveness) >= maxTrackedPeers {
			t.forgetSilentPeersLocked()
		}
		if len(t.liveness) < maxTrackedPeers {
			t.liveness[addr] = l
		}
	}
	return l
}

// forgetSilentPeersLocked drops the records of peers that are not alive
// and do not ping this node. The caller holds livenessMu.
func (t *Transport) forgetSilentPeersLocked() {
	limit := t.silenceLimit()
	now := time.Now()
	for addr, l := range t.liveness {
		if l.pinging.Load() == 0 && now.Sub(time.Unix(0, l.heard.Load())) > limit {
			delete(t.liveness, addr)
		}
	}
}

// maxTrackedPeers bounds the peers whose liveness a transport records; a
// cluster has far fewer nodes.
const maxTrackedPeers = 4096

// MarkHeard counts addr's node as heard from now: something other than
// the transport heard it answer (the node's forwarded calls, say). It
// keeps PeerAlive true, and a silent heartbeat stream from that node
// unreported (silenceWatch), for SilenceTimeout from now; and as an
// answer to a call of this node's, it ends a MarkUnreachable.
func (t *Transport) MarkHeard(addr raft.ServerAddress) { t.markAnswered(addr) }

// MarkUnreachable records that a call of this node's (a forwarded
// request, say) could not reach addr's node: PeerReachable is false for
// the silence limit from now, unless a call of this node's reaches it
// meanwhile (MarkHeard, an answered ping or LeaderCheck).
//
// It is what tells a follower that its leader cannot be reached when
// nothing else would: a node whose incoming connections are dropped while
// its own get through (a one-way partition) pings the nodes that follow
// the groups it leads, and is heard; when those nodes lead nothing it
// follows, they ping it not, and without this counted it reachable for
// want of evidence while every request they forwarded it failed.
func (t *Transport) MarkUnreachable(addr raft.ServerAddress) {
	if addr == t.local {
		return
	}
	t.peerState(addr).unreachable.Store(time.Now().UnixNano())
}

// markAnswered is markHeard for an answer to a call this node made.
func (t *Transport) markAnswered(addr raft.ServerAddress) {
	if l := t.markHeard(addr); l.unreachable.Load() != 0 {
		l.unreachable.Store(0)
	}
}

// markHeard records addr heard now, and returns its liveness record.
func (t *Transport) markHeard(addr raft.ServerAddress) *peerLiveness {
	l := t.peerState(addr)
	l.heard.Store(time.Now().UnixNano())
	l.broken.Store(0)
	return l
}

func (t *Transport) markBroken(addr raft.ServerAddress) {
	t.peerState(addr).broken.Store(time.Now().UnixNano())
}

// LostWithin reports whether this transport reported addr's node lost
// (TransportConfig.PeerLost) less than d ago and has not heard it since:
// a peer to pass over rather than send to. A peer never reported lost is
// not, alive or not (PeerAlive is false for a peer that pings no one here).
func (t *Transport) LostWithin(addr raft.ServerAddress, d time.Duration) bool {
	if time.Since(time.Unix(0, t.lastLoss.Load())) >= d {
		return false // the common case: no loss lately, no lookup
	}
	l := t.livenessRecord(addr)
	if l == nil {
		return false
	}
	at := l.lost.Load()
	return at != 0 && time.Since(time.Unix(0, at)) < d && !t.PeerAlive(addr)
}

// reportLost records addr's node lost and tells PeerLost, if set.
func (t *Transport) reportLost(addr raft.ServerAddress, why error) {
	now := time.Now().UnixNano()
	t.peerState(addr).lost.Store(now)
	t.lastLoss.Store(now)
	if t.lost != nil {
		go t.lost(addr, why)
	}
}

// PeerAlive reports whether addr's node is alive to this one: a request or
// heartbeat batch came from it within SilenceTimeout (or, with silence
// detection off, the transport timeout) and its heartbeat stream has not
// broken since. A peer never heard from is not alive: only a node that
// leads a group this node follows pings it.
func (t *Transport) PeerAlive(addr raft.ServerAddress) bool {
	if addr == t.local {
		return true
	}
	l := t.livenessRecord(addr)
	return l != nil && l.broken.Load() == 0 && time.Since(time.Unix(0, l.heard.Load())) <= t.silenceLimit()
}

// silenceLimit is how long a peer may go unheard and still count as there:
// SilenceTimeout, or with silence detection off, the transport timeout.
func (t *Transport) silenceLimit() time.Duration {
	if t.silence > 0 {
		return t.silence
	}
	return t.timeout
}

// livenessRecord is what the server has seen of addr, nil if nothing.
func (t *Transport) livenessRecord(addr raft.ServerAddress) *peerLiveness {
	t.livenessMu.RLock()
	defer t.livenessMu.RUnlock()
	return t.liveness[addr]
}

// pinging reports whether this node pings addr's node (it leads a group
// that node follows), so that PeerReachable says more of it than that
// nothing is known.
func (t *Transport) pinging(addr raft.ServerAddress) bool {
	t.mu.RLock()
	b := t.batchers[addr]
	t.mu.RUnlock()
	return b != nil && !b.isResting()
}

// PeerReachable reports whether this node's leaders can count on addr's
// node: the pings this node sends it were answered within SilenceTimeout
// (or, with silence detection off, the transport timeout), its heartbeat
// stream to this node did not break (or this node's pings were answered
// since: a peer that restarted and leads nothing here opens no new
// stream), and, while it pings this node, its pings keep coming. A peer that ended its pings cleanly (it leads
// nothing this node follows any more) is judged by the answers alone, and
// one this node has never pinged is reachable as far as anyone knows —
// unless a call of this node's failed to reach it lately
// (MarkUnreachable) and none has reached it since.
// Group.QuorumReachable counts it; a leader cut off from a quorum stops
// serving long before raft's lease would step it down (node/fence.go).
func (t *Transport) PeerReachable(addr raft.ServerAddress) bool {
	if addr == t.local {
		return true
	}
	limit := t.silenceLimit()
	now := time.Now()
	t.mu.RLock()
	b := t.batchers[addr]
	t.mu.RUnlock()
	if b != nil && !b.isResting() && now.Sub(time.Unix(0, b.answered.Load())) > limit {
		return false
	}
	l := t.livenessRecord(addr)
	switch {
	case l == nil:
		return true
	case l.broken.Load() != 0 && (b == nil || b.reallyAnswered.Load() <= l.broken.Load()):
		return false
	case unreachableLately(l.unreachable.Load(), now, limit) && (b == nil || b.reallyAnswered.Load() <= l.unreachable.Load()):
		return false
	case l.pinging.Load() > 0:
		return now.Sub(time.Unix(0, l.heard.Load())) <= limit
	default: // it ended its pings cleanly, or never pinged: they say nothing
		return true
	}
}

// unreachableLately reports whether at, a MarkUnreachable time (0: none),
// is within limit of now.
func unreachableLately(at int64, now time.Time, limit time.Duration) bool {
	return at != 0 && now.Sub(time.Unix(0, at)) <= limit
}

// attach gives the view its group's raft and heartbeat timeout, for
// LeaderCheck.
func (v *groupTransport) attach(r *raft.Raft, heartbeatTimeout time.Duration) {
	v.heartbeatTimeout.Store(int64(heartbeatTimeout))
	v.raft.Store(r)
}

// leaderView is whom this replica follows and whether that leader is
// alive to this node: its node is alive, and it has heartbeated this
// replica lately. A leader that stepped down on a node that stays alive
// (its lease ran out while the node was paused, say) names no successor;
// its followers would keep naming it until raft's own timeout, 15–30 s
// with QuietTiming, so silence of the group itself counts too.
func (v *groupTransport) leaderView() (raft.ServerAddress, bool) {
	r := v.raft.Load()
	if r == nil {
		return "", false
	}
	if r.State() == raft.Leader {
		return v.t.local, true
	}
	leader, _ := r.LeaderWithID()
	// PeerReachable too: a leader that reaches this node over connections
	// it opened, while the ones this node opens to it go unanswered (a
	// firewall that drops only inbound connections), heartbeats as usual
	// but can be forwarded no request from here.
	return leader, leader != "" && v.t.PeerAlive(leader) && v.t.PeerReachable(leader) && time.Since(r.LastContact()) <= v.leaderSilence()
}

// leaderSilence is how long a follower may go without a heartbeat or
// append from its leader before it counts the leader as gone: the longest
// gap between two heartbeats (a fifth of the heartbeat timeout), the
// batching window, and a second to spare for a busy machine.
func (v *groupTransport) leaderSilence() time.Duration {
	return time.Duration(v.heartbeatTimeout.Load())/5 + time.Duration(v.t.window.Load()) + time.Second
}

func (s *transportServer) LeaderCheck(ctx context.Context, req *pb.RaftLeaderCheckRequest) (*pb.RaftLeaderCheckResponse, error) {
	v, err := s.group(ctx, req.GroupId)
	if err != nil {
		return nil, err
	}
	leader, alive := v.leaderView()
	switch {
	case leader == v.t.local:
		v.heartbeatNow()
	case alive && !v.t.pinging(leader):
		// leaderView counts the leader reachable because this node sends
		// it nothing to tell otherwise. The asker may have found that it
		// cannot reach the leader: see whether this node can.
		pctx, cancel := context.WithTimeout(ctx, reachabilityProbeTimeout)
		_, _, err := v.leaderCheck(pctx, leader)
		cancel()
		alive = err == nil
	}
	return &pb.RaftLeaderCheckResponse{Leader: string(leader), LeaderAlive: alive}, nil
}

// reachabilityProbeTimeout bounds LeaderCheck's own call to the leader it
// names: well within the elector's leaderCheckTimeout (500 ms).
const reachabilityProbeTimeout = 250 * time.Millisecond

// heartbeatNow makes the group's leader heartbeat its followers at once,
// for a follower that asked whom it follows (LeaderCheck): one that knows
// no leader (it just restarted, say) waits for a heartbeat to learn it,
// and QuietTiming's come every 1.5–3 s. A leadership check sends them, and
// a follower asks at most every few seconds.
func (v *groupTransport) heartbeatNow() {
	r := v.raft.Load()
	if r == nil {
		return
	}
	f := v.verifyLeader(r)
	go func() { _ = f.Error() }() // resolves, at the latest when raft shuts down
}

// leaderCheck asks target's replica of the group for its leaderView.
func (v *groupTransport) leaderCheck(ctx context.Context, target raft.ServerAddress) (raft.ServerAddress, bool, error) {
	c, cctx, cancel, err := v.client(target, v.t.timeout)
	if err != nil {
		return "", false, err
	}
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	out, err := c.LeaderCheck(cctx, &pb.RaftLeaderCheckRequest{GroupId: uint64(v.id)})
	if err != nil {
		return "", false, err
	}
	// An answer to a call this node made is word from target: a node
	// that only reaches its peers over connections it opens itself (the
	// others cannot open any to it) hears them by nothing else once it
	// leads nothing, and would pass over every one of them.
	v.t.markAnswered(target)
	return raft.ServerAddress(out.Leader), out.LeaderAlive, nil
}

// livenessTransport is the part of groupTransport the liveness methods of
// Group need; other transports (raft's in-memory one, in dev mode) have
// no node liveness.
type livenessTransport interface {
	leaderView() (raft.ServerAddress, bool)
	leaderCheck(ctx context.Context, target raft.ServerAddress) (raft.ServerAddress, bool, error)
	forceElection(ctx context.Context, local raft.ServerID) error
	voteForSelf(ctx context.Context, local raft.ServerID) error
	peerReachable(addr raft.ServerAddress) bool
	newerTermHeard() uint64
}

// newerTermHeard is the highest term a follower answered this replica's
// heartbeats with that was newer than the replica's own, 0 if none.
func (v *groupTransport) newerTermHeard() uint64 { return v.newerTerm.Load() }

var _ livenessTransport = (*groupTransport)(nil)

// voteForSelf hands this replica's raft a vote request from itself for the
// term after its own (Group.recampaign): it becomes a follower of that term
// that voted for itself.
func (v *groupTransport) voteForSelf(ctx context.Context, local raft.ServerID) error {
	r := v.raft.Load()
	if r == nil {
		return fmt.Errorf("%w: group %s has not started", ErrInvalidConfig, v.id)
	}
	// Raft compares the request's last entry with its own, the snapshot's
	// if the log holds nothing after it.
	st := r.Stats()
	num := func(k string) uint64 { n, _ := strconv.ParseUint(st[k], 10, 64); return n }
	lastIndex, lastTerm := num("last_log_index"), num("last_log_term")
	if si := num("last_snapshot_index"); si > lastIndex {
		lastIndex, lastTerm = si, num("last_snapshot_term")
	}
	req := &raft.RequestVoteRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(local), Addr: []byte(v.t.local)},
		Term:      num("term") + 1, LastLogIndex: lastIndex, LastLogTerm: lastTerm,
	}
	resp, err := answer[*raft.RequestVoteResponse](v.dispatch(ctx, req, nil, false, true))
	if err != nil {
		return err
	}
	if !resp.Granted {
		return fmt.Errorf("raftstore: group %s: the candidate refused its own vote request for term %d (its term is %d)", v.id, req.Term, resp.Term)
	}
	return nil
}

// forceElection hands this replica's raft a TimeoutNow, as a leader
// transferring its leadership would.
func (v *groupTransport) forceElection(ctx context.Context, local raft.ServerID) error {
	req := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{
		ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(local), Addr: []byte(v.t.local),
	}}
	_, err := answer[*raft.TimeoutNowResponse](v.dispatch(ctx, req, nil, false, true))
	return err
}

func (v *groupTransport) peerReachable(addr raft.ServerAddress) bool { return v.t.PeerReachable(addr) }

// State is the replica's raft state.
func (g *Group) State() raft.RaftState { return g.raft.State() }

// Voters returns the voters of the group's latest configuration.
func (g *Group) Voters() ([]raft.Server, error) {
	f := g.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var voters []raft.Server
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, s)
		}
	}
	return voters, nil
}

// RemovalPending reports whether the replica's latest configuration
// leaves it out while it has not seen that configuration commit. A
// removed replica learns no commit index past its removal (the leader
// stops replicating to it), so this holds after every removal until the
// node stops the replica; what matters is the case it cannot tell apart:
// the leader that appended the removal died before it committed, and this
// replica's log alone holds it. The other voters, still counting this
// one, cannot elect one of them then (it refuses them: its log is
// longer), but this one can be elected by them in the new configuration,
// commit its removal and step down (node/elect.go).
func (g *Group) RemovalPending() bool {
	f := g.raft.GetConfiguration()
	if f.Error() != nil || len(f.Configuration().Servers) == 0 {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == g.local {
			return false
		}
	}
	// Raft tells no one its latest configuration's index: the log is read
	// back from its end to the commit index, a short way on a replica the
	// leader stopped replicating to.
	logs := g.s.LogStore(g.id)
	commit, last := g.raft.CommitIndex(), g.raft.LastIndex()
	for i := last; i > commit && last-i < maxRemovalScan; i-- {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			return false
		}
		if l.Type == raft.LogConfiguration {
			return true
		}
	}
	return false
}

// maxRemovalScan bounds RemovalPending's read of the log's uncommitted
// tail; a removal is among the last few entries a removed replica got.
const maxRemovalScan = 1024

// QuorumReachable reports whether a quorum of the group's voters, this
// replica counted, is reachable from this node (Transport.PeerReachable).
// It reads raft's latest configuration, which raft keeps in memory, and a
// few atomics per voter: cheap enough for a periodic check, not meant for
// the request path. A group whose transport has no node liveness always
// has its quorum.
func (g *Group) QuorumReachable() (bool, error) {
	lt, ok := g.trans.(livenessTransport)
	if !ok {
		return true, nil
	}
	voters, err := g.Voters()
	if err != nil {
		return false, err
	}
	reachable := 0
	for _, v := range voters {
		if lt.peerReachable(v.Address) {
			reachable++
		}
	}
	return reachable > len(voters)/2, nil
}

// LiveLeader is whom this replica follows (itself when it leads) and
// whether that leader is alive to this node. A group whose transport has
// no node liveness reports its leader as alive.
func (g *Group) LiveLeader() (raft.ServerAddress, bool) {
	lt, ok := g.trans.(livenessTransport)
	if !ok {
		leader, _ := g.raft.LeaderWithID()
		return leader, leader != ""
	}
	return lt.leaderView()
}

// CheckLeader asks the replica of this group at target whom it follows and
// whether that leader is alive to it.
func (g *Group) CheckLeader(ctx context.Context, target raft.ServerAddress) (leader raft.ServerAddress, alive bool, err error) {
	lt, err := g.needLiveness()
	if err != nil {
		return "", false, err
	}
	return lt.leaderCheck(ctx, target)
}

// needLiveness is the group's transport, for calls that cannot do without
// node liveness.
func (g *Group) needLiveness() (livenessTransport, error) {
	lt, ok := g.trans.(livenessTransport)
	if !ok {
		return nil, fmt.Errorf("%w: group %s has no node liveness", ErrInvalidConfig, g.id)
	}
	return lt, nil
}

// ForceElection makes this replica start an election at once, skipping
// pre-vote, with the leadership-transfer flag that makes voters grant their
// vote although they know a leader. Call it only when a quorum of voters
// has no live leader (see the comment at the top of this file).
//
// A candidate starts its election afresh, a term up. Raft would have it
// wait out ElectionTimeout first, 30–60 s with QuietTiming, and an election
// that cannot succeed (two voters of three campaigning in one term, each
// with its own vote; vote requests lost) left the group without a leader
// that long. Raft has no call for it, so the replica is handed a vote
// request from itself for the next term, which makes it a follower of that
// term having voted for itself (what campaigning in it would have done),
// and then the TimeoutNow that starts the election, in the term after.
func (g *Group) ForceElection(ctx context.Context) error {
	if g.raft.State() == raft.Candidate {
		return g.recampaign(ctx)
	}
	return g.electIn(ctx, raft.Follower)
}

// recampaign starts a candidate's election afresh (ForceElection).
func (g *Group) recampaign(ctx context.Context) error {
	lt, err := g.needLiveness()
	if err != nil {
		return err
	}
	if err := lt.voteForSelf(ctx, g.local); err != nil {
		return err
	}
	return g.electIn(ctx, raft.Follower)
}

// electIn starts an election at this replica (ForceElection, EndTransfer)
// if it is in state.
func (g *Group) electIn(ctx context.Context, state raft.RaftState) error {
	lt, err := g.needLiveness()
	if err != nil {
		return err
	}
	if g.raft.State() != state {
		return nil
	}
	return lt.forceElection(ctx, g.local)
}

// HeardNewerTerm reports whether a follower has answered this leader's
// heartbeats with a term newer than its own current one: another replica
// campaigned, and may have won. Raft's heartbeats ignore such answers, and
// the barrier the transport then appends to make the leader step down is
// refused while a leadership transfer runs (see EndTransfer). A group
// whose transport has no node liveness reports false.
func (g *Group) HeardNewerTerm() bool {
	lt, ok := g.trans.(livenessTransport)
	return ok && lt.newerTermHeard() > g.raft.CurrentTerm()
}

// EndTransfer ends a leadership transfer this leader started that has not
// completed, by starting an election here at once, as ForceElection does
// (raft's TimeoutNow, delivered to this replica). Raft ends a transfer
// only when its leader leaves leader state or after ElectionTimeout, and
// refuses every Apply meanwhile: a target that accepted the transfer's
// TimeoutNow and then lost the network leaves the group without writes for
// the whole ElectionTimeout, 30 s with QuietTiming. The election carries
// the leadership-transfer flag, so the voters grant it although they know
// this replica as their leader; it usually wins the leadership back within
// a round of vote requests, unless the target's election reaches them
// first. Like any election it is safe, only disruptive: call it only once
// the transfer has had its time. It does nothing on a replica that does
// not lead.
func (g *Group) EndTransfer(ctx context.Context) error {
	return g.electIn(ctx, raft.Leader)
}
