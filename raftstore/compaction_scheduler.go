package raftstore

import (
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// compactionScheduler is Pebble's default ConcurrencyLimitScheduler
// without its 100 ms ticker. Pebble's scheduler lets as many compactions
// run as the DB allows (GetAllowedWithoutPermission, which grows with the
// compaction backlog) and starts a waiting one when a running one ends; it
// also samples the allowance ten times a second, for the case where a
// flush raised it while a compaction waited. Ten wake-ups a second were
// about a sixth of an idle node's context switches, with nothing to do
// (docs/benchmarks.md, session 6). Pebble tells the scheduler of each
// flush (UpdateGetAllowedWithoutPermission), so this one grants then, when
// a compaction ends, and once a second as a safety net.
type compactionScheduler struct {
	db   pebble.DBForCompaction // set by Register, before any other call
	poke chan struct{}          // capacity 1: a flush ended, grant soon
	stop chan struct{}          // closed by Unregister
	done chan struct{}          // closed when the granter goroutine ends

	mu           sync.Mutex
	granted      *sync.Cond // signalled when granting ends
	running      int        // compactions granted and not done
	granting     bool       // one goroutine is in grant's loop
	unregistered bool
}

var (
	_ pebble.CompactionScheduler   = (*compactionScheduler)(nil)
	_ pebble.CompactionGrantHandle = (*compactionScheduler)(nil)
)

// compactionSafetyInterval is how often the scheduler looks for a waiting
// compaction on its own.
const compactionSafetyInterval = time.Second

func newCompactionScheduler() *compactionScheduler {
	s := &compactionScheduler{poke: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	s.granted = sync.NewCond(&s.mu)
	return s
}

// Register implements pebble.CompactionScheduler.
func (s *compactionScheduler) Register(_ int, db pebble.DBForCompaction) {
	s.db = db
	go s.granter()
}

func (s *compactionScheduler) granter() {
	defer close(s.done)
	t := time.NewTicker(compactionSafetyInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.poke:
		case <-t.C:
		}
		s.grant()
	}
}

// Unregister implements pebble.CompactionScheduler: no grant is under way
// or starts once it returns.
func (s *compactionScheduler) Unregister() {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unregistered = true
	for s.granting {
		s.granted.Wait()
	}
}

// TrySchedule implements pebble.CompactionScheduler.
func (s *compactionScheduler) TrySchedule() (bool, pebble.CompactionGrantHandle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unregistered || s.db.GetAllowedWithoutPermission() <= s.running {
		return false, nil
	}
	s.running++
	return true, s
}

// UpdateGetAllowedWithoutPermission implements pebble.CompactionScheduler.
// Pebble calls it holding its own mutex, which granting takes: grant on
// the granter's goroutine.
func (s *compactionScheduler) UpdateGetAllowedWithoutPermission() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// Started, MeasureCPU and CumulativeStats implement
// pebble.CompactionGrantHandle; only Done matters to this scheduler.
func (s *compactionScheduler) Started()                                          {}
func (s *compactionScheduler) MeasureCPU(pebble.CompactionGoroutineKind)         {}
func (s *compactionScheduler) CumulativeStats(pebble.CompactionGrantHandleStats) {}

// Done implements pebble.CompactionGrantHandle: a compaction ended, so a
// waiting one may start.
func (s *compactionScheduler) Done() {
	s.mu.Lock()
	s.running--
	s.mu.Unlock()
	s.grant()
}

// grant starts waiting compactions while the DB allows more than run.
// One caller grants at a time; others wait for it and then look again.
func (s *compactionScheduler) grant() {
	s.mu.Lock()
	for s.granting {
		s.granted.Wait()
	}
	if s.unregistered {
		s.mu.Unlock()
		return
	}
	toGrant := s.db.GetAllowedWithoutPermission() - s.running
	if toGrant <= 0 {
		s.mu.Unlock()
		return
	}
	s.granting = true
	s.mu.Unlock()
	// GetWaitingCompaction and Schedule take Pebble's mutex: not under s.mu.
	for ; toGrant > 0; toGrant-- {
		if waiting, _ := s.db.GetWaitingCompaction(); !waiting || !s.db.Schedule(s) {
			break
		}
		s.mu.Lock()
		s.running++
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.granting = false
	s.granted.Broadcast()
	s.mu.Unlock()
}
