package raftstore

import (
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// fakeCompactionDB is a DB with a number of compactions waiting to run and
// an allowance.
type fakeCompactionDB struct {
	mu        sync.Mutex
	allowed   int
	waiting   int
	scheduled int
}

func (d *fakeCompactionDB) GetAllowedWithoutPermission() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.allowed
}

func (d *fakeCompactionDB) GetWaitingCompaction() (bool, pebble.WaitingCompaction) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.waiting > 0, pebble.WaitingCompaction{}
}

func (d *fakeCompactionDB) Schedule(pebble.CompactionGrantHandle) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.waiting == 0 {
		return false
	}
	d.waiting--
	d.scheduled++
	return true
}

func (d *fakeCompactionDB) set(allowed, waiting int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.allowed, d.waiting = allowed, waiting
}

func (d *fakeCompactionDB) counts() (waiting, scheduled int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.waiting, d.scheduled
}

var _ pebble.DBForCompaction = (*fakeCompactionDB)(nil)

func TestCompactionScheduler(t *testing.T) {
	db := &fakeCompactionDB{allowed: 1}
	s := newCompactionScheduler()
	s.Register(1, db)
	unregistered := false
	defer func() {
		if !unregistered {
			s.Unregister()
		}
	}()

	// TrySchedule grants up to the allowance.
	ok, h := s.TrySchedule()
	if !ok || h == nil {
		t.Fatal("first compaction refused with an allowance of 1")
	}
	if ok, _ := s.TrySchedule(); ok {
		t.Fatal("second compaction granted with an allowance of 1")
	}

	// The refused one waits; the end of the running one starts it.
	db.set(1, 1)
	h.Done()
	if waiting, scheduled := db.counts(); waiting != 0 || scheduled != 1 {
		t.Fatalf("after Done: %d waiting, %d scheduled; want 0, 1", waiting, scheduled)
	}

	// A flush raises the allowance while one runs: the waiting compaction
	// starts soon, without waiting for the running one or the safety tick.
	db.set(2, 1)
	start := time.Now()
	s.UpdateGetAllowedWithoutPermission()
	waitFor(t, compactionSafetyInterval/2, "the waiting compaction to start after a flush", func() bool {
		_, scheduled := db.counts()
		return scheduled == 2
	})
	t.Logf("granted %v after the flush", time.Since(start))

	// Nothing more than allowed runs: two running, allowance two.
	db.set(2, 1)
	s.UpdateGetAllowedWithoutPermission()
	time.Sleep(50 * time.Millisecond)
	if _, scheduled := db.counts(); scheduled != 2 {
		t.Fatalf("%d compactions scheduled, more than the allowance of 2", scheduled)
	}

	// After Unregister nothing is granted.
	s.Unregister()
	unregistered = true
	if ok, _ := s.TrySchedule(); ok {
		t.Fatal("TrySchedule granted after Unregister")
	}
	s.Done()
	if _, scheduled := db.counts(); scheduled != 2 {
		t.Fatal("a compaction was scheduled after Unregister")
	}
}
