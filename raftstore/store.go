package raftstore

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"

	"github.com/roostdb/roost/loglimit"
)

// Options tunes a Store.
type Options struct {
	// CacheSize is Pebble's block cache in bytes; 0 means 64 MiB.
	CacheSize int64
	// MemTableSize is the most bytes of writes Pebble keeps in one
	// memtable; 0 means 32 MiB. Pebble holds up to two and a half
	// memtables' worth of memory once it has taken that many writes, idle
	// or not: the mutable one, flushed ones it keeps to reuse, and ones
	// waiting until half a memtable's worth can be flushed together.
	MemTableSize uint64
	// Logger receives raftstore's, Pebble's and raft's messages; nil means
	// warnings and errors to stderr.
	Logger hclog.Logger
	// SyncWindow is how long Pebble holds a WAL sync back after the previous
	// one while several groups are writing, so that their synced writes
	// share one fdatasync (see syncWindow). 0 means 500µs; negative turns
	// the window off, every synced write then syncs as soon as it can.
	SyncWindow time.Duration
	// OnFSMFailure, if set, is called (on a goroutine of its own) when a
	// group's ShardFSM fails to apply an entry. From then on that replica
	// applies nothing until its group restarts, though its raft still
	// votes and may be elected: a replica whose data stopped at the
	// failure must leave service, and a restart re-applies the log.
	OnFSMFailure func(g GroupID, err error)
	// MaxOpenFiles bounds the files Pebble keeps open (its table cache
	// and the rest); 0 means Pebble's default, 1,000.
	MaxOpenFiles int
	// OnStalled, if set, is called once (on a goroutine of its own) when
	// every write has waited StallLimit on Pebble while its flushes or
	// compactions fail (a full disk; stallWatch): the store takes no write
	// until that is mended, and its owner should leave service.
	OnStalled func(error)
	// StallLimit is how long such a stall lasts before OnStalled; 0 means
	// 10 s.
	StallLimit time.Duration
}

const (
	defaultCacheSize = 64 << 20
	// defaultMemTableSize is larger than Pebble's 4 MiB default: the raft
	// log is written and soon deleted, and most of it should die in the
	// memtable.
	defaultMemTableSize = 32 << 20
)

// Store is one node's Pebble database holding the state of every group.
// Its methods are safe for concurrent use.
type Store struct {
	dir    string
	logger hclog.Logger

	// mu guards closed. Every use of db holds it for reading, so Close (which
	// takes it for writing) never closes Pebble under a caller: Pebble panics
	// on use after Close, callers of a closed Store get ErrClosed instead.
	mu     sync.RWMutex
	closed bool
	db     *pebble.DB

	groupsMu sync.Mutex
	groups   map[GroupID]*Group // running groups; nil once Close began

	syncWindow *syncWindow // nil when Options.SyncWindow turned it off
	stalls     *stallWatch // nil without Options.OnStalled
	// onFSMFailure is Options.OnFSMFailure.
	onFSMFailure func(GroupID, error)
}

// Open opens (creating if needed) the node's Pebble database in dir.
func Open(dir string, opts Options) (*Store, error) {
	return open(dir, opts, nil)
}

// open is Open on a chosen filesystem (nil = the OS's); tests use Pebble's
// crashable in-memory filesystem to simulate losing unsynced writes.
func open(dir string, opts Options, fs vfs.FS) (*Store, error) {
	logger := opts.Logger
	if logger == nil {
		logger = hclog.New(&hclog.LoggerOptions{Name: "raftstore", Level: hclog.Warn})
	}
	size := opts.CacheSize
	if size <= 0 {
		size = defaultCacheSize
	}
	cache := pebble.NewCache(size)
	// Pebble holds its own reference to the cache while open.
	defer cache.Unref()
	popts := &pebble.Options{
		Cache:              cache,
		FS:                 fs,
		Logger:             newPebbleLogger(logger.Named("pebble")),
		FormatMajorVersion: pebble.FormatNewest,
		MemTableSize:       cmp.Or(opts.MemTableSize, defaultMemTableSize),
		MaxOpenFiles:       opts.MaxOpenFiles,
	}
	popts.Experimental.CompactionScheduler = newCompactionScheduler()
	var stalls *stallWatch
	if opts.OnStalled != nil {
		plog := popts.Logger
		stalls = &stallWatch{limit: cmp.Or(opts.StallLimit, defaultStallLimit), onStalled: opts.OnStalled,
			warn: logger.Warn, now: time.Now}
		popts.EventListener = stalls.listener(func(err error) { plog.Errorf("background error: %s", err) })
	}
	var window *syncWindow
	if d := cmp.Or(opts.SyncWindow, defaultSyncWindow); d > 0 {
		window = &syncWindow{window: d}
		popts.WALMinSyncInterval = window.next
	}
	// A directory with files in it holds a store: if Pebble cannot find
	// it there, creating a new one would delete the old one's tables.
	fsys := cmp.Or[vfs.FS](fs, vfs.Default)
	if names, err := fsys.List(dir); err == nil && len(names) > 0 {
		popts.ErrorIfNotExists = true
	}
	db, err := pebble.Open(dir, popts)
	if errors.Is(err, pebble.ErrDBDoesNotExist) {
		return nil, fmt.Errorf("%w: %s holds files but no Pebble manifest (a MARKER or MANIFEST file lost?); refusing to create a new store over them", ErrStoreDamaged, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("raftstore: opening pebble in %s: %w", dir, err)
	}
	s := &Store{dir: dir, logger: logger, db: db, groups: make(map[GroupID]*Group), syncWindow: window, onFSMFailure: opts.OnFSMFailure, stalls: stalls}
	if err := s.finishDeletions(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// Close shuts down any group still running on the Store, then closes Pebble.
// Calling it again returns ErrClosed.
func (s *Store) Close() error {
	s.groupsMu.Lock()
	running := make([]*Group, 0, len(s.groups))
	for _, g := range s.groups {
		running = append(running, g)
	}
	// A nil map tells StartGroup the Store is closing.
	s.groups = nil
	s.groupsMu.Unlock()
	sort.Slice(running, func(i, j int) bool { return running[i].id < running[j].id })
	var errs []error
	for _, g := range running {
		if err := g.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("shutting down group %s: %w", g.id, err))
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	if s.stalls != nil {
		s.stalls.stop()
	}
	if err := s.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("raftstore: closing pebble: %w", err))
	}
	return errors.Join(errs...)
}

// snapshotDir is where group g's FileSnapshotStore keeps its snapshots.
func (s *Store) snapshotDir(g GroupID) string {
	return filepath.Join(s.dir, "snapshots", g.String())
}

// DeleteGroup removes everything the Store holds of group g: its raft log
// and stable store, its state machine's keys and its snapshots. A group
// started afterwards starts empty, as if it had never run here. The group
// must not be running (ErrGroupRunning); while DeleteGroup runs, StartGroup
// of any group waits.
//
// Whether a replica's data may go is the caller's decision: a replica that
// is still a voter of its group must keep its log and its vote, or the
// group can lose committed entries.
//
// The group's Pebble ranges are deleted, and its deleting marker set, in one
// synced batch; the snapshot directory goes next and the marker last. Open
// finishes a deletion that a crash interrupted, so no later start of the
// group meets snapshots of state that is gone: raft would take their index
// as applied and their configuration as the group's.
func (s *Store) DeleteGroup(g GroupID) error {
	s.groupsMu.Lock()
	defer s.groupsMu.Unlock()
	if s.groups == nil {
		return ErrClosed
	}
	if _, ok := s.groups[g]; ok {
		return fmt.Errorf("%w: not deleting group %s", ErrGroupRunning, g)
	}
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	ks := newKeyspace(g)
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(ks.raftPrefix, ks.raftEnd, nil); err != nil {
		return fmt.Errorf("raftstore: deleting group %s: %w", g, err)
	}
	if err := b.DeleteRange(ks.statePrefix, ks.stateEnd, nil); err != nil {
		return fmt.Errorf("raftstore: deleting group %s: %w", g, err)
	}
	if err := b.Set(ks.deleting, nil, nil); err != nil {
		return fmt.Errorf("raftstore: deleting group %s: %w", g, err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("raftstore: deleting group %s: %w", g, err)
	}
	return s.finishDelete(g)
}

// finishDelete removes group g's snapshot directory and then its deleting
// marker. The caller holds acquire.
func (s *Store) finishDelete(g GroupID) error {
	if err := os.RemoveAll(s.snapshotDir(g)); err != nil {
		return fmt.Errorf("raftstore: deleting the snapshots of group %s: %w", g, err)
	}
	// Synced, so that the marker cannot come back after a crash and take a
	// later run's snapshots with it.
	if err := s.db.Delete(deletingKey(g), pebble.Sync); err != nil {
		return fmt.Errorf("raftstore: deleting group %s: %w", g, err)
	}
	return nil
}

// finishDeletions completes, at Open, every DeleteGroup a crash interrupted.
func (s *Store) finishDeletions() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte(deletingPrefix), UpperBound: prefixEnd([]byte(deletingPrefix))})
	if err != nil {
		return fmt.Errorf("raftstore: listing interrupted group deletions: %w", err)
	}
	var pending []GroupID
	for ok := it.First(); ok; ok = it.Next() {
		if k := it.Key(); len(k) == len(deletingPrefix)+8 {
			pending = append(pending, GroupID(binary.BigEndian.Uint64(k[len(deletingPrefix):])))
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("raftstore: listing interrupted group deletions: %w", err)
	}
	for _, g := range pending {
		s.logger.Warn("finishing the deletion of a group that a stop interrupted", "group", g.String())
		if err := s.finishDelete(g); err != nil {
			return err
		}
	}
	return nil
}

// DiskUsage returns the bytes Pebble's files take on disk (tables, the
// write-ahead log, manifests): the store's data dir but for snapshots.
func (s *Store) DiskUsage() (uint64, error) {
	if err := s.acquire(); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	return s.db.Metrics().DiskSpaceUsage(), nil
}

// Groups returns, in order, every group of which the Store holds a raft
// log entry, a stable store key or a state machine key, running or not.
func (s *Store) Groups() ([]GroupID, error) {
	if err := s.acquire(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	var out []GroupID
	for _, kind := range []byte{'r', 's'} {
		// Visit one key per group: after each, seek past the group's range.
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kind, '/'}, UpperBound: []byte{kind, '/' + 1}})
		if err != nil {
			return nil, fmt.Errorf("raftstore: listing groups: %w", err)
		}
		for ok := it.First(); ok; {
			k := it.Key()
			if len(k) < 2+8 {
				ok = it.Next()
				continue
			}
			g := GroupID(binary.BigEndian.Uint64(k[2:10]))
			out = append(out, g)
			if g == math.MaxUint64 {
				break
			}
			ok = it.SeekGE(binary.BigEndian.AppendUint64([]byte{kind, '/'}, uint64(g)+1))
		}
		if err := it.Close(); err != nil {
			return nil, fmt.Errorf("raftstore: listing groups: %w", err)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// acquire takes the read side of mu and reports ErrClosed; on nil the caller
// must call s.mu.RUnlock when done with db.
func (s *Store) acquire() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// get returns a copy of key's value, or ok == false if it is missing.
// The caller holds acquire.
func (s *Store) get(key []byte) (val []byte, ok bool, err error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("raftstore: pebble get: %w", err)
	}
	// Pebble's slice is only valid until closer.Close.
	val = append([]byte{}, v...)
	if err := closer.Close(); err != nil {
		return nil, false, fmt.Errorf("raftstore: pebble get: %w", err)
	}
	return val, true, nil
}

// pebbleLogger sends Pebble's messages to hclog. Pebble's info messages
// (compactions, WAL recycling) are routine, so they go to Debug. Its
// errors are limited to one line per format a second: a background error
// that repeats (no file descriptors or no disk left) came 16,000 times a
// second and buried everything else (found by QA).
type pebbleLogger struct {
	l     hclog.Logger
	limit *loglimit.Limiter
}

// pebbleErrorInterval is how often at most Pebble's errors of one format
// are logged.
const pebbleErrorInterval = time.Second

func newPebbleLogger(l hclog.Logger) pebbleLogger {
	// Formats are Pebble's constants, a few dozen at most.
	return pebbleLogger{l: l, limit: loglimit.New(pebbleErrorInterval, 256, time.Now)}
}

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l.IsDebug() {
		p.l.Debug(fmt.Sprintf(format, args...))
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	ok, held, elsewhere := p.limit.Allow(format)
	if !ok {
		return
	}
	var attrs []any
	if held+elsewhere > 0 {
		attrs = []any{"not_logged", held + elsewhere, "log_interval", pebbleErrorInterval}
	}
	p.l.Error(fmt.Sprintf(format, args...), attrs...)
}

// Fatalf must not return (Pebble relies on that); panicking keeps the stack.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg)
	panic("pebble: " + msg)
}
