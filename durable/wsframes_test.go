package durable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// frame is one server (unmasked) or client (masked) frame of opcode op
// carrying n payload bytes.
func frame(op byte, n int, masked bool) []byte {
	b := []byte{0x80 | op}
	mask := byte(0)
	if masked {
		mask = 0x80
	}
	switch {
	case n < 126:
		b = append(b, mask|byte(n))
	case n < 1<<16:
		b = append(b, mask|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, mask|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if masked {
		b = append(b, 1, 2, 3, 4)
	}
	return append(b, bytes.Repeat([]byte{'x'}, n)...)
}

func TestFrameEdges(t *testing.T) {
	text, bin := byte(0x1), byte(0x2)
	cases := []struct {
		name       string
		stream     []byte
		edge       bool
		closeFrame bool
	}{
		{"nothing", nil, true, false},
		{"an empty frame", frame(text, 0, false), true, false},
		{"a short frame", frame(text, 5, false), true, false},
		{"a 16-bit length", frame(bin, 300, false), true, false},
		{"a 64-bit length", frame(bin, 70000, false), true, false},
		{"a masked frame", frame(text, 9, true), true, false},
		{"two frames", append(frame(text, 3, false), frame(bin, 200, false)...), true, false},
		{"a close frame", append(frame(text, 3, false), frame(opClose, 2, false)...), true, true},
		{"half a header", frame(bin, 300, false)[:3], false, false},
		{"a header without its payload", frame(text, 5, false)[:2], false, false},
		{"part of a payload", frame(bin, 70000, false)[:5000], false, false},
		{"the first byte only", frame(text, 0, false)[:1], false, false},
		{"a close frame begun", frame(opClose, 10, false)[:4], false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Whole, then a byte at a time: where reads split the stream
			// must not matter.
			var whole, bytewise frameEdges
			whole.see(tc.stream)
			for i := range tc.stream {
				bytewise.see(tc.stream[i : i+1])
			}
			for _, f := range []*frameEdges{&whole, &bytewise} {
				if f.atEdge() != tc.edge || f.closed != tc.closeFrame {
					t.Errorf("atEdge %v, closed %v; want %v, %v", f.atEdge(), f.closed, tc.edge, tc.closeFrame)
				}
			}
		})
	}
}

func FuzzFrameEdges(f *testing.F) {
	f.Add(frame(0x1, 5, false), uint8(3))
	f.Add(append(frame(0x2, 300, true), frame(opClose, 2, false)...), uint8(7))
	f.Add([]byte{0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint8(1))
	f.Fuzz(func(t *testing.T, stream []byte, step uint8) {
		var whole, chunked frameEdges
		whole.see(stream)
		n := int(step%16) + 1
		for i := 0; i < len(stream); i += n {
			chunked.see(stream[i:min(i+n, len(stream))])
		}
		if whole != chunked {
			t.Fatalf("in one piece %+v, in pieces of %d %+v", whole, n, chunked)
		}
	})
}

// brokenOff reads data and then fails with err (io.EOF: ends cleanly).
type brokenOff struct {
	data []byte
	err  error
}

func (b *brokenOff) Read(p []byte) (int, error) {
	if len(b.data) == 0 {
		return 0, b.err
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

func TestSpliceUpstreamClosesABrokenOffSocket(t *testing.T) {
	lost := errors.New("the tunnel broke")
	msg := frame(0x1, 10, false)
	closeFrame := serverCloseFrame(upstreamLostCode, upstreamLostReason)
	cases := []struct {
		name string
		sent []byte
		err  error
		want []byte // what the client receives
	}{
		{"ended cleanly", msg, io.EOF, msg},
		{"broke off between frames", msg, lost, append(bytes.Clone(msg), closeFrame...)},
		{"broke off before any frame", nil, lost, closeFrame},
		{"broke off mid-frame", msg[:6], lost, msg[:6]},
		{"broke off after the object's close", append(bytes.Clone(msg), frame(opClose, 2, false)...), lost, append(bytes.Clone(msg), frame(opClose, 2, false)...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var client bytes.Buffer
			err := spliceUpstream(&client, &brokenOff{data: bytes.Clone(tc.sent), err: tc.err})
			if wantErr := tc.err; wantErr == io.EOF && err != nil || wantErr != io.EOF && !errors.Is(err, wantErr) {
				t.Errorf("spliceUpstream: %v, want %v", err, tc.err)
			}
			if !bytes.Equal(client.Bytes(), tc.want) {
				t.Errorf("the client received %q, want %q", client.Bytes(), tc.want)
			}
		})
	}
	if got := binary.BigEndian.Uint16(closeFrame[2:4]); got != 1012 || closeFrame[0] != 0x88 || int(closeFrame[1]) != len(closeFrame)-2 {
		t.Errorf("close frame %x: want FIN+close, its length, code 1012", closeFrame)
	}
}
