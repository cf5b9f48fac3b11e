package raftstore

import (
	"encoding/binary"
	"fmt"
)

// OpKind is what an Op does.
type OpKind uint8

// The operations of an object's turn.
const (
	OpPut         OpKind = 1 // set Key to Value
	OpDelete      OpKind = 2 // remove Key
	OpDeleteAll   OpKind = 3 // remove every key of the object and its alarm (not its version)
	OpSetAlarm    OpKind = 4 // set (or move) the object's alarm to AlarmAt
	OpDeleteAlarm OpKind = 5 // cancel the object's alarm
)

func (k OpKind) String() string {
	switch k {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpDeleteAll:
		return "deleteAll"
	case OpSetAlarm:
		return "setAlarm"
	case OpDeleteAlarm:
		return "deleteAlarm"
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// Op is one write. Only the fields of its kind may be set: Key and Value
// for OpPut, Key for OpDelete, AlarmAt (unix ms) for OpSetAlarm.
type Op struct {
	Kind    OpKind
	Key     string
	Value   []byte
	AlarmAt int64
}

// ObjectBatch is the writes of one object's turn(s). It applies only if the
// object's stored version is Version-1 (a missing object is version 0); its
// ops then apply in order and the stored version becomes Version. Otherwise
// nothing of it applies: that fences writes derived from a failed earlier
// commit.
type ObjectBatch struct {
	Object  [32]byte
	Version uint64
	Ops     []Op
}

// Entry is the replicated command of a shard group: the batches of many
// objects, gathered into one raft entry.
type Entry struct {
	Batches []ObjectBatch
}

// ApplyResult is what ShardFSM.Apply returns for a decoded entry.
type ApplyResult struct {
	// Rejected are the indexes into Entry.Batches that failed the version check.
	Rejected []int
}

// MaxEntryBytes bounds the data of a log entry (an Entry's encoding) that a
// group's leader may propose; MaxBatchBytes bounds one ObjectBatch, so that
// a batch alone always makes an entry. With MaxAppendEntries they keep every
// AppendEntries within MaxRaftMessageSize, the receive limit of a peer's
// gRPC server: raft sends a follower that has fallen behind up to
// MaxAppendEntries entries at once, and an AppendEntries over the limit
// would be refused at every retry, leaving that follower behind for good.
const (
	MaxEntryBytes = 5 << 20
	MaxBatchBytes = MaxEntryBytes - 1 - binary.MaxVarintLen64 // the entry's format byte and batch count

	// appendFraming bounds what an AppendEntries adds to its entries (the
	// header, term, indexes, group), entryFraming what each entry adds to
	// its data (index, term, type, time, field tags and lengths).
	appendFraming = 4 << 10
	entryFraming  = 1 << 10
)

// appendEntriesWithin is the most entries of up to entryBytes each that an
// AppendEntries of at most messageSize bytes can carry: raft's
// MaxAppendEntries (DefaultRaftConfig uses MaxRaftMessageSize and
// MaxEntryBytes: 204).
func appendEntriesWithin(messageSize, entryBytes int) int {
	return max(1, (messageSize-appendFraming)/(entryBytes+entryFraming))
}

// EncodedLen is the length of b's encoding in an Entry.
func (b *ObjectBatch) EncodedLen() int {
	n := len(b.Object) + uvarintLen(b.Version) + uvarintLen(uint64(len(b.Ops)))
	for i := range b.Ops {
		n += b.Ops[i].EncodedLen()
	}
	return n
}

// EncodedLen is the length of op's encoding in an ObjectBatch.
func (op *Op) EncodedLen() int {
	n := 1
	switch op.Kind {
	case OpPut:
		n += uvarintLen(uint64(len(op.Key))) + len(op.Key) + uvarintLen(uint64(len(op.Value))) + len(op.Value)
	case OpDelete:
		n += uvarintLen(uint64(len(op.Key))) + len(op.Key)
	case OpSetAlarm:
		n += binary.PutVarint(make([]byte, binary.MaxVarintLen64), op.AlarmAt)
	}
	return n
}

// EntryLen is the length of the encoding of an Entry of batches whose
// EncodedLen add up to batchBytes.
func EntryLen(batches, batchBytes int) int {
	return 1 + uvarintLen(uint64(batches)) + batchBytes
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// entryFormatV1 is the first byte of an encoded Entry.
//
// Layout v1:
//
//	version(1) | uvarint #batches
//	batch: object(32) | uvarint version (≥ 1) | uvarint #ops | ops
//	op:    kind(1) | put: uvarint len key, key, uvarint len value, value
//	                 | delete: uvarint len key, key
//	                 | setAlarm: varint at
//	                 | deleteAll, deleteAlarm: nothing
const entryFormatV1 byte = 1

// Smallest encodings, used to bound counts read from untrusted input before
// allocating for them.
const (
	minBatchBytes = 32 + 1 + 1
	minOpBytes    = 1
)

// AppendBinary appends the encoding of e to b (encoding.BinaryAppender).
// Ops carrying fields their kind does not use, unknown kinds and version 0
// are ErrInvalidEntry: they would not survive decoding unchanged.
func (e *Entry) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, entryFormatV1)
	b = binary.AppendUvarint(b, uint64(len(e.Batches)))
	for i := range e.Batches {
		ob := &e.Batches[i]
		if ob.Version == 0 {
			return nil, fmt.Errorf("%w: batch %d has version 0", ErrInvalidEntry, i)
		}
		b = append(b, ob.Object[:]...)
		b = binary.AppendUvarint(b, ob.Version)
		b = binary.AppendUvarint(b, uint64(len(ob.Ops)))
		for j := range ob.Ops {
			op := &ob.Ops[j]
			if err := op.check(); err != nil {
				return nil, fmt.Errorf("%w: batch %d op %d: %w", ErrInvalidEntry, i, j, err)
			}
			b = append(b, byte(op.Kind))
			switch op.Kind {
			case OpPut:
				b = binary.AppendUvarint(b, uint64(len(op.Key)))
				b = append(b, op.Key...)
				b = binary.AppendUvarint(b, uint64(len(op.Value)))
				b = append(b, op.Value...)
			case OpDelete:
				b = binary.AppendUvarint(b, uint64(len(op.Key)))
				b = append(b, op.Key...)
			case OpSetAlarm:
				b = binary.AppendVarint(b, op.AlarmAt)
			}
		}
	}
	return b, nil
}

// check reports fields an op's kind does not carry.
func (op *Op) check() error {
	hasKey, hasValue, hasAt := false, false, false
	switch op.Kind {
	case OpPut:
		hasKey, hasValue = true, true
	case OpDelete:
		hasKey = true
	case OpSetAlarm:
		hasAt = true
	case OpDeleteAll, OpDeleteAlarm:
	default:
		return fmt.Errorf("unknown op kind %d", uint8(op.Kind))
	}
	switch {
	case !hasKey && op.Key != "":
		return fmt.Errorf("%v op carries a key", op.Kind)
	case !hasValue && len(op.Value) != 0:
		return fmt.Errorf("%v op carries a value", op.Kind)
	case !hasAt && op.AlarmAt != 0:
		return fmt.Errorf("%v op carries an alarm time", op.Kind)
	}
	return nil
}

// DecodeEntry decodes an Entry. The result does not alias b. Errors wrap
// ErrCorruptEntry; it never panics, and counts in the input are checked
// against its length before anything is allocated for them.
func DecodeEntry(b []byte) (Entry, error) {
	// One copy of the input; every Value aliases it (with clipped capacity).
	buf := append([]byte(nil), b...)
	d := decoder{b: buf}
	if v := d.byte(); d.err == nil && v != entryFormatV1 {
		return Entry{}, fmt.Errorf("%w: unknown format version %d", ErrCorruptEntry, v)
	}
	n := d.uvarint()
	if d.err == nil && n > uint64(d.remaining()/minBatchBytes) {
		return Entry{}, fmt.Errorf("%w: %d batches cannot fit in %d bytes", ErrCorruptEntry, n, d.remaining())
	}
	var e Entry
	if n > 0 {
		e.Batches = make([]ObjectBatch, n)
	}
	for i := range e.Batches {
		ob := &e.Batches[i]
		copy(ob.Object[:], d.fixed(32))
		ob.Version = d.uvarint()
		if d.err == nil && ob.Version == 0 {
			return Entry{}, fmt.Errorf("%w: batch %d has version 0", ErrCorruptEntry, i)
		}
		nops := d.uvarint()
		if d.err != nil {
			break
		}
		if nops > uint64(d.remaining()/minOpBytes) {
			return Entry{}, fmt.Errorf("%w: batch %d: %d ops cannot fit in %d bytes", ErrCorruptEntry, i, nops, d.remaining())
		}
		if nops > 0 {
			ob.Ops = make([]Op, nops)
		}
		for j := range ob.Ops {
			op := &ob.Ops[j]
			op.Kind = OpKind(d.byte())
			switch op.Kind {
			case OpPut:
				op.Key = string(d.bytes())
				op.Value = d.bytes()
				if op.Value == nil {
					// An empty value is a value: keep it distinguishable from "no value".
					op.Value = []byte{}
				}
			case OpDelete:
				op.Key = string(d.bytes())
			case OpSetAlarm:
				op.AlarmAt = d.varint()
			case OpDeleteAll, OpDeleteAlarm:
			default:
				if d.err == nil {
					return Entry{}, fmt.Errorf("%w: batch %d op %d: unknown op kind %d", ErrCorruptEntry, i, j, uint8(op.Kind))
				}
			}
			if d.err != nil {
				break
			}
		}
	}
	if err := d.finish(); err != nil {
		return Entry{}, fmt.Errorf("%w: %w", ErrCorruptEntry, err)
	}
	return e, nil
}
