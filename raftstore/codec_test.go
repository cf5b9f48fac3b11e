package raftstore

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func sampleEntry() Entry {
	return Entry{Batches: []ObjectBatch{
		batch(oid(1), 1, put("a", "1"), put("empty", ""), del("gone"), setAlarm(-5), deleteAlarm(), deleteAll()),
		batch(oid(2), math.MaxUint64, put("日本", "\x00\xff"), setAlarm(math.MinInt64), setAlarm(math.MaxInt64)),
		batch(oid(3), 7), // a batch with no ops only bumps the version
	}}
}

func TestEntryRoundTrip(t *testing.T) {
	for _, e := range []Entry{{}, sampleEntry()} {
		b, err := e.AppendBinary([]byte("prefix"))
		if err != nil {
			t.Fatal(err)
		}
		if string(b[:6]) != "prefix" || b[6] != entryFormatV1 {
			t.Fatalf("AppendBinary must append after the prefix, format byte first: % x", b[:8])
		}
		got, err := DecodeEntry(b[6:])
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
		}
		// The result does not alias the input.
		for i := range b {
			b[i] = 0xAA
		}
		if !reflect.DeepEqual(got, e) {
			t.Fatal("decoded entry changed when the input buffer was overwritten")
		}
	}
}

func TestEntryEncodeRejectsInvalid(t *testing.T) {
	cases := map[string]Op{
		"unknown kind":        {Kind: 9},
		"kind zero":           {},
		"delete with value":   {Kind: OpDelete, Key: "k", Value: []byte("v")},
		"deleteAll with key":  {Kind: OpDeleteAll, Key: "k"},
		"setAlarm with key":   {Kind: OpSetAlarm, Key: "k", AlarmAt: 1},
		"put with alarm":      {Kind: OpPut, Key: "k", AlarmAt: 1},
		"deleteAlarm with at": {Kind: OpDeleteAlarm, AlarmAt: 1},
	}
	for name, op := range cases {
		e := Entry{Batches: []ObjectBatch{batch(oid(1), 1, op)}}
		if _, err := e.AppendBinary(nil); !errors.Is(err, ErrInvalidEntry) {
			t.Errorf("%s: AppendBinary = %v, want ErrInvalidEntry", name, err)
		}
	}
	e := Entry{Batches: []ObjectBatch{batch(oid(1), 0)}}
	if _, err := e.AppendBinary(nil); !errors.Is(err, ErrInvalidEntry) {
		t.Errorf("version 0: AppendBinary = %v, want ErrInvalidEntry", err)
	}
}

func TestDecodeEntryRejectsGarbage(t *testing.T) {
	good := encode(t, sampleEntry())
	cases := map[string][]byte{
		"empty":            nil,
		"unknown version":  {2, 0},
		"trailing byte":    append(append([]byte(nil), good...), 0),
		"huge batch count": {1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"huge op count":    append(append([]byte{1, 1}, make([]byte, 32)...), 1, 0xff, 0xff, 0xff, 0x7f),
		"version zero":     append(append([]byte{1, 1}, make([]byte, 32)...), 0, 0),
		"unknown op kind":  append(append([]byte{1, 1}, make([]byte, 32)...), 1, 1, 77),
		"key past end":     append(append([]byte{1, 1}, make([]byte, 32)...), 1, 1, byte(OpDelete), 50, 'a'),
		"bad varint":       {1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	}
	for i := 1; i < len(good); i++ {
		if _, err := DecodeEntry(good[:i]); !errors.Is(err, ErrCorruptEntry) {
			t.Fatalf("DecodeEntry(truncated to %d bytes) = %v, want ErrCorruptEntry", i, err)
		}
	}
	for name, b := range cases {
		if e, err := DecodeEntry(b); !errors.Is(err, ErrCorruptEntry) {
			t.Errorf("%s: DecodeEntry = %+v, %v; want ErrCorruptEntry", name, e, err)
		}
	}
}

func TestLogCodecRoundTrip(t *testing.T) {
	logs := []raft.Log{
		{},
		*testLog(1),
		{Index: math.MaxUint64, Term: math.MaxUint64, Type: 255, Data: bytes.Repeat([]byte{7}, 1000), Extensions: []byte{0}},
		{Index: 3, AppendedAt: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC)},
		{Index: 4, AppendedAt: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
		{Index: 5, AppendedAt: time.Unix(-1, 5).UTC()},
	}
	for _, l := range logs {
		b := appendLog(nil, &l)
		var got raft.Log
		if err := decodeLog(b, &got); err != nil {
			t.Fatalf("decodeLog(%+v): %v", l, err)
		}
		if !reflect.DeepEqual(got, l) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, l)
		}
	}
	// A time in a non-UTC zone keeps its instant.
	l := raft.Log{Index: 1, AppendedAt: time.Now()}
	var got raft.Log
	if err := decodeLog(appendLog(nil, &l), &got); err != nil || !got.AppendedAt.Equal(l.AppendedAt) {
		t.Fatalf("AppendedAt %v read back as %v (%v)", l.AppendedAt, got.AppendedAt, err)
	}
}

func TestDecodeLogRejectsGarbage(t *testing.T) {
	good := appendLog(nil, testLog(300))
	for i := 0; i < len(good); i++ {
		var l raft.Log
		if err := decodeLog(good[:i], &l); !errors.Is(err, ErrCorruptLog) {
			t.Fatalf("decodeLog(truncated to %d bytes) = %v, want ErrCorruptLog", i, err)
		}
	}
	bad := map[string][]byte{
		"version":     {2, 1, 1, 0, 0, 0, 0},
		"flag":        {1, 1, 1, 0, 0, 0, 2},
		"nanoseconds": {1, 1, 1, 0, 0, 0, 1, 0, 0x80, 0x94, 0xeb, 0xdc, 0x03},
		"trailing":    append(append([]byte(nil), good...), 0),
		"data length": {1, 1, 1, 0, 0x80, 0x80, 0x04},
	}
	for name, b := range bad {
		var l raft.Log
		if err := decodeLog(b, &l); !errors.Is(err, ErrCorruptLog) {
			t.Errorf("%s: decodeLog = %v, want ErrCorruptLog", name, err)
		}
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 0})
	f.Add([]byte{2, 0})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	for _, e := range []Entry{{}, sampleEntry(), {Batches: []ObjectBatch{batch(oid(9), 3, put("k", "v"))}}} {
		b, err := e.AppendBinary(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEntry(b)
		if err != nil {
			if !errors.Is(err, ErrCorruptEntry) {
				t.Fatalf("error %v does not wrap ErrCorruptEntry", err)
			}
			return
		}
		enc, err := e.AppendBinary(nil)
		if err != nil {
			t.Fatalf("a decoded entry does not encode: %v", err)
		}
		e2, err := DecodeEntry(enc)
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if !reflect.DeepEqual(e, e2) {
			t.Fatalf("round trip differs:\n%+v\n%+v", e, e2)
		}
		enc2, _ := e2.AppendBinary(nil)
		if !bytes.Equal(enc, enc2) {
			t.Fatal("encoding is not stable")
		}
	})
}

func FuzzDecodeLog(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0})
	f.Add(appendLog(nil, testLog(1)))
	f.Add(appendLog(nil, &raft.Log{Index: math.MaxUint64, Type: raft.LogConfiguration, Data: []byte("cfg")}))
	f.Add(appendLog(nil, &raft.Log{Index: 2, AppendedAt: time.Unix(-1<<40, 999999999)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if err := decodeLog(b, &l); err != nil {
			if !errors.Is(err, ErrCorruptLog) {
				t.Fatalf("error %v does not wrap ErrCorruptLog", err)
			}
			return
		}
		enc := appendLog(nil, &l)
		var l2 raft.Log
		if err := decodeLog(enc, &l2); err != nil {
			t.Fatalf("re-encoded log does not decode: %v", err)
		}
		if !reflect.DeepEqual(l, l2) {
			t.Fatalf("round trip differs:\n%+v\n%+v", l, l2)
		}
		if !bytes.Equal(enc, appendLog(nil, &l2)) {
			t.Fatal("encoding is not stable")
		}
	})
}

func TestGroupIDString(t *testing.T) {
	for _, g := range []GroupID{0, 1, 42, math.MaxUint64} {
		got, err := ParseGroupID(g.String())
		if err != nil || got != g {
			t.Fatalf("ParseGroupID(%q) = %d, %v", g.String(), got, err)
		}
	}
	for _, s := range []string{"", "-1", "+1", "007", "0x10", "1 ", "18446744073709551616", "abc"} {
		if _, err := ParseGroupID(s); !errors.Is(err, ErrInvalidGroupID) {
			t.Errorf("ParseGroupID(%q) = %v, want ErrInvalidGroupID", s, err)
		}
	}
}

func TestKeyOrdering(t *testing.T) {
	// Alarm times order numerically, negatives first.
	times := []int64{math.MinInt64, -1 << 40, -1, 0, 1, 1 << 40, math.MaxInt64}
	for i := 1; i < len(times); i++ {
		a, b := appendTime(nil, times[i-1]), appendTime(nil, times[i])
		if bytes.Compare(a, b) >= 0 {
			t.Fatalf("time %d does not sort before %d", times[i-1], times[i])
		}
		if decodeTime(b) != times[i] {
			t.Fatalf("decodeTime(appendTime(%d)) = %d", times[i], decodeTime(b))
		}
	}
	// Log indexes order numerically.
	ks := newKeyspace(7)
	if bytes.Compare(ks.logKey(255), ks.logKey(256)) >= 0 {
		t.Fatal("log index 255 does not sort before 256")
	}
	// Every key of a group lies inside its state range, and no other group's does.
	for _, g := range []GroupID{6, 7, 8, 0x0700000000000000} {
		o := newKeyspace(g)
		obj := oid(1)
		for _, k := range [][]byte{o.userKey(&obj, "\xff\xff"), o.versionKey(&obj), o.alarmIndexKey(math.MaxInt64, &obj), o.applied} {
			in := bytes.Compare(k, ks.statePrefix) >= 0 && bytes.Compare(k, ks.stateEnd) < 0
			if in != (g == 7) {
				t.Fatalf("key %q of group %d inside group 7's range: %v", k, g, in)
			}
		}
	}
	if prefixEnd([]byte{0xff, 0xff}) != nil || string(prefixEnd([]byte("a\xff"))) != "b" {
		t.Fatal("prefixEnd wrong")
	}
}
