package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Reasons a decoder stops; callers wrap them in their own sentinel.
var (
	errShort    = errors.New("truncated")
	errVarint   = errors.New("malformed varint")
	errTrailing = errors.New("trailing bytes")
)

// decoder reads the binary formats of this package. The first failure sticks
// in err and every later read returns a zero value, so a decode function
// reads straight through and checks once; nothing in it can panic on
// arbitrary input.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = fmt.Errorf("at byte %d: %w", d.off, err)
	}
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.remaining() < 1 {
		d.fail(errShort)
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		if n == 0 {
			d.fail(errShort)
		} else {
			d.fail(errVarint)
		}
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		if n == 0 {
			d.fail(errShort)
		} else {
			d.fail(errVarint)
		}
		return 0
	}
	d.off += n
	return v
}

// fixed returns the next n bytes, aliasing the input.
func (d *decoder) fixed(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || d.remaining() < n {
		d.fail(errShort)
		return nil
	}
	v := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return v
}

// bytes reads a uvarint length and that many bytes (nil when empty),
// aliasing the input; the capacity is clipped so appending to the result
// cannot overwrite what follows it.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(d.remaining()) {
		d.fail(errShort)
		return nil
	}
	if n == 0 {
		return nil
	}
	return d.fixed(int(n))
}

// finish reports the first failure, or trailing bytes.
func (d *decoder) finish() error {
	if d.err == nil && d.remaining() != 0 {
		d.fail(errTrailing)
	}
	return d.err
}
