package multiraft

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Role is a node's role in a group.
type Role uint64

// The roles, as etcd-io/raft names them.
const (
	Follower     = Role(raft.StateFollower)
	Candidate    = Role(raft.StateCandidate)
	Leader       = Role(raft.StateLeader)
	PreCandidate = Role(raft.StatePreCandidate)
)

func (r Role) String() string {
	switch r {
	case Follower:
		return "follower"
	case Candidate:
		return "candidate"
	case Leader:
		return "leader"
	case PreCandidate:
		return "pre-candidate"
	}
	return fmt.Sprintf("role(%d)", uint64(r))
}

// Status is what a node knows of a group at one moment.
type Status struct {
	Group  GroupID
	Role   Role
	Leader uint64 // 0: not known
	Term   uint64
	// LeadTransferee is the node a leadership transfer is under way to
	// (0: none); it is published when the role or term changes, not when
	// a transfer starts.
	LeadTransferee uint64
	// Voters and Learners are the configuration as of the applied index.
	Voters, Learners []uint64
	// Stopped: the group no longer runs here (StopGroup, Close, or a
	// failed write, which Err then holds).
	Stopped bool
	Err     error
}

// Group is a handle on a group running on an Engine. Its methods may be
// called from any goroutine.
type Group struct {
	e       *Engine
	id      GroupID
	status  atomic.Pointer[Status]
	changed atomic.Pointer[chan struct{}]
	applied atomic.Uint64
}

func (h *Group) init() {
	ch := make(chan struct{})
	h.changed.Store(&ch)
}

// ID is the group's id.
func (h *Group) ID() GroupID { return h.id }

// Status is the group's status as the loop last published it: after any
// change of role, leader, term or configuration.
func (h *Group) Status() Status {
	if s := h.status.Load(); s != nil {
		return *s
	}
	return Status{Group: h.id}
}

// Changed returns a channel closed at the next published change of
// Status. Take it before reading Status so that no change is missed.
func (h *Group) Changed() <-chan struct{} { return *h.changed.Load() }

// Applied is the index of the last entry applied on this node.
func (h *Group) Applied() uint64 { return h.applied.Load() }

func (h *Group) setStatus(s Status) {
	h.status.Store(&s)
	ch := make(chan struct{})
	close(*h.changed.Swap(&ch))
}

// Propose replicates data and applies it, returning its StateMachine
// result once it is applied on this node. Errors:
//   - ErrNotLeader: this node does not lead the group; nothing was
//     proposed.
//   - ErrLeadershipLost: leadership changed (or the group stopped) before
//     the command was applied here; it may still be applied.
//   - ErrTooLarge: data exceeds Config.MaxEntryBytes; nothing was proposed.
//   - ctx's error: the wait ended. If it ended after the proposal reached
//     the loop, the outcome is unknown, as for ErrLeadershipLost.
func (h *Group) Propose(ctx context.Context, data []byte) (any, error) {
	if len(data) > h.e.cfg.MaxEntryBytes {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(data), h.e.cfg.MaxEntryBytes)
	}
	id := h.e.nextID.Add(1)
	framed := make([]byte, 8+len(data))
	binary.BigEndian.PutUint64(framed, id)
	copy(framed[8:], data)
	return h.submit(ctx, &proposal{group: h.id, id: id, data: framed, done: make(chan result, 1)})
}

// ChangeConf proposes a configuration change and waits until it is
// applied on this node. Raft takes one change at a time: while another is
// pending it fails with ErrConfChangePending. Errors are Propose's.
func (h *Group) ChangeConf(ctx context.Context, cc raftpb.ConfChangeV2) error {
	id := h.e.nextID.Add(1)
	_, err := h.submit(ctx, &proposal{group: h.id, id: id, cc: &cc, done: make(chan result, 1)})
	return err
}

func (h *Group) submit(ctx context.Context, p *proposal) (any, error) {
	select {
	case h.e.props <- p:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-h.e.stop:
		return nil, ErrClosed
	}
	select {
	case r := <-p.done:
		return r.value, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("multiraft: group %s: the proposal was made and its outcome is unknown: %w", h.id, ctx.Err())
	}
}

// ReadIndex confirms that this node leads the group now — a quorum
// answered a heartbeat sent after the call — and waits until the node has
// applied every entry committed before the call: state read afterwards is
// linearizable. Reads asked in the same round share one heartbeat.
// ErrNotLeader means this node does not lead the group, or lost the
// leadership before a quorum answered.
func (h *Group) ReadIndex(ctx context.Context) error {
	done := make(chan error, 1)
	if err := h.inLoop(func(g *group) error {
		g.newReads = append(g.newReads, done)
		return nil
	}); err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TransferLeadership asks raft to hand the group's leadership to node to
// and waits until to leads, ctx ends, or two election timeouts pass
// (raft gives a transfer up after one). The transferee must be a voter
// that has applied its own promotion: a node that still takes itself for
// a learner does not stand.
func (h *Group) TransferLeadership(ctx context.Context, to uint64) error {
	changed := h.Changed()
	if err := h.inLoop(func(g *group) error {
		if st := g.rn.BasicStatus(); st.RaftState != raft.StateLeader {
			return fmt.Errorf("%w of group %s (leader: %d)", ErrNotLeader, h.id, st.Lead)
		}
		g.rn.TransferLeader(to)
		return nil
	}); err != nil {
		return err
	}
	timeout := time.NewTimer(2 * time.Duration(h.e.cfg.ElectionTicks) * h.e.cfg.TickInterval)
	defer timeout.Stop()
	for {
		st := h.Status()
		if st.Leader == to {
			return nil
		}
		if st.Stopped {
			return fmt.Errorf("%w: group %s stopped during the transfer", ErrNotLeader, h.id)
		}
		select {
		case <-changed:
			changed = h.Changed()
		case <-timeout.C:
			return fmt.Errorf("multiraft: group %s: node %d did not take the leadership (leader now: %d)", h.id, to, h.Status().Leader)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Campaign makes this node stand for election in the group now rather
// than after an election timeout.
func (h *Group) Campaign() error {
	return h.inLoop(func(g *group) error { return g.rn.Campaign() })
}

// inLoop runs f in the engine's loop on the group's state and returns its
// error; ErrNoGroup if the group does not run, ErrClosed if the engine
// does not.
func (h *Group) inLoop(f func(g *group) error) error {
	var err error
	if derr := h.e.do(func() {
		g, ok := h.e.groups[h.id]
		if !ok {
			err = fmt.Errorf("%w: %s", ErrNoGroup, h.id)
			return
		}
		err = f(g)
	}); derr != nil {
		return derr
	}
	return err
}

// raftLogger hands etcd-io/raft's messages to slog. Raft's own Fatal and
// Panic stop the process, as raft expects.
type raftLogger struct{ l *slog.Logger }

var _ raft.Logger = raftLogger{}

func (r raftLogger) Debug(v ...any)              { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Debugf(f string, v ...any)   { r.l.Debug(fmt.Sprintf(f, v...)) }
func (r raftLogger) Info(v ...any)               { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Infof(f string, v ...any)    { r.l.Debug(fmt.Sprintf(f, v...)) }
func (r raftLogger) Warning(v ...any)            { r.l.Warn(fmt.Sprint(v...)) }
func (r raftLogger) Warningf(f string, v ...any) { r.l.Warn(fmt.Sprintf(f, v...)) }
func (r raftLogger) Error(v ...any)              { r.l.Error(fmt.Sprint(v...)) }
func (r raftLogger) Errorf(f string, v ...any)   { r.l.Error(fmt.Sprintf(f, v...)) }
func (r raftLogger) Fatal(v ...any)              { r.Panic(v...) }
func (r raftLogger) Fatalf(f string, v ...any)   { r.Panicf(f, v...) }
func (r raftLogger) Panic(v ...any)              { panic(fmt.Sprint(v...)) }
func (r raftLogger) Panicf(f string, v ...any)   { panic(fmt.Sprintf(f, v...)) }
