package raftstore

import (
	"encoding/binary"
	"math"
)

// keyspace holds the precomputed key prefixes of one group (see doc.go for
// the layout). Building keys is then a single append of a prefix.
type keyspace struct {
	raftPrefix   []byte // r/<g>/ : everything raft's log and stable store own
	raftEnd      []byte // r/<g>0
	logPrefix    []byte // r/<g>/log/
	logEnd       []byte // first key after every log key of the group
	stablePrefix []byte // r/<g>/stable/
	statePrefix  []byte // s/<g>/ : everything the shard FSM owns
	stateEnd     []byte // s/<g>0
	objPrefix    []byte // s/<g>/o/
	verPrefix    []byte // s/<g>/v/
	alarmPrefix  []byte // s/<g>/a/
	timePrefix   []byte // s/<g>/t/
	timeEnd      []byte
	applied      []byte // s/<g>/applied
	restoring    []byte // s/<g>/restoring
	deleting     []byte // d/<g> : DeleteGroup has not finished yet
}

func newKeyspace(g GroupID) keyspace {
	group := func(kind byte, rest string) []byte {
		b := make([]byte, 0, 2+8+1+len(rest))
		b = append(b, kind, '/')
		b = binary.BigEndian.AppendUint64(b, uint64(g))
		b = append(b, '/')
		return append(b, rest...)
	}
	ks := keyspace{
		raftPrefix:   group('r', ""),
		logPrefix:    group('r', "log/"),
		stablePrefix: group('r', "stable/"),
		statePrefix:  group('s', ""),
		objPrefix:    group('s', "o/"),
		verPrefix:    group('s', "v/"),
		alarmPrefix:  group('s', "a/"),
		timePrefix:   group('s', "t/"),
		applied:      group('s', "applied"),
		restoring:    group('s', "restoring"),
		deleting:     deletingKey(g),
	}
	ks.raftEnd = prefixEnd(ks.raftPrefix)
	ks.logEnd = prefixEnd(ks.logPrefix)
	ks.stateEnd = prefixEnd(ks.statePrefix)
	ks.timeEnd = prefixEnd(ks.timePrefix)
	return ks
}

// deletingPrefix holds one key per group whose DeleteGroup began and has
// not finished: d/<group8>.
const deletingPrefix = "d/"

func deletingKey(g GroupID) []byte {
	return binary.BigEndian.AppendUint64([]byte(deletingPrefix), uint64(g))
}

// prefixEnd returns the smallest key greater than every key that begins
// with p, or nil if there is none (p is empty or all 0xff).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func (ks *keyspace) logKey(index uint64) []byte {
	b := make([]byte, 0, len(ks.logPrefix)+8)
	b = append(b, ks.logPrefix...)
	return binary.BigEndian.AppendUint64(b, index)
}

func (ks *keyspace) stableKey(key []byte) []byte {
	b := make([]byte, 0, len(ks.stablePrefix)+len(key))
	b = append(b, ks.stablePrefix...)
	return append(b, key...)
}

// objectPrefix is s/<g>/o/<obj32>/ : the object's user keys follow it.
func (ks *keyspace) objectPrefix(obj *[32]byte) []byte {
	b := make([]byte, 0, len(ks.objPrefix)+33)
	b = append(b, ks.objPrefix...)
	b = append(b, obj[:]...)
	return append(b, '/')
}

func (ks *keyspace) userKey(obj *[32]byte, key string) []byte {
	b := make([]byte, 0, len(ks.objPrefix)+33+len(key))
	b = append(b, ks.objPrefix...)
	b = append(b, obj[:]...)
	b = append(b, '/')
	return append(b, key...)
}

func (ks *keyspace) versionKey(obj *[32]byte) []byte {
	b := make([]byte, 0, len(ks.verPrefix)+32)
	b = append(b, ks.verPrefix...)
	return append(b, obj[:]...)
}

func (ks *keyspace) alarmKey(obj *[32]byte) []byte {
	b := make([]byte, 0, len(ks.alarmPrefix)+32)
	b = append(b, ks.alarmPrefix...)
	return append(b, obj[:]...)
}

// alarmIndexKey is s/<g>/t/<time8>/<obj32>.
func (ks *keyspace) alarmIndexKey(at int64, obj *[32]byte) []byte {
	b := make([]byte, 0, len(ks.timePrefix)+8+1+32)
	b = append(b, ks.timePrefix...)
	b = appendTime(b, at)
	b = append(b, '/')
	return append(b, obj[:]...)
}

// appendTime encodes a signed time so that byte order is numeric order.
func appendTime(b []byte, at int64) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(at)^(1<<63))
}

func decodeTime(b []byte) int64 {
	return int64(binary.BigEndian.Uint64(b) ^ (1 << 63))
}

// timeIndexUpper is the exclusive upper bound of the alarm index entries
// due at or before notAfter.
func (ks *keyspace) timeIndexUpper(notAfter int64) []byte {
	if notAfter == math.MaxInt64 {
		return ks.timeEnd
	}
	b := append([]byte(nil), ks.timePrefix...)
	return appendTime(b, notAfter+1)
}
