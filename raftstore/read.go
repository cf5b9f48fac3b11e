package raftstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
	"github.com/roostdb/roost/durable"
)

// The committed state of a group, as the shard FSM has applied it. On the
// group's leader (after a leadership check) that is everything committed.

// readUint64 reads an 8-byte big-endian value; missing is 0. Caller holds acquire.
func (s *Store) readUint64(key []byte) (uint64, error) {
	v, ok, err := s.get(key)
	if err != nil || !ok {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: key %q holds %d bytes, want 8", ErrCorruptState, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// readAlarm reads an object's alarm time. Caller holds acquire.
func (s *Store) readAlarm(ks *keyspace, obj *[32]byte) (int64, bool, error) {
	v, ok, err := s.get(ks.alarmKey(obj))
	if err != nil || !ok {
		return 0, false, err
	}
	if len(v) != 8 {
		return 0, false, fmt.Errorf("%w: alarm of %x holds %d bytes, want 8", ErrCorruptState, obj[:], len(v))
	}
	return decodeTime(v), true, nil
}

// Get returns a copy of the value of key in object obj of group g.
func (s *Store) Get(g GroupID, obj [32]byte, key string) ([]byte, bool, error) {
	if err := s.acquire(); err != nil {
		return nil, false, err
	}
	defer s.mu.RUnlock()
	ks := newKeyspace(g)
	return s.get(ks.userKey(&obj, key))
}

// List returns the object's keys selected by opts with their values, with
// Workers' storage.list() semantics: Start inclusive, StartAfter exclusive,
// End exclusive, Prefix, Reverse (descending; with Limit it keeps the last
// keys of the range), Limit 0 = no limit. Keys are ordered by their bytes.
func (s *Store) List(g GroupID, obj [32]byte, opts durable.ListOptions) ([]durable.KV, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	ks := newKeyspace(g)
	base := ks.objectPrefix(&obj)
	lower, upper := listBounds(base, opts)
	out := []durable.KV{}
	if upper != nil && bytes.Compare(lower, upper) >= 0 {
		return out, nil
	}
	if err := s.acquire(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("raftstore: list iterator: %w", err)
	}
	step := it.Next
	ok := false
	if opts.Reverse {
		ok, step = it.Last(), it.Prev
	} else {
		ok = it.First()
	}
	for ; ok && (opts.Limit == 0 || len(out) < opts.Limit); ok = step() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("raftstore: list: %w", err)
		}
		out = append(out, durable.KV{Key: string(it.Key()[len(base):]), Value: append([]byte{}, v...)})
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("raftstore: list: %w", err)
	}
	return out, nil
}

// listBounds turns opts into the Pebble key range [lower, upper) under the
// object prefix base. Every bound narrows the range: the lower bound is the
// greatest of Start, the successor of StartAfter and Prefix; the upper
// bound the least of End and the end of Prefix's range.
func listBounds(base []byte, opts durable.ListOptions) (lower, upper []byte) {
	lo := ""
	if opts.Start != "" {
		lo = opts.Start
	}
	if opts.StartAfter != "" {
		// The smallest key after StartAfter is StartAfter + "\x00".
		if s := opts.StartAfter + "\x00"; s > lo {
			lo = s
		}
	}
	if opts.Prefix > lo {
		lo = opts.Prefix
	}
	lower = append(append([]byte(nil), base...), lo...)

	upper = prefixEnd(base) // base ends in '/', so this is never nil
	if opts.End != "" {
		upper = append(append([]byte(nil), base...), opts.End...)
	}
	if opts.Prefix != "" {
		if pe := prefixEnd([]byte(opts.Prefix)); pe != nil {
			if pu := append(append([]byte(nil), base...), pe...); bytes.Compare(pu, upper) < 0 {
				upper = pu
			}
		}
	}
	return lower, upper
}

// ObjectVersion returns the object's stored version (0 if it has none).
func (s *Store) ObjectVersion(g GroupID, obj [32]byte) (uint64, error) {
	if err := s.acquire(); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	ks := newKeyspace(g)
	return s.readUint64(ks.versionKey(&obj))
}

// Alarm returns the time (unix ms) the object's alarm is set for, if any.
func (s *Store) Alarm(g GroupID, obj [32]byte) (atMillis int64, ok bool, err error) {
	if err := s.acquire(); err != nil {
		return 0, false, err
	}
	defer s.mu.RUnlock()
	ks := newKeyspace(g)
	return s.readAlarm(&ks, &obj)
}

// DueAlarm is an object whose alarm is due.
type DueAlarm struct {
	Object [32]byte
	At     int64 // unix ms
}

// DueAlarms returns the group's alarms set for notAfterMillis or earlier,
// earliest first (ties by object ID), at most limit of them (limit <= 0:
// all).
func (s *Store) DueAlarms(g GroupID, notAfterMillis int64, limit int) ([]DueAlarm, error) {
	return s.dueAlarms(g, nil, notAfterMillis, limit)
}

// DueAlarmsAfter is DueAlarms continued after the alarm after (one it
// returned): the due alarms that come after it, in the same order.
func (s *Store) DueAlarmsAfter(g GroupID, after DueAlarm, notAfterMillis int64, limit int) ([]DueAlarm, error) {
	return s.dueAlarms(g, &after, notAfterMillis, limit)
}

func (s *Store) dueAlarms(g GroupID, after *DueAlarm, notAfterMillis int64, limit int) ([]DueAlarm, error) {
	if err := s.acquire(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	ks := newKeyspace(g)
	lower := ks.timePrefix
	if after != nil {
		// The smallest index key after after's own.
		lower = append(ks.alarmIndexKey(after.At, &after.Object), 0)
	}
	upper := ks.timeIndexUpper(notAfterMillis)
	if bytes.Compare(lower, upper) >= 0 {
		return nil, nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("raftstore: alarm iterator: %w", err)
	}
	var out []DueAlarm
	for ok := it.First(); ok && (limit <= 0 || len(out) < limit); ok = it.Next() {
		k := it.Key()[len(ks.timePrefix):]
		if len(k) != 8+1+32 {
			_ = it.Close()
			return nil, fmt.Errorf("%w: alarm index key of %d bytes", ErrCorruptState, len(k))
		}
		var a DueAlarm
		a.At = decodeTime(k[:8])
		copy(a.Object[:], k[9:])
		out = append(out, a)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("raftstore: alarm iterator: %w", err)
	}
	return out, nil
}

// NextAlarm returns the earliest alarm time of group g that is later than
// afterMillis, if there is one: an alarm scheduler sleeps until then
// instead of scanning for due alarms while none can be due.
func (s *Store) NextAlarm(g GroupID, afterMillis int64) (atMillis int64, ok bool, err error) {
	if afterMillis == math.MaxInt64 {
		return 0, false, nil
	}
	if err := s.acquire(); err != nil {
		return 0, false, err
	}
	defer s.mu.RUnlock()
	ks := newKeyspace(g)
	// timeIndexUpper(after) is the first index key of after+1: the lower bound.
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: ks.timeIndexUpper(afterMillis), UpperBound: ks.timeEnd})
	if err != nil {
		return 0, false, fmt.Errorf("raftstore: alarm iterator: %w", err)
	}
	if it.First() {
		k := it.Key()[len(ks.timePrefix):]
		if len(k) != 8+1+32 {
			_ = it.Close()
			return 0, false, fmt.Errorf("%w: alarm index key of %d bytes", ErrCorruptState, len(k))
		}
		atMillis, ok = decodeTime(k[:8]), true
	}
	if err := it.Close(); err != nil {
		return 0, false, fmt.Errorf("raftstore: alarm iterator: %w", err)
	}
	return atMillis, ok, nil
}

// AppliedIndex returns the last raft index the group's FSM applied (0 if none).
func (s *Store) AppliedIndex(g GroupID) (uint64, error) {
	if err := s.acquire(); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	ks := newKeyspace(g)
	return s.readUint64(ks.applied)
}
