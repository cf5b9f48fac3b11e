package raftstore

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
)

// Options tunes a Store.
type Options struct {
	// CacheSize is Pebble's block cache in bytes; 0 means 64 MiB.
	CacheSize int64
	// Logger receives raftstore's, Pebble's and raft's messages; nil means
	// warnings and errors to stderr.
	Logger hclog.Logger
}

const defaultCacheSize = 64 << 20

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
		Logger:             pebbleLogger{logger.Named("pebble")},
		FormatMajorVersion: pebble.FormatNewest,
		// Larger memtables than the 4 MiB default: the raft log is written
		// and soon deleted, and most of it should die in the memtable.
		MemTableSize: 32 << 20,
	}
	db, err := pebble.Open(dir, popts)
	if err != nil {
		return nil, fmt.Errorf("raftstore: opening pebble in %s: %w", dir, err)
	}
	return &Store{dir: dir, logger: logger, db: db, groups: make(map[GroupID]*Group)}, nil
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
	if err := s.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("raftstore: closing pebble: %w", err))
	}
	return errors.Join(errs...)
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
// (compactions, WAL recycling) are routine, so they go to Debug.
type pebbleLogger struct{ l hclog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l.IsDebug() {
		p.l.Debug(fmt.Sprintf(format, args...))
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) { p.l.Error(fmt.Sprintf(format, args...)) }

// Fatalf must not return (Pebble relies on that); panicking keeps the stack.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg)
	panic("pebble: " + msg)
}
