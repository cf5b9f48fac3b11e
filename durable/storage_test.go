package durable

import (
	"bytes"
	"errors"
	"sort"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDefaultLimits(t *testing.T) {
	l := DefaultLimits()
	if l.MaxKeyBytes != 2048 || l.MaxEntryBytes != 2*1024*1024 || l.MaxBatchKeys != 128 {
		t.Fatalf("DefaultLimits() = %+v, want 2 KiB / 2 MiB / 128", l)
	}
	if err := l.Validate(); err != nil {
		t.Fatalf("DefaultLimits().Validate() = %v", err)
	}
}

func TestLimitsValidate(t *testing.T) {
	tests := []struct {
		l  Limits
		ok bool
	}{
		{Limits{1, 1, 1}, true},
		{Limits{10, 10, 1}, true},
		{Limits{0, 10, 1}, false},
		{Limits{10, 0, 1}, false},
		{Limits{10, 10, 0}, false},
		{Limits{-1, 10, 1}, false},
		{Limits{10, 9, 1}, false}, // an entry must be able to hold a maximal key
	}
	for _, tc := range tests {
		if err := tc.l.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v.Validate() = %v, want ok=%v", tc.l, err, tc.ok)
		}
	}
}

func TestLimitsCheckKey(t *testing.T) {
	l := DefaultLimits()
	tests := []struct {
		desc string
		key  string
		want error
	}{
		{"empty", "", nil},
		{"at the limit", strings.Repeat("k", l.MaxKeyBytes), nil},
		{"one over", strings.Repeat("k", l.MaxKeyBytes+1), ErrKeyTooLarge},
		// The limit counts bytes, not runes: 683 three-byte runes = 2049 bytes.
		{"multibyte runes over in bytes", strings.Repeat("東", 683), ErrKeyTooLarge},
		{"multibyte runes at 2046 bytes", strings.Repeat("東", 682), nil},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			err := l.CheckKey(tc.key)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("CheckKey(%d bytes) = %v", len(tc.key), err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("CheckKey(%d bytes) = %v, want %v", len(tc.key), err, tc.want)
			}
		})
	}
}

func TestLimitsCheckEntry(t *testing.T) {
	l := DefaultLimits()
	k := "key"
	tests := []struct {
		desc  string
		key   string
		value int // value length
		want  error
	}{
		{"empty value", k, 0, nil},
		{"empty key", "", 1, ErrEmptyKey},
		{"empty key and an oversized value: the key is reported first", "", l.MaxEntryBytes + 1, ErrEmptyKey},
		{"key+value at the limit", k, l.MaxEntryBytes - len(k), nil},
		{"key+value one over", k, l.MaxEntryBytes - len(k) + 1, ErrValueTooLarge},
		{"one-byte key, value fills the rest", "k", l.MaxEntryBytes - 1, nil},
		{"one-byte key, value one over", "k", l.MaxEntryBytes, ErrValueTooLarge},
		{"max key, value fills the rest", strings.Repeat("k", l.MaxKeyBytes), l.MaxEntryBytes - l.MaxKeyBytes, nil},
		{"max key, value one over", strings.Repeat("k", l.MaxKeyBytes), l.MaxEntryBytes - l.MaxKeyBytes + 1, ErrValueTooLarge},
		{"oversized key is reported as a key error", strings.Repeat("k", l.MaxKeyBytes+1), 0, ErrKeyTooLarge},
		{"oversized key and value: the key is reported first", strings.Repeat("k", l.MaxKeyBytes+1), l.MaxEntryBytes, ErrKeyTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			err := l.CheckEntry(tc.key, make([]byte, tc.value))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("CheckEntry = %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("CheckEntry = %v, want %v", err, tc.want)
			}
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("error message is not valid UTF-8: %q", err.Error())
			}
			if len(err.Error()) > 300 {
				t.Fatalf("error message is %d bytes long; the key should be truncated", len(err.Error()))
			}
		})
	}
}

func TestLimitsCheckBatch(t *testing.T) {
	l := DefaultLimits()
	for _, tc := range []struct {
		n    int
		want error
	}{
		{0, nil}, {1, nil}, {l.MaxBatchKeys, nil}, {l.MaxBatchKeys + 1, ErrTooManyKeys}, {10000, ErrTooManyKeys},
	} {
		err := l.CheckBatch(tc.n)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("CheckBatch(%d) = %v, want %v", tc.n, err, tc.want)
		}
	}
	// Configured limits are honoured, not just the defaults.
	small := Limits{MaxKeyBytes: 4, MaxEntryBytes: 8, MaxBatchKeys: 2}
	if err := small.CheckBatch(2); err != nil {
		t.Errorf("small.CheckBatch(2) = %v", err)
	}
	if err := small.CheckBatch(3); !errors.Is(err, ErrTooManyKeys) {
		t.Errorf("small.CheckBatch(3) = %v", err)
	}
	if err := small.CheckKey("abcde"); !errors.Is(err, ErrKeyTooLarge) {
		t.Errorf("small.CheckKey(5 bytes) = %v", err)
	}
	if err := small.CheckEntry("abcd", []byte("1234")); err != nil {
		t.Errorf("small.CheckEntry(4+4) = %v", err)
	}
	if err := small.CheckEntry("abcd", []byte("12345")); !errors.Is(err, ErrValueTooLarge) {
		t.Errorf("small.CheckEntry(4+5) = %v", err)
	}
}

func TestTruncateKeepsUTF8(t *testing.T) {
	for _, s := range []string{"", "short", strings.Repeat("a", 32), strings.Repeat("a", 33), strings.Repeat("東", 20), "a" + strings.Repeat("é", 40)} {
		got := truncate(s)
		if !utf8.ValidString(got) {
			t.Errorf("truncate(%q) = %q: invalid UTF-8", s, got)
		}
		if len(s) <= 32 && got != s {
			t.Errorf("truncate(%q) = %q, want it unchanged", s, got)
		}
		if len(s) > 32 && (!strings.HasSuffix(got, "…") || !strings.HasPrefix(s, strings.TrimSuffix(got, "…"))) {
			t.Errorf("truncate(%q) = %q", s, got)
		}
	}
}

func TestListOptionsValidate(t *testing.T) {
	tests := []struct {
		desc string
		o    ListOptions
		ok   bool
	}{
		{"zero", ListOptions{}, true},
		{"start", ListOptions{Start: "a"}, true},
		{"start after", ListOptions{StartAfter: "a"}, true},
		{"start and end", ListOptions{Start: "a", End: "b"}, true},
		{"everything but StartAfter", ListOptions{Start: "a", End: "z", Prefix: "p", Reverse: true, Limit: 10}, true},
		{"limit 1", ListOptions{Limit: 1}, true},
		{"start and start after", ListOptions{Start: "a", StartAfter: "b"}, false},
		{"negative limit", ListOptions{Limit: -1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			err := tc.o.Validate()
			if tc.ok && err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("Validate() = %v, want ErrInvalidOption", err)
			}
		})
	}
}

// mapRW is a map-backed ReadWriter for the JSON helpers.
type mapRW struct {
	m      map[string][]byte
	getErr error
	putErr error
	puts   int
}

func newMapRW() *mapRW { return &mapRW{m: make(map[string][]byte)} }

func (s *mapRW) Get(key string) ([]byte, bool, error) {
	if s.getErr != nil {
		return nil, false, s.getErr
	}
	v, ok := s.m[key]
	return bytes.Clone(v), ok, nil
}

func (s *mapRW) GetMany(keys []string) (map[string][]byte, error) {
	out := make(map[string][]byte)
	for _, k := range keys {
		if v, ok := s.m[k]; ok {
			out[k] = bytes.Clone(v)
		}
	}
	return out, nil
}

func (s *mapRW) Put(key string, value []byte) error {
	if s.putErr != nil {
		return s.putErr
	}
	s.puts++
	s.m[key] = bytes.Clone(value)
	return nil
}

func (s *mapRW) PutMany(entries map[string][]byte) error {
	for k, v := range entries {
		if err := s.Put(k, v); err != nil {
			return err
		}
	}
	return nil
}

func (s *mapRW) Delete(key string) (bool, error) {
	_, ok := s.m[key]
	delete(s.m, key)
	return ok, nil
}

func (s *mapRW) DeleteMany(keys []string) (int, error) {
	n := 0
	for _, k := range keys {
		if ok, _ := s.Delete(k); ok {
			n++
		}
	}
	return n, nil
}

// List honours Prefix, StartAfter, End and Limit (not Start or Reverse).
func (s *mapRW) List(opts ListOptions) ([]KV, error) {
	var out []KV
	for k, v := range s.m {
		if strings.HasPrefix(k, opts.Prefix) && k > opts.StartAfter && (opts.End == "" || k < opts.End) {
			out = append(out, KV{k, bytes.Clone(v)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	if opts.Limit > 0 && len(out) > opts.Limit {
		out = out[:opts.Limit]
	}
	return out, nil
}

var _ ReadWriter = (*mapRW)(nil)

func TestGetJSONPutJSON(t *testing.T) {
	s := newMapRW()

	// Missing key: zero value, ok == false, no error.
	v, ok, err := GetJSON[int](s, "value")
	if v != 0 || ok || err != nil {
		t.Fatalf("GetJSON(missing) = %v, %v, %v", v, ok, err)
	}

	if err := PutJSON(s, "value", 41); err != nil {
		t.Fatal(err)
	}
	if got := string(s.m["value"]); got != "41" {
		t.Fatalf("PutJSON stored %q, want 41", got)
	}
	v, ok, err = GetJSON[int](s, "value")
	if v != 41 || !ok || err != nil {
		t.Fatalf("GetJSON = %v, %v, %v", v, ok, err)
	}
	if err := PutJSON(s, "value", -3); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := GetJSON[int](s, "value"); v != -3 {
		t.Fatalf("GetJSON after -3 = %v", v)
	}

	type doc struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	in := doc{Name: "Zürich 東京", Tags: []string{"a", "b"}}
	if err := PutJSON(s, "doc", in); err != nil {
		t.Fatal(err)
	}
	out, ok, err := GetJSON[doc](s, "doc")
	if err != nil || !ok || out.Name != in.Name || len(out.Tags) != 2 || out.Tags[1] != "b" {
		t.Fatalf("GetJSON[doc] = %+v, %v, %v", out, ok, err)
	}
	m, _, err := GetJSON[map[string]any](s, "doc")
	if err != nil || m["name"] != in.Name {
		t.Fatalf("GetJSON[map] = %v, %v", m, err)
	}

	// A stored value that is not JSON of T: an error naming the key, ok == true.
	s.m["value"] = []byte("not json")
	if _, ok, err := GetJSON[int](s, "value"); err == nil || !ok || !strings.Contains(err.Error(), `"value"`) {
		t.Fatalf("GetJSON(garbage) = ok %v, %v", ok, err)
	}
	s.m["value"] = []byte(`"a string"`)
	if _, _, err := GetJSON[int](s, "value"); err == nil {
		t.Fatal("GetJSON[int] of a JSON string succeeded")
	}

	// Values that cannot be encoded: an error, nothing written.
	puts := s.puts
	if err := PutJSON(s, "ch", make(chan int)); err == nil {
		t.Fatal("PutJSON(chan) succeeded")
	}
	if s.puts != puts {
		t.Fatal("PutJSON wrote after an encoding error")
	}

	// Storage errors pass through, wrapped or not.
	s.getErr = ErrCommitFailed
	if _, _, err := GetJSON[int](s, "value"); !errors.Is(err, ErrCommitFailed) {
		t.Fatalf("GetJSON with failing storage = %v", err)
	}
	s.getErr = nil
	s.putErr = ErrValueTooLarge
	if err := PutJSON(s, "value", 1); !errors.Is(err, ErrValueTooLarge) {
		t.Fatalf("PutJSON with failing storage = %v", err)
	}
}
