package raftstore

import (
	"testing"

	"github.com/roostdb/roost/multiraft"
)

// The multiraft engine hands a round's committed commands to the state
// machine in several Apply calls on one uncommitted batch: it flushes the
// commands before each configuration change (multiraft/group.go,
// applyEntriesTo). A later call must see what the earlier ones wrote: an
// object whose alarm one call set and the next deletes must end without an
// alarm, and one whose alarm is moved must be indexed at the new time only.
func TestShardMachineApplyCallsShareTheBatch(t *testing.T) {
	s := openTest(t)
	m := s.NewShardFSM(1).Machine()
	cmd := func(index uint64, bs ...ObjectBatch) []multiraft.Command {
		return []multiraft.Command{{Index: index, Data: encode(t, Entry{Batches: bs})}}
	}
	b := s.db.NewBatch()
	defer b.Close()
	// Before a configuration change: objects 0 and 1 set alarms.
	if _, err := m.Apply(b, cmd(2, batch(oid(0), 1, setAlarm(100)), batch(oid(1), 1, setAlarm(100)))); err != nil {
		t.Fatal(err)
	}
	// After it, in the same round: object 0 deletes its alarm, object 1
	// moves it.
	if _, err := m.Apply(b, cmd(4, batch(oid(0), 2, deleteAlarm()), batch(oid(1), 2, setAlarm(200)))); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
	if at, ok, err := s.Alarm(1, oid(0)); err != nil || ok {
		t.Errorf("object 0's alarm after its deletion: %d %v %v", at, ok, err)
	}
	due, err := s.DueAlarms(1, 1<<62, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []DueAlarm{{oid(1), 200}}; len(due) != 1 || due[0] != want[0] {
		t.Errorf("DueAlarms = %v, want %v", due, want)
	}
}
