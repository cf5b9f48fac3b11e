package node

import (
	"cmp"
	"context"
	"encoding/binary"
	"hash/fnv"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
	"github.com/roostdb/roost/raftstore"
)

// Forced elections. Cluster groups run with raftstore.QuietTiming: a
// follower would wait 30–60 s to notice a dead leader. Instead the elector
// watches, every electIdle (every electCheck while a group waits) and at
// once when the transport reports a peer lost, each group this node runs
// as a follower voter. A group whose leader
// has not been alive to this node (raftstore's node liveness) for
// noLeaderGrace — or that has no leader at all, as at a cold start — gets a
// forced election from one of its voters: the voters alive in gossip,
// leader left out, are ranked in an order of their own for each group (so
// that the leaders chosen spread over the nodes) and the one ranked r acts after
// noLeaderGrace + r×rankDelay, so one forces and the next steps in if that
// one cannot win (a stale log, say). Acting is asking the other voters
// whether they still have a live leader (raftstore Group.CheckLeader) and
// forcing (Group.ForceElection) only when a quorum, this node counted, has
// none: a follower cut off from a leader the others still hear changes
// nothing. A replica that knows no leader at all asks the voters at once,
// whatever its rank: the leader heartbeats it when asked (ask).
//
// A replica still campaigning campaignGrace after this node first saw it
// campaign is in an election that cannot succeed (two voters campaigning
// in one term, each with its own vote; vote requests lost), which raft
// would have it wait out for ElectionTimeout, 30–60 s with QuietTiming.
// The same rule applies to it, its grace counted from campaignGrace, and
// ForceElection starts its election afresh a term up.
const (
	electIdle          = time.Second
	electCheck         = 100 * time.Millisecond
	noLeaderGrace      = 200 * time.Millisecond
	campaignGrace      = 3 * time.Second
	rankDelay          = time.Second
	forceEvery         = 2 * time.Second
	leaderCheckTimeout = 500 * time.Millisecond
)

// electedGroup is the part of raftstore.Group the elector uses.
type electedGroup interface {
	ID() raftstore.GroupID
	State() raft.RaftState
	Voters() ([]raft.Server, error)
	LiveLeader() (raft.ServerAddress, bool)
	CheckLeader(ctx context.Context, target raft.ServerAddress) (raft.ServerAddress, bool, error)
	ForceElection(ctx context.Context) error
	RemovalPending() bool
}

var _ electedGroup = (*raftstore.Group)(nil)

// elector forces elections in groups with no live leader. Its state is
// owned by run's goroutine.
type elector struct {
	self   placement.NodeID
	groups func() []electedGroup            // the groups this node runs
	alive  func() map[placement.NodeID]bool // nodes alive in gossip
	log    func(msg string, args ...any)
	kick   chan struct{}

	leaderless  map[raftstore.GroupID]time.Time // since when no live leader
	campaigning map[raftstore.GroupID]time.Time // since when a candidate
	forced      map[raftstore.GroupID]time.Time // last forced election
	asked       map[raftstore.GroupID]time.Time // last ask (without forcing) whom the voters follow

	// seenLeaderless is a copy of leaderless as of the last check, for
	// readers outside run's goroutine (readiness).
	seenLeaderless atomic.Pointer[map[raftstore.GroupID]time.Time]
}

// leaderlessSince reports since when the elector has seen group id of
// this node without a live leader; ok is false if its last check (at most
// electIdle ago, or since a peer was lost) found one.
func (e *elector) leaderlessSince(id raftstore.GroupID) (since time.Time, ok bool) {
	if m := e.seenLeaderless.Load(); m != nil {
		since, ok = (*m)[id]
	}
	return since, ok
}

func newElector(self placement.NodeID, groups func() []electedGroup, alive func() map[placement.NodeID]bool, log func(string, ...any)) *elector {
	return &elector{self: self, groups: groups, alive: alive, log: log, kick: make(chan struct{}, 1),
		leaderless: make(map[raftstore.GroupID]time.Time), forced: make(map[raftstore.GroupID]time.Time),
		asked: make(map[raftstore.GroupID]time.Time), campaigning: make(map[raftstore.GroupID]time.Time)}
}

// peerLost is the transport's PeerLost: look again now.
func (e *elector) peerLost() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

func (e *elector) run(ctx context.Context) {
	t := time.NewTimer(electIdle)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.kick:
		}
		if e.check(ctx, time.Now()) {
			t.Reset(electCheck)
		} else {
			t.Reset(electIdle)
		}
	}
}

// check looks at every group once and forces the elections that are due,
// concurrently (each waits for its leader checks). It reports whether a
// group is waiting for a live leader.
func (e *elector) check(ctx context.Context, now time.Time) (waiting bool) {
	seen := make(map[raftstore.GroupID]bool)
	var wg sync.WaitGroup
	// One log line per check, not per group: at a cold start every group
	// of the node forces an election at once.
	var forcedMu sync.Mutex
	var forced []raftstore.GroupID
	for _, g := range e.groups() {
		id := g.ID()
		seen[id] = true
		st := g.State()
		if st != raft.Follower && st != raft.Candidate {
			delete(e.leaderless, id)
			delete(e.campaigning, id)
			continue
		}
		leader, alive := g.LiveLeader()
		if alive {
			delete(e.leaderless, id)
			delete(e.campaigning, id)
			continue
		}
		since, ok := e.leaderless[id]
		if !ok {
			e.leaderless[id] = now
			since = now
		}
		if st == raft.Candidate {
			// Its election may yet succeed: give it campaignGrace before
			// the voters' turns to act, counted from then.
			began, ok := e.campaigning[id]
			if !ok {
				e.campaigning[id] = now
				began = now
			}
			if now.Sub(began) < campaignGrace {
				continue
			}
			since = began.Add(campaignGrace - noLeaderGrace)
		} else {
			delete(e.campaigning, id)
		}
		if now.Sub(e.forced[id]) < forceEvery {
			continue
		}
		voters, rank, ok := e.rank(g, leader)
		if !ok || now.Sub(since) < noLeaderGrace {
			continue
		}
		if now.Sub(since) >= noLeaderGrace+time.Duration(rank)*rankDelay {
			e.forced[id] = now
			wg.Add(1)
			go func() {
				defer wg.Done()
				if e.force(ctx, g, voters) {
					forcedMu.Lock()
					forced = append(forced, g.ID())
					forcedMu.Unlock()
				}
			}()
			continue
		}
		if leader == "" && now.Sub(e.asked[id]) >= forceEvery {
			// Not this node's turn to force, but a replica that knows no
			// leader at all (it just restarted, say) asks the other voters
			// whom they follow: a leader answers by heartbeating at once,
			// which tells this replica, instead of in 3–6 s.
			e.asked[id] = now
			wg.Add(1)
			go func() {
				defer wg.Done()
				e.ask(ctx, g, voters)
			}()
		}
	}
	wg.Wait()
	if len(forced) > 0 {
		slices.Sort(forced)
		ids := make([]string, len(forced))
		for i, id := range forced {
			ids[i] = id.String()
		}
		e.log("no live leader: forced elections", "groups", len(forced), "ids", strings.Join(ids, ","))
	}
	waiting = len(e.leaderless) > 0
	// Groups no longer run here are forgotten.
	for _, m := range []map[raftstore.GroupID]time.Time{e.leaderless, e.campaigning, e.forced, e.asked} {
		maps.DeleteFunc(m, func(id raftstore.GroupID, _ time.Time) bool { return !seen[id] })
	}
	published := maps.Clone(e.leaderless)
	e.seenLeaderless.Store(&published)
	return waiting
}

// rank returns the group's voters and this node's place among those that
// could win now (alive in gossip, not the leader it lost), in the group's
// order (electionOrder); ok is false when this node is not a voter. A
// replica holding its own removal, not yet committed, is ranked too
// (raftstore Group.RemovalPending): if the leader that appended it died,
// the voters of the old configuration cannot elect one of them without it
// (its log is longer), and it can be elected in the new one.
func (e *elector) rank(g electedGroup, leader raft.ServerAddress) ([]raft.Server, int, bool) {
	voters, err := g.Voters()
	if err != nil {
		return nil, 0, false
	}
	alive := e.alive()
	var ranked []placement.NodeID
	for _, s := range voters {
		id := placement.NodeID(s.ID)
		if id == e.self || alive[id] && s.Address != leader {
			ranked = append(ranked, id)
		}
	}
	if !slices.Contains(ranked, e.self) && g.RemovalPending() {
		ranked = append(ranked, e.self)
	}
	slices.SortFunc(ranked, func(a, b placement.NodeID) int {
		return cmp.Compare(electionOrder(g.ID(), a), electionOrder(g.ID(), b))
	})
	rank := slices.Index(ranked, e.self)
	return voters, rank, rank >= 0
}

// electionOrder orders a group's voters: a hash of the group and the node,
// so that every node computes the same order and groups put different
// nodes first.
func electionOrder(g raftstore.GroupID, node placement.NodeID) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(g))
	h.Write(b[:])
	h.Write([]byte(node))
	return h.Sum64()
}

// leaderAnswer is one voter's answer to a leader check.
type leaderAnswer struct {
	leader raft.ServerAddress
	alive  bool
	err    error
}

// checkVoters asks every other voter of g whom it follows, concurrently,
// until ctx ends; the answers come on the returned channel, which is
// buffered for all asked, so no check waits on it.
func (e *elector) checkVoters(ctx context.Context, g electedGroup, voters []raft.Server) (answers <-chan leaderAnswer, asked int) {
	ch := make(chan leaderAnswer, len(voters))
	for _, s := range voters {
		if placement.NodeID(s.ID) == e.self {
			continue
		}
		asked++
		go func() {
			leader, alive, err := g.CheckLeader(ctx, s.Address)
			ch <- leaderAnswer{leader, alive, err}
		}()
	}
	return ch, asked
}

// ask asks the other voters whom they follow and ignores the answers: the
// leader among them heartbeats this replica when asked.
func (e *elector) ask(ctx context.Context, g electedGroup, voters []raft.Server) {
	ctx, cancel := context.WithTimeout(ctx, leaderCheckTimeout)
	defer cancel()
	answers, asked := e.checkVoters(ctx, g, voters)
	for range asked {
		<-answers
	}
}

// force asks the other voters for their leader and forces an election when
// a quorum, this node counted, has no live one. It acts as soon as the
// answers make a quorum: a voter that does not answer (it is the node that
// froze, say) must not hold the election up until the check times out.
// It reports whether it forced one.
func (e *elector) force(ctx context.Context, g electedGroup, voters []raft.Server) bool {
	checkCtx, cancelChecks := context.WithTimeout(ctx, leaderCheckTimeout)
	defer cancelChecks() // ends the checks still waiting for an answer
	answers, asked := e.checkVoters(checkCtx, g, voters)
	quorum := len(voters)/2 + 1
	without := 0
	if slices.ContainsFunc(voters, func(s raft.Server) bool { return placement.NodeID(s.ID) == e.self }) {
		without = 1 // this node; one holding its own removal is no voter of the configuration asked about
	}
	for got := 0; got < asked && without < quorum; got++ {
		if a := <-answers; a.err == nil && !a.alive {
			without++
		}
	}
	if without < quorum {
		return false
	}
	if _, alive := g.LiveLeader(); alive { // a leader appeared meanwhile
		return false
	}
	forceCtx, cancel := context.WithTimeout(ctx, leaderCheckTimeout)
	defer cancel()
	if err := g.ForceElection(forceCtx); err != nil {
		e.log("forcing an election failed", "group", g.ID().String(), "err", err)
		return false
	}
	return true
}
