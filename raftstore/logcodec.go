package raftstore

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// logFormatV1 is the first byte of every stored raft log entry. A new layout
// gets a new number, so old entries stay readable.
//
// Layout v1:
//
//	version(1) | uvarint index | uvarint term | type(1)
//	| uvarint len(data) | data | uvarint len(extensions) | extensions
//	| appended flag(1): 0 = zero time, 1 = followed by varint unix seconds, uvarint nanoseconds
//
// Seconds plus nanoseconds rather than UnixNano: they cover every time.Time,
// so AppendedAt round-trips exactly whatever the clock says.
const logFormatV1 byte = 1

// appendLog appends the encoding of l to b.
func appendLog(b []byte, l *raft.Log) []byte {
	b = append(b, logFormatV1)
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	b = append(b, byte(l.Type))
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	b = append(b, l.Extensions...)
	if l.AppendedAt.IsZero() {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendVarint(b, l.AppendedAt.Unix())
	return binary.AppendUvarint(b, uint64(l.AppendedAt.Nanosecond()))
}

// decodeLog decodes b into l. Data and Extensions alias b (nil when empty).
// Errors wrap ErrCorruptLog; garbage never panics.
func decodeLog(b []byte, l *raft.Log) error {
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != logFormatV1 {
		return fmt.Errorf("%w: unknown format version %d", ErrCorruptLog, v)
	}
	index := d.uvarint()
	term := d.uvarint()
	typ := raft.LogType(d.byte())
	data := d.bytes()
	ext := d.bytes()
	var at time.Time
	switch flag := d.byte(); {
	case d.err != nil:
	case flag == 1:
		sec := d.varint()
		nsec := d.uvarint()
		if d.err == nil && nsec >= uint64(time.Second) {
			return fmt.Errorf("%w: appended-at nanoseconds %d out of range", ErrCorruptLog, nsec)
		}
		// UTC so that the zero time decodes to exactly time.Time{}.
		at = time.Unix(sec, int64(nsec)).UTC()
	case flag != 0:
		return fmt.Errorf("%w: bad appended-at flag %d", ErrCorruptLog, flag)
	}
	if err := d.finish(); err != nil {
		return fmt.Errorf("%w: %w", ErrCorruptLog, err)
	}
	*l = raft.Log{Index: index, Term: term, Type: typ, Data: data, Extensions: ext, AppendedAt: at}
	return nil
}
