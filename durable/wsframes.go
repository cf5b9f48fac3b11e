package durable

import "encoding/binary"

// frameEdges follows the frame boundaries of the bytes a server sends on a
// WebSocket (RFC 6455, section 5.2) without holding any payload: the
// Worker's splice uses it to tell whether it may add a close frame of its
// own when the object's side of a socket breaks off (spliceUpstream).
type frameEdges struct {
	head    [maxFrameHead]byte
	n       int    // bytes of the current frame's header seen
	payload uint64 // bytes of the current frame's payload still to come
	closed  bool   // a close frame has begun: nothing may follow it
}

// maxFrameHead is the longest frame header: two bytes, an 8-byte length
// and a 4-byte masking key.
const maxFrameHead = 14

// opClose is the close frame's opcode.
const opClose = 0x8

// atEdge reports whether the bytes seen end exactly at a frame's end (or
// are none), so that a frame written next is a frame of its own.
func (f *frameEdges) atEdge() bool { return f.n == 0 && f.payload == 0 }

// see follows p, the next bytes of the stream.
func (f *frameEdges) see(p []byte) {
	for len(p) > 0 {
		if f.payload > 0 {
			k := min(uint64(len(p)), f.payload)
			f.payload -= k
			p = p[k:]
			continue
		}
		f.head[f.n] = p[0]
		f.n++
		p = p[1:]
		if size, ok := f.headDone(); ok {
			if f.head[0]&0x0f == opClose {
				f.closed = true
			}
			f.payload, f.n = size, 0
		}
	}
}

// headDone reports, once the current frame's header is complete, the
// length of its payload.
func (f *frameEdges) headDone() (payload uint64, done bool) {
	if f.n < 2 {
		return 0, false
	}
	need := 2
	size := uint64(f.head[1] & 0x7f)
	switch size {
	case 126:
		need += 2
	case 127:
		need += 8
	}
	if f.head[1]&0x80 != 0 {
		need += 4 // the masking key (a client's frames)
	}
	if f.n < need {
		return 0, false
	}
	switch size {
	case 126:
		size = uint64(binary.BigEndian.Uint16(f.head[2:4]))
	case 127:
		size = binary.BigEndian.Uint64(f.head[2:10])
	}
	return size, true
}

// serverCloseFrame is an unmasked close frame with code and reason (at
// most 123 bytes, the rest cut).
func serverCloseFrame(code uint16, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	b := make([]byte, 0, 4+len(reason))
	b = append(b, 0x80|opClose, byte(2+len(reason)))
	b = binary.BigEndian.AppendUint16(b, code)
	return append(b, reason...)
}
