package raftstore

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

const (
	// snapshotsRetained is how many snapshots each group's FileSnapshotStore keeps.
	snapshotsRetained = 2
)

// GroupConfig describes a group to run on the Store.
type GroupConfig struct {
	ID        GroupID
	LocalID   raft.ServerID
	Transport raft.Transport // dev mode passes raft.NewInmemTransport
	// Bootstrap, if set and the group has no state yet, bootstraps the group
	// with these voters. With existing state it is ignored.
	Bootstrap []raft.Server
	// FSM is the group's state machine; nil means s.NewShardFSM(ID).
	FSM raft.FSM
	// Tune adjusts the raft config after the defaults (and after StartGroup's
	// own adjustments, so it has the last word).
	Tune func(*raft.Config)
	// LogTrimBytes is how many bytes of entries the group's log stores
	// before it is snapshotted and trimmed by bytes (logTrimmer); 0 means
	// DefaultLogTrimBytes, and a negative value trims by entry count alone.
	LogTrimBytes int64
}

// Group is a running raft group.
type Group struct {
	s     *Store
	id    GroupID
	local raft.ServerID
	raft  *raft.Raft
	trans raft.Transport
	trim  *logTrimmer // nil when the group trims by entry count alone

	once sync.Once
	err  error
}

// ID returns the group's ID.
func (g *Group) ID() GroupID { return g.id }

// Raft returns the group's raft instance.
func (g *Group) Raft() *raft.Raft { return g.raft }

// VerifyLeader is raft's VerifyLeader (a round of heartbeats a quorum must
// answer), with the group's heartbeats sent at once rather than after the
// transport's heartbeat window. Call Error on the result.
func (g *Group) VerifyLeader() raft.Future {
	if v, ok := g.trans.(*groupTransport); ok {
		return v.verifyLeader(g.raft)
	}
	return g.raft.VerifyLeader()
}

// verifyLeader runs r's leadership check with the group's heartbeats
// hurried until its result is read.
func (v *groupTransport) verifyLeader(r *raft.Raft) raft.Future {
	end := v.beginVerify() // first, so that the heartbeats the check sends see it
	return &hurriedFuture{Future: r.VerifyLeader(), end: end}
}

// hurriedFuture ends the hurry when its result is read.
type hurriedFuture struct {
	raft.Future
	once sync.Once
	end  func()
}

func (f *hurriedFuture) Error() error {
	err := f.Future.Error()
	f.once.Do(f.end)
	return err
}

// Shutdown stops the group's raft (not its transport, which the caller
// owns). It is idempotent.
func (g *Group) Shutdown() error {
	g.once.Do(func() {
		if v, ok := g.trans.(*groupTransport); ok {
			v.stopWaiting() // see groupTransport.waiting
		}
		g.err = g.raft.Shutdown().Error()
		if g.trim != nil {
			g.trim.close() // after raft's: a snapshot under way ends with it
		}
		g.s.groupsMu.Lock()
		if g.s.groups[g.id] == g {
			delete(g.s.groups, g.id)
		}
		g.s.groupsMu.Unlock()
	})
	return g.err
}

// DefaultRaftConfig is the raft configuration groups run with: the timing
// measured in DESIGN.md §7 (500 ms heartbeat and election timeouts, 250 ms
// leader lease), batched applies, and no snapshot restore on start because
// the shard FSM is persistent.
//
// CommitTimeout is 1 s rather than DESIGN's 50 ms: it is only how often a
// leader with nothing new sends each follower an empty AppendEntries so the
// follower learns the commit index, and nothing here reads from followers
// (a new leader applies the committed tail before it serves; a replica's
// catch-up check allows 64 entries of lag). At 50 ms those appends were
// about half of an idle cluster's CPU once heartbeats were batched
// (docs/raftstore.md).
//
// MaxAppendEntries is as many entries of MaxEntryBytes as fit in one
// AppendEntries of MaxRaftMessageSize (204): raft batches by count only.
func DefaultRaftConfig(local raft.ServerID) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = local
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 250 * time.Millisecond
	c.CommitTimeout = time.Second
	c.MaxAppendEntries = appendEntriesWithin(MaxRaftMessageSize, MaxEntryBytes)
	c.BatchApplyCh = true
	c.NoSnapshotRestoreOnStart = true
	// A leader that commits its own removal steps down and keeps running:
	// the node stops its replica (node/reconcile.go). Only a replica that
	// held its uncommitted removal when the leader that appended it died
	// gets there (Group.RemovalPending); shut down by raft, it would sit in
	// the node's groups with a raft that answers nothing.
	c.ShutdownOnRemove = false
	// A snapshot is a cheap Pebble snapshot plus a copy of the group's
	// range; taking one every 16k entries (checked every 2 minutes) keeps
	// the log of a busy group bounded without copying too often.
	c.SnapshotThreshold = 16384
	c.SnapshotInterval = 2 * time.Minute
	c.TrailingLogs = 10240
	c.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn})
	return c
}

// StartGroup starts raft for cfg.ID on the Store. The group's logs and
// stable state live in the Store; its snapshots in a FileSnapshotStore at
// <store dir>/snapshots/<group>, which DeleteGroup removes with the rest.
//
// NoSnapshotRestoreOnStart is only right for a persistent FSM, so
// StartGroup turns it off when cfg.FSM is not a ShardFSM (an in-memory FSM
// such as the meta group's must be rebuilt from its snapshot), and when a
// ShardFSM's last Restore was interrupted. cfg.Tune can still override it.
// It is also turned off, whatever Tune says, when a ShardFSM is behind the
// group's latest snapshot (see ShardFSM.behindSnapshot).
func (s *Store) StartGroup(cfg GroupConfig) (*Group, error) {
	if cfg.LocalID == "" {
		return nil, fmt.Errorf("%w: group %s: LocalID is empty", ErrInvalidConfig, cfg.ID)
	}
	if cfg.Transport == nil {
		return nil, fmt.Errorf("%w: group %s: no Transport", ErrInvalidConfig, cfg.ID)
	}
	// groupsMu is held for the whole start: it keeps two starts of one group
	// apart and lets Close find every group that has started.
	s.groupsMu.Lock()
	defer s.groupsMu.Unlock()
	if s.groups == nil {
		return nil, ErrClosed
	}
	if _, ok := s.groups[cfg.ID]; ok {
		return nil, fmt.Errorf("%w: %s", ErrGroupRunning, cfg.ID)
	}

	conf := DefaultRaftConfig(cfg.LocalID)
	conf.Logger = s.logger.Named("raft").With("group", cfg.ID.String())
	fsm := cfg.FSM
	if fsm == nil {
		fsm = s.NewShardFSM(cfg.ID)
	}
	if sf, ok := fsm.(*ShardFSM); ok {
		incomplete, err := sf.restoreIncomplete()
		if err != nil {
			return nil, fmt.Errorf("raftstore: starting group %s: %w", cfg.ID, err)
		}
		if incomplete {
			s.logger.Warn("group's last snapshot restore was interrupted; restoring its latest snapshot", "group", cfg.ID.String())
			conf.NoSnapshotRestoreOnStart = false
		}
	} else {
		conf.NoSnapshotRestoreOnStart = false
	}
	if cfg.Tune != nil {
		cfg.Tune(conf)
	}

	if err := removeUnfinishedSnapshots(s.snapshotDir(cfg.ID), conf.Logger); err != nil {
		return nil, fmt.Errorf("raftstore: group %s snapshot store: %w", cfg.ID, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(s.snapshotDir(cfg.ID), snapshotsRetained, conf.Logger.Named("snapshots"))
	if err != nil {
		return nil, fmt.Errorf("raftstore: group %s snapshot store: %w", cfg.ID, err)
	}
	logs, stable := s.LogStore(cfg.ID), s.StableStore(cfg.ID)
	if sf, ok := fsm.(*ShardFSM); ok && conf.NoSnapshotRestoreOnStart {
		behind, err := sf.behindSnapshot(snaps, logs)
		if err != nil {
			return nil, fmt.Errorf("raftstore: starting group %s: %w", cfg.ID, err)
		}
		if behind {
			s.logger.Warn("group's state machine is behind its latest snapshot (a snapshot install was interrupted); restoring it", "group", cfg.ID.String())
			conf.NoSnapshotRestoreOnStart = false
		}
	}

	if len(cfg.Bootstrap) > 0 {
		has, err := raft.HasExistingState(logs, stable, snaps)
		if err != nil {
			return nil, fmt.Errorf("raftstore: group %s: checking for existing state: %w", cfg.ID, err)
		}
		if !has {
			servers := raft.Configuration{Servers: cfg.Bootstrap}
			if err := raft.BootstrapCluster(conf, logs, stable, snaps, cfg.Transport, servers); err != nil {
				return nil, fmt.Errorf("raftstore: bootstrapping group %s: %w", cfg.ID, err)
			}
		}
	}

	// A leader reads each new entry back to replicate it; caching the most
	// recent ones spares Pebble those reads.
	cached := newLogCache(logs, logCacheEntries, logCacheBytes)
	r, err := raft.NewRaft(conf, fsm, cached, stable, snaps, cfg.Transport)
	if err != nil {
		return nil, fmt.Errorf("raftstore: starting group %s: %w", cfg.ID, err)
	}
	if v, ok := cfg.Transport.(*groupTransport); ok {
		v.attach(r, conf.HeartbeatTimeout)
	}
	g := &Group{s: s, id: cfg.ID, local: cfg.LocalID, raft: r, trans: cfg.Transport}
	if cfg.LogTrimBytes >= 0 {
		g.trim = startLogTrimmer(r, cmp.Or(cfg.LogTrimBytes, DefaultLogTrimBytes))
		cached.setStored(g.trim.stored)
	}
	s.groups[cfg.ID] = g
	return g, nil
}

// removeUnfinishedSnapshots deletes the snapshots a FileSnapshotStore at
// dir was still writing when its process stopped (their names end in
// .tmp). raft only warns of them and leaves them; each can be as large as
// the group's state, and on a disk that had filled up they kept it full
// after space was freed (found by a test of a full disk).
func removeUnfinishedSnapshots(dir string, logger hclog.Logger) error {
	tmps, err := filepath.Glob(filepath.Join(dir, "snapshots", "*.tmp"))
	if err != nil {
		return err
	}
	for _, tmp := range tmps {
		if err := os.RemoveAll(tmp); err != nil {
			return err
		}
		logger.Info("removed a snapshot left unfinished", "path", tmp)
	}
	return nil
}
