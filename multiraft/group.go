package multiraft

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// group is the loop's side of a running group. Only the loop touches it.
type group struct {
	id     GroupID
	keys   groupKeys
	rn     *raft.RawNode
	st     *groupStorage
	sm     StateMachine
	handle *Group

	hs        raftpb.HardState // as raft last handed it (stored only when term or vote change)
	lastIndex uint64           // of the stored log

	// waiters are the proposals of this node not yet applied, by id.
	waiters map[uint64]waiter
	// pendingConf is the id of the configuration change proposed and not
	// yet applied (0: none); confAppended says raft took it into the log
	// rather than dropping it for another still pending.
	pendingConf  uint64
	confAppended bool

	// Reads: newReads are asked this round and share one ReadIndex;
	// reads are those raft has not answered, by request id; confirmed
	// have their read index and wait for the group to apply up to it.
	newReads  []chan<- error
	reads     map[uint64]*readBatch
	confirmed []*readBatch

	// failed stops the group: set when its log or state could not be
	// written. Its waiters have been failed; it takes no more work.
	failed error
}

type waiter struct {
	done chan<- result
	term uint64 // the term the proposal was made in
}

type result struct {
	value any
	err   error
}

// proposal is a command (data) or a configuration change (cc) on its way
// to the loop.
type proposal struct {
	group GroupID
	id    uint64
	data  []byte // id (8 bytes) then the command
	cc    *raftpb.ConfChangeV2
	done  chan result
}

// readBatch is the reads one ReadIndex request confirms.
type readBatch struct {
	index uint64
	term  uint64
	done  []chan<- error
}

// persist writes what rd asks to store into b. A restore is written to a
// batch of its own first, so that a snapshot that fails halfway leaves
// nothing in b, which holds other groups' writes too.
func (g *group) persist(db *pebble.DB, b *pebble.Batch, rd *raft.Ready) error {
	if !raft.IsEmptySnap(rd.Snapshot) {
		restore := db.NewBatch()
		defer restore.Close()
		if err := g.sm.Restore(restore, rd.Snapshot.Data); err != nil {
			return fmt.Errorf("restoring a snapshot at index %d: %w", rd.Snapshot.Metadata.Index, err)
		}
		if err := b.Apply(restore, nil); err != nil {
			return err
		}
		if err := writeSnapshot(b, g.keys, rd.Snapshot.Metadata); err != nil {
			return err
		}
	}
	if len(rd.Entries) > 0 {
		prevLast := g.lastIndex
		if !raft.IsEmptySnap(rd.Snapshot) {
			prevLast = 0 // writeSnapshot deleted them all
		}
		if err := writeEntries(b, g.keys, rd.Entries, prevLast); err != nil {
			return err
		}
	}
	// A hard state is stored when its term or vote changes, not for each
	// new commit index: raft does not need the commit index back after a
	// restart (it learns it again), loadGroup raises it to the applied
	// index, and writing it every round would be one more memtable insert
	// a group a round (which are most of Pebble's cost here).
	if hs := rd.HardState; !raft.IsEmptyHardState(hs) && (hs.Term != g.hs.Term || hs.Vote != g.hs.Vote) {
		if err := setProto(b, g.keys.hardState(), &hs); err != nil {
			return err
		}
	}
	return nil
}

// stored updates the in-memory log once rd's writes are committed.
func (g *group) stored(rd *raft.Ready) error {
	if !raft.IsEmptySnap(rd.Snapshot) {
		if err := g.st.ApplySnapshot(rd.Snapshot); err != nil {
			return fmt.Errorf("group %s: snapshot at %d: %w", g.id, rd.Snapshot.Metadata.Index, err)
		}
		g.st.applied, g.st.conf = rd.Snapshot.Metadata.Index, rd.Snapshot.Metadata.ConfState
		g.lastIndex = rd.Snapshot.Metadata.Index
		g.handle.applied.Store(g.st.applied)
		defer g.publish()
	}
	if len(rd.Entries) > 0 {
		if err := g.st.Append(rd.Entries); err != nil {
			return fmt.Errorf("group %s: appending entries: %w", g.id, err)
		}
		g.lastIndex = rd.Entries[len(rd.Entries)-1].Index
		if g.pendingConf != 0 && !g.confAppended {
			g.confAppended = slices.ContainsFunc(rd.Entries, func(e raftpb.Entry) bool {
				return isConfChange(e) && confChangeID(e) == g.pendingConf
			})
		}
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		g.hs = rd.HardState
		if err := g.st.SetHardState(rd.HardState); err != nil {
			return fmt.Errorf("group %s: hard state: %w", g.id, err)
		}
	}
	if g.pendingConf != 0 && !g.confAppended {
		// Raft replaced the change with an empty entry: another was still
		// pending (a new leader's, whose log may hold one not yet applied).
		w := g.waiters[g.pendingConf]
		delete(g.waiters, g.pendingConf)
		g.pendingConf = 0
		w.done <- result{err: fmt.Errorf("%w: group %s", ErrConfChangePending, g.id)}
	}
	return nil
}

func isConfChange(e raftpb.Entry) bool {
	return e.Type == raftpb.EntryConfChange || e.Type == raftpb.EntryConfChangeV2
}

// confChangeID is the proposal id a configuration change entry carries
// in its context (0 for one this engine did not propose).
func confChangeID(e raftpb.Entry) uint64 {
	cc, err := decodeConfChange(e)
	if err != nil {
		return 0
	}
	ctx := cc.AsV2().Context
	if len(ctx) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(ctx)
}

func decodeConfChange(e raftpb.Entry) (raftpb.ConfChangeI, error) {
	if e.Type == raftpb.EntryConfChange {
		var cc raftpb.ConfChange
		err := cc.Unmarshal(e.Data)
		return cc, err
	}
	var cc raftpb.ConfChangeV2
	err := cc.Unmarshal(e.Data)
	return cc, err
}

// applyEntries hands committed entries to the state machine, in order,
// applies configuration changes, and writes the applied index, all to a
// batch of the group's own that joins b only whole: a state machine that
// fails halfway leaves nothing in b, which holds other groups' writes too.
// The proposers' results are appended to resolved.
func (g *group) applyEntries(db *pebble.DB, b *pebble.Batch, ents []raftpb.Entry, resolved []resolution) ([]resolution, error) {
	own := db.NewBatch()
	defer own.Close()
	resolved, err := g.applyEntriesTo(own, ents, resolved)
	if err != nil {
		return resolved, err
	}
	return resolved, b.Apply(own, nil)
}

func (g *group) applyEntriesTo(b *pebble.Batch, ents []raftpb.Entry, resolved []resolution) ([]resolution, error) {
	var (
		cmds        []Command
		ids         []uint64
		confChanged bool
	)
	flush := func() error {
		if len(cmds) == 0 {
			return nil
		}
		results, err := g.sm.Apply(b, cmds)
		if err != nil {
			return err
		}
		for i, id := range ids {
			if w, ok := g.waiters[id]; ok {
				delete(g.waiters, id)
				var res result
				if i < len(results) {
					res.value = results[i]
				}
				resolved = append(resolved, resolution{w.done, res})
			}
		}
		cmds, ids = cmds[:0], ids[:0]
		return nil
	}
	for _, e := range ents {
		if e.Index <= g.st.applied {
			continue // a snapshot of this round covered it
		}
		switch {
		case e.Type == raftpb.EntryNormal && len(e.Data) == 0:
			// A new leader's empty entry.
		case e.Type == raftpb.EntryNormal:
			if len(e.Data) < 8 {
				return resolved, fmt.Errorf("%w: entry %d of %d bytes", ErrCorruptState, e.Index, len(e.Data))
			}
			cmds = append(cmds, Command{Index: e.Index, Data: e.Data[8:]})
			ids = append(ids, binary.BigEndian.Uint64(e.Data))
		case isConfChange(e):
			if err := flush(); err != nil {
				return resolved, err
			}
			cc, err := decodeConfChange(e)
			if err != nil {
				return resolved, fmt.Errorf("%w: configuration change at %d: %v", ErrCorruptState, e.Index, err)
			}
			g.st.conf = *g.rn.ApplyConfChange(cc)
			confChanged = true
			if id := confChangeID(e); id != 0 {
				if w, ok := g.waiters[id]; ok {
					delete(g.waiters, id)
					resolved = append(resolved, resolution{w.done, result{}})
				}
				if id == g.pendingConf {
					g.pendingConf = 0
				}
			}
			g.publish()
		}
		g.st.applied = e.Index
	}
	if err := flush(); err != nil {
		return resolved, err
	}
	var conf *raftpb.ConfState
	if confChanged {
		conf = &g.st.conf
	}
	return resolved, writeApplied(b, g.keys, g.st.applied, conf)
}

// compactTo adds to b the compaction of a log that holds more than twice
// retention applied entries, down to retention of them, and returns the
// index it cuts the log at (0: none); once b is committed, the in-memory
// log is compacted to it.
func (g *group) compactTo(b *pebble.Batch, retention uint64) uint64 {
	first, _ := g.st.FirstIndex()
	if g.st.applied < first || g.st.applied-first+1 <= 2*retention {
		return 0
	}
	index := g.st.applied - retention
	term, err := g.st.Term(index)
	if err != nil {
		return 0
	}
	if err := writeCompaction(b, g.keys, first, index, term); err != nil {
		return 0
	}
	return index
}

// advanced follows a round's Advance: a change of role or term fails the
// proposals and reads that can no longer succeed, and is published.
func (g *group) advanced(rd *raft.Ready) {
	if rd.SoftState == nil && (raft.IsEmptyHardState(rd.HardState) || rd.HardState.Term == g.handle.Status().Term) {
		return
	}
	st := g.rn.BasicStatus()
	leading := st.RaftState == raft.StateLeader
	for id, w := range g.waiters {
		if !leading || w.term != st.Term {
			delete(g.waiters, id)
			w.done <- result{err: fmt.Errorf("%w: group %s, term %d", ErrLeadershipLost, g.id, st.Term)}
		}
	}
	if _, ok := g.waiters[g.pendingConf]; !ok {
		g.pendingConf = 0
	}
	g.failReads(func(term uint64) bool { return !leading || term != st.Term },
		fmt.Errorf("%w of group %s: leadership lost before the read was confirmed", ErrNotLeader, g.id))
	g.publish()
}

// askReads sends one ReadIndex request for the reads asked this round.
func (g *group) askReads(e *Engine) {
	if len(g.newReads) == 0 {
		return
	}
	reads := g.newReads
	g.newReads = nil
	st := g.rn.BasicStatus()
	if g.failed != nil || st.RaftState != raft.StateLeader {
		err := fmt.Errorf("%w of group %s (leader: %d)", ErrNotLeader, g.id, st.Lead)
		if g.failed != nil {
			err = g.failed
		}
		for _, done := range reads {
			done <- err
		}
		return
	}
	id := e.nextID.Add(1)
	g.reads[id] = &readBatch{term: st.Term, done: reads}
	g.rn.ReadIndex(binary.BigEndian.AppendUint64(nil, id))
}

// readStates takes raft's answers to ReadIndex requests.
func (g *group) readStates(states []raft.ReadState) {
	for _, rs := range states {
		if len(rs.RequestCtx) != 8 {
			continue
		}
		id := binary.BigEndian.Uint64(rs.RequestCtx)
		rb, ok := g.reads[id]
		if !ok {
			continue
		}
		delete(g.reads, id)
		rb.index = rs.Index
		g.confirmed = append(g.confirmed, rb)
	}
}

// finishReads answers the confirmed reads whose index is applied.
func (g *group) finishReads() {
	kept := g.confirmed[:0]
	for _, rb := range g.confirmed {
		if rb.index > g.st.applied {
			kept = append(kept, rb)
			continue
		}
		for _, done := range rb.done {
			done <- nil
		}
	}
	clear(g.confirmed[len(kept):])
	g.confirmed = kept
}

// failReads fails the reads not yet confirmed whose term matches.
func (g *group) failReads(match func(term uint64) bool, err error) {
	for id, rb := range g.reads {
		if match(rb.term) {
			delete(g.reads, id)
			for _, done := range rb.done {
				done <- err
			}
		}
	}
}

// fail stops the group after a write failed: nothing of it can go on
// safely until it is started again.
func (g *group) fail(e *Engine, err error) {
	if g.failed != nil {
		return
	}
	e.logger.Error("multiraft: group stopped", "group", g.id.String(), "err", err)
	g.failed = err
	g.stop(err)
}

// stop fails every proposal and read of the group and publishes that it
// stopped. Proposals fail with err (their outcome is unknown), reads with
// ErrNotLeader.
func (g *group) stop(err error) {
	for id, w := range g.waiters {
		delete(g.waiters, id)
		w.done <- result{err: err}
	}
	g.pendingConf = 0
	readErr := fmt.Errorf("%w of group %s: the group stopped", ErrNotLeader, g.id)
	g.failReads(func(uint64) bool { return true }, readErr)
	for _, rb := range g.confirmed {
		for _, done := range rb.done {
			done <- readErr
		}
	}
	g.confirmed = nil
	for _, done := range g.newReads {
		done <- readErr
	}
	g.newReads = nil
	g.handle.setStatus(Status{Group: g.id, Stopped: true, Err: g.failed})
}

// publish makes the group's current role, leader, term and configuration
// visible to Group.Status.
func (g *group) publish() {
	st := g.rn.BasicStatus()
	g.handle.setStatus(Status{
		Group:          g.id,
		Role:           Role(st.RaftState),
		Leader:         st.Lead,
		Term:           st.Term,
		LeadTransferee: st.LeadTransferee,
		Voters:         slices.Clone(g.st.conf.Voters),
		Learners:       slices.Clone(g.st.conf.Learners),
	})
}
