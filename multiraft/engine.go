package multiraft

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// GroupID names a Raft group. Every node that holds a replica of a group
// knows it by the same GroupID.
type GroupID uint64

func (g GroupID) String() string { return strconv.FormatUint(uint64(g), 10) }

// Command is one committed proposal as a StateMachine sees it.
type Command struct {
	// Index is the command's raft index.
	Index uint64
	// Data is what was proposed. It is valid only during Apply.
	Data []byte
}

// StateMachine is a group's replicated state. The engine calls it only
// from its loop, one call at a time, so an implementation needs no locks
// for calls from the engine; reads from elsewhere go to the database.
type StateMachine interface {
	// Apply applies one group's committed commands, in order, writing
	// their effects to b. The engine commits b, without a sync, together
	// with other groups' commands and this group's applied index: the
	// effects and the index land together or not at all. It returns one
	// result per command; the proposer on this node, if there is one,
	// receives it. An error stops the group (a state machine cannot skip
	// a command) until it is started again, which replays the log from
	// the last applied index.
	Apply(b *pebble.Batch, cmds []Command) ([]any, error)
	// Snapshot returns the group's state as of its last applied command,
	// for a peer too far behind to catch up from the log.
	Snapshot() ([]byte, error)
	// Restore replaces the group's whole state with data from Snapshot,
	// writing to b; the engine syncs b with the group's new log start.
	Restore(b *pebble.Batch, data []byte) error
}

// Envelope is one raft message of one group.
type Envelope struct {
	Group GroupID
	Msg   raftpb.Message
}

// Transport carries messages between engines.
type Transport interface {
	// Send hands msgs (every one to node to, of any groups) to the
	// transport. It must not block and may drop messages: raft sends
	// again what is not acknowledged. msgs is the transport's to keep.
	Send(to uint64, msgs []Envelope)
}

// GroupConfig says which group StartGroup starts.
type GroupConfig struct {
	ID           GroupID
	StateMachine StateMachine
	// Voters are the founding voters of a group that exists nowhere yet:
	// every founder starts it with the same Voters. They are ignored when
	// the group already has state on this node. Empty means this node
	// joins a group that exists: it waits to hear from the leader, who
	// must have added it to the configuration.
	Voters []uint64
}

// Engine runs Raft groups for one node (see the package doc).
type Engine struct {
	cfg    Config
	logger *slog.Logger

	inbox chan []Envelope
	props chan *proposal
	ops   chan func()
	stop  chan struct{} // closed by Close
	done  chan struct{} // closed when the loop has ended
	close sync.Once

	// nextID numbers proposals and reads. It starts at a random value so
	// that ids of a run never match those of entries a previous run left
	// in the log.
	nextID atomic.Uint64

	// groups is owned by the loop.
	groups map[GroupID]*group
}

// maxDrain bounds how much a round takes from the channels before it
// handles the groups' work, so that a flood of messages cannot starve
// the writes of what is already taken.
const maxDrain = 1024

// New starts an Engine with no groups.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		cfg:    cfg,
		logger: logger,
		inbox:  make(chan []Envelope, 256),
		props:  make(chan *proposal, 1024),
		ops:    make(chan func()),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		groups: make(map[GroupID]*group),
	}
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	e.nextID.Store(binary.BigEndian.Uint64(seed[:]))
	go e.run()
	return e, nil
}

// Close stops every group and the loop. Proposals in flight fail with an
// error that is both ErrLeadershipLost (their outcome is unknown) and
// ErrClosed. It does not close the database.
func (e *Engine) Close() {
	e.close.Do(func() { close(e.stop) })
	<-e.done
}

// Deliver hands messages received from other nodes to the loop. Messages
// of groups not running here are dropped.
func (e *Engine) Deliver(msgs []Envelope) {
	select {
	case e.inbox <- msgs:
	case <-e.stop:
	}
}

// ReportUnreachable tells every group that node to could not be reached,
// so that their leaders probe it instead of streaming appends to it.
func (e *Engine) ReportUnreachable(to uint64) {
	_ = e.do(func() {
		for _, g := range e.groups {
			g.rn.ReportUnreachable(to)
		}
	})
}

// do runs f in the loop and waits for it.
func (e *Engine) do(f func()) error {
	ran := make(chan struct{})
	select {
	case e.ops <- func() { f(); close(ran) }:
	case <-e.stop:
		return ErrClosed
	}
	<-ran
	return nil
}

// StartGroup starts a group on this node from what the node has stored of
// it, or as a founder or a joiner (GroupConfig.Voters) if nothing.
func (e *Engine) StartGroup(gc GroupConfig) (*Group, error) {
	if gc.StateMachine == nil {
		return nil, fmt.Errorf("%w: group %s has no StateMachine", ErrInvalidConfig, gc.ID)
	}
	var (
		h   *Group
		err error
	)
	if derr := e.do(func() { h, err = e.startGroup(gc) }); derr != nil {
		return nil, derr
	}
	return h, err
}

func (e *Engine) startGroup(gc GroupConfig) (*Group, error) {
	if _, ok := e.groups[gc.ID]; ok {
		return nil, fmt.Errorf("%w: %s", ErrGroupExists, gc.ID)
	}
	keys := keysOf(gc.ID)
	st, found, err := loadGroup(e.cfg.DB, keys)
	if err != nil {
		return nil, fmt.Errorf("multiraft: loading group %s: %w", gc.ID, err)
	}
	if !found && len(gc.Voters) > 0 {
		b := e.cfg.DB.NewBatch()
		defer b.Close()
		if err := writeBootstrap(b, keys, st, gc.Voters); err != nil {
			return nil, fmt.Errorf("multiraft: bootstrapping group %s: %w", gc.ID, err)
		}
		if err := b.Commit(pebble.Sync); err != nil {
			return nil, fmt.Errorf("multiraft: bootstrapping group %s: %w", gc.ID, err)
		}
	}
	rn, err := raft.NewRawNode(&raft.Config{
		ID:                        e.cfg.NodeID,
		ElectionTick:              e.cfg.ElectionTicks,
		HeartbeatTick:             e.cfg.HeartbeatTicks,
		Storage:                   st,
		Applied:                   st.applied,
		MaxSizePerMsg:             e.cfg.MaxMsgBytes,
		MaxInflightMsgs:           e.cfg.MaxInflightMsgs,
		MaxUncommittedEntriesSize: uint64(e.cfg.MaxEntryBytes) * 8,
		CheckQuorum:               true,
		PreVote:                   true,
		DisableProposalForwarding: true,
		StepDownOnRemoval:         true,
		Logger:                    raftLogger{e.logger.With("group", gc.ID.String())},
	})
	if err != nil {
		return nil, fmt.Errorf("multiraft: starting group %s: %w", gc.ID, err)
	}
	last, _ := st.LastIndex()
	g := &group{
		id:        gc.ID,
		keys:      keys,
		rn:        rn,
		st:        st,
		sm:        gc.StateMachine,
		waiters:   make(map[uint64]waiter),
		reads:     make(map[uint64]*readBatch),
		lastIndex: last,
		handle:    &Group{e: e, id: gc.ID},
	}
	g.handle.init()
	g.handle.applied.Store(st.applied)
	g.publish()
	e.groups[gc.ID] = g
	return g.handle, nil
}

// StopGroup stops a group on this node; its stored state stays. Its
// proposals in flight fail with ErrLeadershipLost, its reads with
// ErrNotLeader.
func (e *Engine) StopGroup(id GroupID) error {
	var err error
	if derr := e.do(func() {
		g, ok := e.groups[id]
		if !ok {
			err = fmt.Errorf("%w: %s", ErrNoGroup, id)
			return
		}
		g.stop(ErrLeadershipLost)
		delete(e.groups, id)
	}); derr != nil {
		return derr
	}
	return err
}

// run is the loop: it takes what is waiting, then handles the work of
// every group that has some, together.
func (e *Engine) run() {
	defer close(e.done)
	ticker := time.NewTicker(e.cfg.TickInterval)
	defer ticker.Stop()
	// held is armed while the groups' work waits for RoundInterval to pass
	// since the last shared synced round (see Config.RoundInterval).
	held := time.NewTimer(time.Hour)
	held.Stop()
	holding := false
	var lastShared time.Time // when the last synced round of several groups was
	for {
		select {
		case <-held.C:
			holding = false
		case <-e.stop:
			for _, g := range e.groups {
				g.stop(fmt.Errorf("%w (%w)", ErrLeadershipLost, ErrClosed))
			}
			return
		case <-ticker.C:
			for _, g := range e.groups {
				g.rn.Tick()
			}
		case msgs := <-e.inbox:
			e.step(msgs)
		case p := <-e.props:
			e.propose(p)
		case f := <-e.ops:
			f()
		}
	drain:
		for range maxDrain {
			select {
			case msgs := <-e.inbox:
				e.step(msgs)
			case p := <-e.props:
				e.propose(p)
			case f := <-e.ops:
				f()
			default:
				break drain
			}
		}
		if holding {
			continue
		}
		if wait := e.cfg.RoundInterval - time.Since(lastShared); wait > 0 {
			holding = true
			held.Reset(wait)
			continue
		}
		for _, g := range e.groups {
			g.askReads(e)
		}
		if synced, groups := e.handleReadies(); synced && groups > 1 {
			lastShared = time.Now()
		}
	}
}

func (e *Engine) step(msgs []Envelope) {
	for i := range msgs {
		g, ok := e.groups[msgs[i].Group]
		if !ok || g.failed != nil {
			continue
		}
		if err := g.rn.Step(msgs[i].Msg); err != nil {
			e.logger.Debug("multiraft: message not taken", "group", g.id.String(), "type", msgs[i].Msg.Type.String(), "from", msgs[i].Msg.From, "err", err)
		}
	}
}

// groupReady is one group's Ready in a round.
type groupReady struct {
	g  *group
	rd raft.Ready
}

// handleReadies does a round's work: every group's entries, hard state
// and snapshots in one batch (synced if raft needs it), then every
// group's messages (one Send a peer), then every group's committed
// entries in one batch, then Advance. It reports whether the round synced
// and how many groups' work it carried.
//
// When every group of the round is led here, the messages go out before
// the sync instead, so that followers write an entry while the leader
// does (the Raft thesis, section 10.2.1; etcd-io/raft's doc, "Usage",
// step 2; etcd's server does the same): a round's commit then waits for
// one sync, not two in a row. It is safe because a leader counts its own
// copy of an entry only when Advance tells raft it is stored, after the
// sync, and because what a leader sends does not rest on its unsynced
// hard state: its term and vote were synced before it could win, and a
// commit index may be learnt again. Other groups' messages (votes, append
// answers) promise what the node has stored, so they wait for the sync;
// a round with both sends after it, in one Send a peer, since a second
// Send costs more CPU than the overlap saves when the rounds carry many
// groups (TestPowerCutUnderLoad; docs/multiraft.md).
func (e *Engine) handleReadies() (synced bool, groups int) {
	var rds []groupReady
	b := e.cfg.DB.NewBatch()
	defer b.Close()
	mustSync, allLead := false, true
	for _, g := range e.groups {
		if g.failed != nil || !g.rn.HasReady() {
			continue
		}
		rd := g.rn.Ready()
		if err := g.persist(e.cfg.DB, b, &rd); err != nil {
			g.fail(e, fmt.Errorf("writing group %s's log: %w", g.id, err))
			continue
		}
		mustSync = mustSync || !raft.IsEmptySnap(rd.Snapshot) || raft.MustSync(rd.HardState, g.hs, len(rd.Entries))
		allLead = allLead && g.rn.BasicStatus().RaftState == raft.StateLeader
		rds = append(rds, groupReady{g, rd})
	}
	if len(rds) == 0 {
		return false, 0
	}
	if allLead {
		e.send(rds)
	}
	if !b.Empty() {
		opts := pebble.NoSync
		if mustSync {
			opts = pebble.Sync
		}
		if err := b.Commit(opts); err != nil {
			for _, r := range rds {
				r.g.fail(e, fmt.Errorf("writing group %s's log: %w", r.g.id, err))
			}
			return false, len(rds)
		}
		synced = mustSync
	}
	for _, r := range rds {
		if err := r.g.stored(&r.rd); err != nil {
			r.g.fail(e, err)
		}
	}
	if !allLead {
		e.send(rds)
	}
	for _, r := range rds {
		r.g.readStates(r.rd.ReadStates)
	}
	e.apply(rds)
	for _, r := range rds {
		if r.g.failed != nil {
			continue
		}
		r.g.finishReads()
		r.g.rn.Advance(r.rd)
		r.g.advanced(&r.rd)
	}
	return synced, len(rds)
}

// send hands every group's messages of the round to the transport, one
// Send a peer, filling in the state machine's data of any snapshot.
func (e *Engine) send(rds []groupReady) {
	out := make(map[uint64][]Envelope)
	type snapSent struct {
		g  *group
		to uint64
	}
	var snaps []snapSent
	for _, r := range rds {
		if r.g.failed != nil {
			continue
		}
		for _, m := range r.rd.Messages {
			if m.Type == raftpb.MsgSnap {
				data, err := r.g.sm.Snapshot()
				if err != nil {
					e.logger.Warn("multiraft: taking a snapshot for a peer", "group", r.g.id.String(), "to", m.To, "err", err)
					r.g.rn.ReportSnapshot(m.To, raft.SnapshotFailure)
					continue
				}
				snap := *m.Snapshot
				snap.Data = data
				m.Snapshot = &snap
				snaps = append(snaps, snapSent{r.g, m.To})
			}
			out[m.To] = append(out[m.To], Envelope{Group: r.g.id, Msg: m})
		}
	}
	for to, msgs := range out {
		e.cfg.Transport.Send(to, msgs)
	}
	// The snapshot went whole in one message: raft may go on as soon as
	// it is sent; if it is lost, the follower's next answer says so.
	for _, s := range snaps {
		s.g.rn.ReportSnapshot(s.to, raft.SnapshotFinish)
	}
}

// resolution is a proposal's result, sent to its waiter once the batch
// holding its effects is committed.
type resolution struct {
	done chan<- result
	res  result
}

// apply applies every group's committed entries of the round in one
// batch, with each group's applied index and configuration, and compacts
// the logs that have grown long.
func (e *Engine) apply(rds []groupReady) {
	b := e.cfg.DB.NewBatch()
	defer b.Close()
	type compaction struct {
		g     *group
		index uint64
	}
	var (
		resolved  []resolution
		compacted []compaction
		applied   []*group
	)
	for _, r := range rds {
		g := r.g
		if g.failed != nil || len(r.rd.CommittedEntries) == 0 {
			continue
		}
		n := len(resolved)
		var err error
		if resolved, err = g.applyEntries(e.cfg.DB, b, r.rd.CommittedEntries, resolved); err != nil {
			err = fmt.Errorf("applying group %s's entries: %w", g.id, err)
			failResolutions(resolved[n:], err)
			g.fail(e, err)
			continue
		}
		applied = append(applied, g)
		if index := g.compactTo(b, e.cfg.LogRetention); index > 0 {
			compacted = append(compacted, compaction{g, index})
		}
	}
	if b.Empty() {
		return
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		err = fmt.Errorf("applying the round's entries: %w", err)
		failResolutions(resolved, err)
		for _, r := range resolved {
			r.done <- r.res
		}
		for _, g := range applied {
			g.fail(e, err)
		}
		return
	}
	for _, c := range compacted {
		_ = c.g.st.Compact(c.index)
	}
	for _, r := range resolved {
		r.done <- r.res
	}
	for _, g := range applied {
		g.handle.applied.Store(g.st.applied)
	}
}

// failResolutions turns the results of proposals whose effects were not
// written into errors: their outcome is unknown (other replicas may have
// applied them).
func failResolutions(rs []resolution, cause error) {
	for i := range rs {
		rs[i].res = result{err: fmt.Errorf("%w: %w", ErrLeadershipLost, cause)}
	}
}

// propose starts a proposal (a command, or a configuration change when
// p.cc is set) if this node leads its group.
func (e *Engine) propose(p *proposal) {
	g, ok := e.groups[p.group]
	if !ok {
		p.done <- result{err: fmt.Errorf("%w: %s", ErrNoGroup, p.group)}
		return
	}
	if g.failed != nil {
		p.done <- result{err: g.failed}
		return
	}
	st := g.rn.BasicStatus()
	if st.RaftState != raft.StateLeader {
		p.done <- result{err: fmt.Errorf("%w of group %s (leader: %d)", ErrNotLeader, g.id, st.Lead)}
		return
	}
	if p.cc != nil {
		if g.pendingConf != 0 {
			p.done <- result{err: fmt.Errorf("%w: group %s", ErrConfChangePending, g.id)}
			return
		}
		p.cc.Context = binary.BigEndian.AppendUint64(nil, p.id)
		if err := g.rn.ProposeConfChange(*p.cc); err != nil {
			p.done <- result{err: fmt.Errorf("%w of group %s: %v", ErrNotLeader, g.id, err)}
			return
		}
		g.pendingConf, g.confAppended = p.id, false
	} else if err := g.rn.Propose(p.data); err != nil {
		p.done <- result{err: fmt.Errorf("%w of group %s: %v", ErrNotLeader, g.id, err)}
		return
	}
	g.waiters[p.id] = waiter{done: p.done, term: st.Term}
}
