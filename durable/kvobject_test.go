package durable

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// alarmStorage is a mapRW with an alarm: enough Storage for the KV object.
// syncErr, if set, is what Sync returns.
type alarmStorage struct {
	*mapRW
	alarm   time.Time
	syncs   int
	syncErr func(n int) error // n: the Sync's number, from 1
}

func (s *alarmStorage) DeleteAll() error {
	s.m = map[string][]byte{}
	s.alarm = time.Time{}
	return nil
}
func (s *alarmStorage) Transaction(fn func(tx Txn) error) error { panic("not used") }
func (s *alarmStorage) Sync(context.Context) error {
	s.syncs++
	if s.syncErr != nil {
		return s.syncErr(s.syncs)
	}
	return nil
}
func (s *alarmStorage) GetAlarm() (time.Time, bool, error) { return s.alarm, !s.alarm.IsZero(), nil }
func (s *alarmStorage) SetAlarm(t time.Time) error         { s.alarm = t; return nil }
func (s *alarmStorage) DeleteAlarm() error                 { s.alarm = time.Time{}; return nil }

var _ Storage = (*alarmStorage)(nil)

// kvHarness drives a KV object directly with a clock the test moves.
type kvHarness struct {
	t       *testing.T
	storage *alarmStorage
	now     time.Time
	obj     *kvObject
}

func newKVHarness(t *testing.T) *kvHarness {
	h := &kvHarness{t: t, storage: &alarmStorage{mapRW: newMapRW()}, now: time.Unix(1_800_000_000, 0)}
	h.obj = NewKVClass(func() time.Time { return h.now })(&State{Storage: h.storage}, nil).(*kvObject)
	return h
}

func (h *kvHarness) do(method, op string, q url.Values, meta string, body string) *http.Response {
	req := httptest.NewRequest(method, "http://kv/"+op+"?"+q.Encode(), strings.NewReader(body))
	if meta != "" {
		req.Header.Set(kvMetadataHeader, base64.StdEncoding.EncodeToString([]byte(meta)))
	}
	w := httptest.NewRecorder()
	h.obj.ServeHTTP(w, req)
	return w.Result()
}

// fire delivers the alarm as the runtime does: the handler runs, and the
// alarm is deleted unless the handler moved it.
func (h *kvHarness) fire() {
	delivered := h.storage.alarm
	if err := h.obj.Alarm(context.Background(), AlarmInfo{ScheduledTime: delivered}); err != nil {
		h.t.Fatal(err)
	}
	if h.storage.alarm.Equal(delivered) {
		h.storage.alarm = time.Time{}
	}
}

func (h *kvHarness) put(key, value string, exp int64) {
	q := url.Values{"key": {key}}
	if exp != 0 {
		q.Set("expiration", strconv.FormatInt(exp, 10))
	}
	if resp := h.do(http.MethodPut, "put", q, "", value); resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(resp.Body)
		h.t.Fatalf("put %s: %d %s", key, resp.StatusCode, b)
	}
}

func (h *kvHarness) get(key string) (string, bool) {
	resp := h.do(http.MethodGet, "get", url.Values{"key": {key}}, "", "")
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode == http.StatusOK
}

func (h *kvHarness) list(q url.Values) KVListResult {
	resp := h.do(http.MethodGet, "list", q, "", "")
	var page KVListResult
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		h.t.Fatalf("list %v: %d %v", q, resp.StatusCode, err)
	}
	return page
}

func names(page KVListResult) string {
	var out []string
	for _, k := range page.Keys {
		out = append(out, k.Name)
	}
	return strings.Join(out, ",")
}

// Expired keys vanish from Get and List at once, and the alarm deletes
// them and moves on to the next expiration; replacing or deleting a key
// takes it out of the expiration index.
func TestKVObjectExpiration(t *testing.T) {
	h := newKVHarness(t)
	t0 := h.now.Unix()
	h.put("soon", "1", t0+100)
	h.put("later", "2", t0+200)
	h.put("kept", "3", 0)
	h.put("replaced", "4", t0+100)
	h.put("replaced", "5", 0) // no longer expires
	h.put("deleted", "6", t0+100)
	if resp := h.do(http.MethodDelete, "delete", url.Values{"key": {"deleted"}}, "", ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	if !h.storage.alarm.Equal(time.Unix(t0+100, 0)) {
		t.Fatalf("alarm at %v, want the earliest expiration", h.storage.alarm)
	}
	if got := names(h.list(nil)); got != "kept,later,replaced,soon" {
		t.Fatalf("list before expiry: %s", got)
	}

	h.now = time.Unix(t0+150, 0)
	if _, ok := h.get("soon"); ok {
		t.Fatal("an expired key is still served")
	}
	if got := names(h.list(nil)); got != "kept,later,replaced" {
		t.Fatalf("list after the first expiry: %s", got)
	}
	h.fire()
	if _, ok := h.storage.m["ksoon"]; ok {
		t.Fatal("the alarm left an expired key")
	}
	if v, ok := h.get("replaced"); !ok || v != "5" {
		t.Fatalf("replaced key: %q %v", v, ok)
	}
	if !h.storage.alarm.Equal(time.Unix(t0+200, 0)) {
		t.Fatalf("alarm moved to %v, want the next expiration", h.storage.alarm)
	}

	h.now = time.Unix(t0+300, 0)
	h.fire()
	var left []string
	for k := range h.storage.m {
		left = append(left, k)
	}
	sort.Strings(left)
	if strings.Join(left, ",") != "kkept,kreplaced" {
		t.Fatalf("storage after every expiry: %v, want only the keys without expiration", left)
	}
	if !h.storage.alarm.IsZero() {
		t.Fatalf("alarm left at %v with nothing to expire", h.storage.alarm)
	}
}

// Many keys due at once are deleted a batch per alarm, the alarm coming
// back at once for the rest.
func TestKVObjectPurgesInBatches(t *testing.T) {
	h := newKVHarness(t)
	t0 := h.now.Unix()
	for i := range kvPurgeBatch + 5 {
		h.put("k"+strconv.Itoa(i), "v", t0+100)
	}
	h.now = time.Unix(t0+101, 0)
	h.fire()
	if !h.storage.alarm.After(h.now) || h.storage.alarm.After(h.now.Add(time.Second)) {
		t.Fatalf("alarm at %v after a full batch, want at once", h.storage.alarm)
	}
	h.fire()
	if len(h.storage.m) != 0 {
		t.Fatalf("%d keys left after two alarms", len(h.storage.m))
	}
}

// List pages through the keys in order with the cursor, honours the
// prefix, and returns metadata.
func TestKVObjectList(t *testing.T) {
	h := newKVHarness(t)
	for _, k := range []string{"a/1", "a/2", "a/3", "b/1"} {
		h.put(k, "v", 0)
	}
	if resp := h.do(http.MethodPut, "put", url.Values{"key": {"a/0"}}, `{"n":1}`, "v"); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("put with metadata: %d", resp.StatusCode)
	}
	first := h.list(url.Values{"prefix": {"a/"}, "limit": {"2"}})
	if names(first) != "a/0,a/1" || first.ListComplete || first.Cursor == "" {
		t.Fatalf("first page: %+v", first)
	}
	if string(first.Keys[0].Metadata) != `{"n":1}` {
		t.Fatalf("metadata in list: %s", first.Keys[0].Metadata)
	}
	// The last two keys fill the page: it says none follow, rather than
	// sending the caller for an empty third page.
	second := h.list(url.Values{"prefix": {"a/"}, "limit": {"2"}, "cursor": {first.Cursor}})
	if names(second) != "a/2,a/3" || !second.ListComplete || second.Cursor != "" {
		t.Fatalf("second page: %+v; want a/2,a/3, complete, no cursor", second)
	}
	// A cursor is of its listing's prefix only: without it, or with a
	// shorter one its key also starts with, it would skip keys.
	for _, prefix := range []string{"", "a"} {
		if resp := h.do(http.MethodGet, "list", url.Values{"prefix": {prefix}, "cursor": {first.Cursor}}, "", ""); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("the first page's cursor with prefix %q: %d, want 400", prefix, resp.StatusCode)
		}
	}
}

// Bad input is refused with its kind and changes nothing.
func TestKVObjectRefusesBadInput(t *testing.T) {
	h := newKVHarness(t)
	h.put("x", "old", 0)
	before := len(h.storage.m)
	cases := []struct {
		name, method, op string
		q                url.Values
		meta             string
		kind             string
	}{
		{"empty key", http.MethodPut, "put", url.Values{"key": {""}}, "", "invalid-option"},
		{"dot key", http.MethodPut, "put", url.Values{"key": {".."}}, "", "invalid-option"},
		{"long key", http.MethodPut, "put", url.Values{"key": {strings.Repeat("k", KVMaxKeyBytes+1)}}, "", "key-too-large"},
		{"past expiration", http.MethodPut, "put", url.Values{"key": {"x"}, "expiration": {strconv.FormatInt(h.now.Unix()-1, 10)}}, "", "invalid-option"},
		{"expiration past year 9999", http.MethodPut, "put", url.Values{"key": {"x"}, "expiration": {strconv.FormatInt(1<<62, 10)}}, "", "invalid-option"},
		{"garbage expiration", http.MethodPut, "put", url.Values{"key": {"x"}, "expiration": {"soon"}}, "", "invalid-option"},
		{"metadata not JSON", http.MethodPut, "put", url.Values{"key": {"x"}}, "{", "invalid-option"},
		{"metadata too large", http.MethodPut, "put", url.Values{"key": {"x"}}, `"` + strings.Repeat("m", KVMaxMetadataBytes) + `"`, "value-too-large"},
		{"bad cursor", http.MethodGet, "list", url.Values{"cursor": {"!!"}}, "", "invalid-option"},
		{"cursor of no key", http.MethodGet, "list", url.Values{"cursor": {"garbage"}}, "", "invalid-option"},
		{"prefix not UTF-8", http.MethodGet, "list", url.Values{"prefix": {"\xff"}}, "", "invalid-option"},
		{"prefix longer than a key", http.MethodGet, "list", url.Values{"prefix": {strings.Repeat("p", KVMaxKeyBytes+1)}}, "", "invalid-option"},
		{"cursor of another prefix", http.MethodGet, "list", url.Values{"prefix": {"y"}, "cursor": {encodeKVCursor("x", "x1")}}, "", "invalid-option"},
		{"cursor of a longer prefix", http.MethodGet, "list", url.Values{"prefix": {"p"}, "cursor": {encodeKVCursor("pg/", "pg/0004")}}, "", "invalid-option"},
		{"cursor of a longer prefix, without one", http.MethodGet, "list", url.Values{"cursor": {encodeKVCursor("pg/", "pg/0004")}}, "", "invalid-option"},
		{"old cursor whose key lacks the prefix", http.MethodGet, "list", url.Values{"prefix": {"y"}, "cursor": {"eA"}}, "", "invalid-option"},
		{"cursor with a broken prefix", http.MethodGet, "list", url.Values{"cursor": {"eA.!!"}}, "", "invalid-option"},
		{"limit too big", http.MethodGet, "list", url.Values{"limit": {"1001"}}, "", "invalid-option"},
		{"unknown operation", http.MethodGet, "scan", nil, "", "invalid-option"},
	}
	for _, tc := range cases {
		resp := h.do(tc.method, tc.op, tc.q, tc.meta, "new")
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get(kvErrorHeader) != tc.kind {
			t.Errorf("%s: %d %q, want 400 %q", tc.name, resp.StatusCode, resp.Header.Get(kvErrorHeader), tc.kind)
		}
	}
	if v, _ := h.get("x"); v != "old" || len(h.storage.m) != before {
		t.Fatalf("bad input changed the namespace: x=%q, %d keys (were %d)", v, len(h.storage.m), before)
	}
}

// The client checks what it can before sending anything.
func TestCheckKVPut(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	cases := []struct {
		name string
		key  string
		opts KVPutOptions
		want error
	}{
		{"plain", "k", KVPutOptions{}, nil},
		{"ttl", "k", KVPutOptions{ExpirationTTL: time.Minute}, nil},
		{"ttl too short", "k", KVPutOptions{ExpirationTTL: 59 * time.Second}, ErrInvalidOption},
		{"both", "k", KVPutOptions{ExpirationTTL: time.Hour, Expiration: now.Add(time.Hour)}, ErrInvalidOption},
		{"absolute", "k", KVPutOptions{Expiration: now.Add(time.Hour)}, nil},
		{"last second of year 9999", "k", KVPutOptions{Expiration: time.Unix(KVMaxExpirationUnix, 0)}, nil},
		{"after year 9999", "k", KVPutOptions{Expiration: time.Unix(KVMaxExpirationUnix+1, 0)}, ErrInvalidOption},
		{"far after year 9999", "k", KVPutOptions{Expiration: time.Unix(1<<62, 0)}, ErrInvalidOption},
		{"metadata", "k", KVPutOptions{Metadata: map[string]int{"a": 1}}, nil},
		{"metadata not JSON", "k", KVPutOptions{Metadata: func() {}}, ErrInvalidOption},
		{"metadata too large", "k", KVPutOptions{Metadata: strings.Repeat("m", KVMaxMetadataBytes)}, ErrValueTooLarge},
		// 1002 bytes of JSON, as JSON.stringify counts them: not 6002
		// with each "<" escaped as \u003c.
		{"metadata of HTML characters", "k", KVPutOptions{Metadata: strings.Repeat("<", KVMaxMetadataBytes-2)}, nil},
		// Three bytes each, as JSON.stringify writes them (encoding/json: six).
		{"metadata of line separators", "k", KVPutOptions{Metadata: strings.Repeat("\u2028\u2029", (KVMaxMetadataBytes-2)/6)}, nil},
		{"raw metadata of HTML characters", "k", KVPutOptions{Metadata: json.RawMessage(`"` + strings.Repeat("&", KVMaxMetadataBytes-2) + `"`)}, nil},
		{"key too large", strings.Repeat("k", KVMaxKeyBytes+1), KVPutOptions{}, ErrKeyTooLarge},
		{"key not UTF-8", "\xff", KVPutOptions{}, ErrInvalidOption},
	}
	for _, tc := range cases {
		exp, _, err := checkKVPut(tc.key, tc.opts, now)
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if tc.name == "ttl" && exp != now.Add(time.Minute).Unix() {
			t.Errorf("ttl: expiration %d", exp)
		}
	}
	if _, meta, _ := checkKVPut("k", KVPutOptions{Metadata: map[string]string{"a": "<&>"}}, now); string(meta) != `{"a":"<&>"}` {
		t.Errorf("metadata with HTML characters stored as %s", meta)
	}
	// An absolute expiration counts in whole seconds, however far into its
	// second now is.
	late := now.Add(700 * time.Millisecond)
	// A TTL under a minute is refused however far into its second now is,
	// as Workers refuses an expirationTtl under 60.
	if _, _, err := checkKVPut("k", KVPutOptions{ExpirationTTL: 59*time.Second + 500*time.Millisecond}, late); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("a TTL of 59.5 s, 0.7 s into the second: %v, want ErrInvalidOption", err)
	}
	for _, tc := range []struct {
		ahead int64 // whole seconds after late's
		nanos int64
		want  error
	}{{60, 0, nil}, {59, 999_999_999, ErrInvalidOption}} {
		_, _, err := checkKVPut("k", KVPutOptions{Expiration: time.Unix(late.Unix()+tc.ahead, tc.nanos)}, late)
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("expiration %d s %d ns after the second of now: %v, want %v", tc.ahead, tc.nanos, err, tc.want)
		}
	}
}

// FuzzKVEntry decodes arbitrary stored bytes: no panic, and what decodes
// encodes back to the same bytes.
func FuzzKVEntry(f *testing.F) {
	f.Add(kvEntry{expiration: 5, metadata: []byte(`{}`), value: []byte("v")}.encode())
	f.Add(kvEntry{metadata: []byte(`1`), chunked: &kvChunks{gen: 7, count: 2, size: kvChunkBytes + 1}}.encode())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeKVEntry(b)
		if err != nil {
			return
		}
		if !bytes.Equal(e.encode(), b) {
			t.Fatalf("entry %x decodes and encodes to %x", b, e.encode())
		}
	})
}

// FuzzKVCursor checks arbitrary cursors and prefixes: no panic; a cursor
// that decodes with its prefix encodes back to itself and continues only
// that prefix's listing.
func FuzzKVCursor(f *testing.F) {
	f.Add(encodeKVCursor("pg/", "pg/0004"), "pg/")
	f.Add(encodeKVCursor("", "a"), "a")
	f.Add("eA", "")
	f.Add("eA.", "x")
	f.Add("..", "")
	f.Fuzz(func(t *testing.T, cursor, prefix string) {
		after, err := checkKVListPage(prefix, cursor)
		key, of, known, derr := decodeKVCursor(cursor)
		if derr != nil {
			if cursor != "" && err == nil {
				t.Fatalf("cursor %q does not decode (%v) but was accepted", cursor, derr)
			}
			return
		}
		if known {
			if again := encodeKVCursor(of, key); again != cursor {
				t.Fatalf("cursor %q decodes to (%q, %q), which encodes to %q", cursor, of, key, again)
			}
			if err == nil && cursor != "" && (of != prefix || after != key) {
				t.Fatalf("cursor %q of prefix %q accepted for prefix %q", cursor, of, prefix)
			}
		}
	})
}

// keysWithPrefix counts the stored keys that start with prefix.
func (h *kvHarness) keysWithPrefix(prefix string) int {
	n := 0
	for k := range h.storage.m {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}

// A value over kvChunkBytes is kept in chunks, committed kvChunksPerCommit
// at a time; replacing, deleting or expiring it removes them; a value over
// KVMaxValueBytes is refused and changes nothing.
func TestKVObjectLargeValues(t *testing.T) {
	h := newKVHarness(t)
	value := func(n int, seed byte) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i%251)
		}
		return string(b)
	}
	big := value(3*kvChunkBytes+5, 1) // four chunks
	h.put("big", big, 0)
	if v, ok := h.get("big"); !ok || v != big {
		t.Fatalf("get: %d bytes, %v", len(v), ok)
	}
	if n := h.keysWithPrefix("c"); n != 4 {
		t.Fatalf("%d chunks, want 4", n)
	}
	if n := h.keysWithPrefix("p"); n != 0 {
		t.Fatalf("%d pending records after a put", n)
	}
	if h.storage.syncs != 1 {
		t.Fatalf("%d commits before the last, want 1 (after %d chunks)", h.storage.syncs, kvChunksPerCommit)
	}
	if page := h.list(nil); names(page) != "big" {
		t.Fatalf("list: %s", names(page))
	}
	exact := value(kvChunkBytes, 9) // the largest value in one chunk
	h.put("exact", exact, 0)
	if v, _ := h.get("exact"); v != exact || h.keysWithPrefix("c") != 5 {
		t.Fatalf("a value of kvChunkBytes: %d bytes back, %d chunks", len(v), h.keysWithPrefix("c"))
	}
	if resp := h.do(http.MethodDelete, "delete", url.Values{"key": {"exact"}}, "", ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d", resp.StatusCode)
	}

	bigger := value(KVMaxValueBytes, 3)
	h.put("big", bigger, 0)
	if v, _ := h.get("big"); v != bigger {
		t.Fatalf("get after replacing: %d bytes", len(v))
	}
	if n, want := h.keysWithPrefix("c"), KVMaxValueBytes/kvChunkBytes; n != want {
		t.Fatalf("%d chunks after replacing, want %d (the old ones gone)", n, want)
	}
	before := len(h.storage.m)
	resp := h.do(http.MethodPut, "put", url.Values{"key": {"big"}}, "", value(KVMaxValueBytes+1, 5))
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get(kvErrorHeader) != "value-too-large" {
		t.Fatalf("a value over %d bytes: %d %q", KVMaxValueBytes, resp.StatusCode, resp.Header.Get(kvErrorHeader))
	}
	if v, _ := h.get("big"); v != bigger || len(h.storage.m) != before {
		t.Fatal("a refused put changed the namespace")
	}
	h.put("big", "small", 0)
	if h.keysWithPrefix("c") != 0 {
		t.Fatalf("%d chunks left after a small value replaced a large one", h.keysWithPrefix("c"))
	}
	h.put("big", big, 0)
	if resp := h.do(http.MethodDelete, "delete", url.Values{"key": {"big"}}, "", ""); resp.StatusCode != http.StatusNoContent || h.keysWithPrefix("c") != 0 {
		t.Fatalf("delete: %d, %d chunks left", resp.StatusCode, h.keysWithPrefix("c"))
	}
	// Expiring a large value removes its chunks.
	h.put("fleeting", big, h.now.Unix()+120)
	h.now = h.now.Add(121 * time.Second)
	h.fire()
	if _, ok := h.get("fleeting"); ok || h.keysWithPrefix("c") != 0 {
		t.Fatalf("after expiring: found %v, %d chunks", ok, h.keysWithPrefix("c"))
	}
}

// A List page reads entries, not values: a value over kvInlineBytes is
// kept out of its entry (in one chunk up to kvChunkBytes, committed with
// the entry, so with no "p" record), and a value of kvInlineBytes stays in
// it.
func TestKVObjectEntriesStaySmall(t *testing.T) {
	h := newKVHarness(t)
	values := map[string]string{
		"inline": strings.Repeat("i", kvInlineBytes),
		"just":   strings.Repeat("j", kvInlineBytes+1),
		"mid":    strings.Repeat("m", 100<<10),
		"one":    strings.Repeat("o", kvChunkBytes),
	}
	for k, v := range values {
		h.put(k, v, 0)
	}
	if h.storage.syncs != 0 || h.keysWithPrefix("p") != 0 {
		t.Fatalf("values of one chunk: %d commits before the entry, %d pending records; want none", h.storage.syncs, h.keysWithPrefix("p"))
	}
	if n := h.keysWithPrefix("c"); n != 3 {
		t.Fatalf("%d chunks, want 3 (one for each value over %d bytes)", n, kvInlineBytes)
	}
	for k := range h.storage.m {
		if strings.HasPrefix(k, "k") && len(h.storage.m[k]) > 10+kvInlineBytes {
			t.Errorf("entry %q holds %d bytes", k, len(h.storage.m[k]))
		}
	}
	for k, v := range values {
		if got, ok := h.get(k); !ok || got != v {
			t.Errorf("get %s: %d bytes, found %v; want %d", k, len(got), ok, len(v))
		}
	}
	if page := h.list(nil); names(page) != "inline,just,mid,one" {
		t.Fatalf("list: %s", names(page))
	}
	h.put("mid", "small", 0)
	if n := h.keysWithPrefix("c"); n != 2 {
		t.Fatalf("%d chunks after a small value replaced one of 100 KiB, want 2", n)
	}
}

// A put that fails midway (a commit of its chunks fails) leaves the old
// value as it was; the next put or delete removes the chunks it left.
func TestKVObjectFailedLargePut(t *testing.T) {
	h := newKVHarness(t)
	h.put("doc", "old", 0)
	h.storage.syncErr = func(n int) error {
		if n == 2 {
			return errors.New("commit failed")
		}
		return nil
	}
	resp := h.do(http.MethodPut, "put", url.Values{"key": {"doc"}}, "", strings.Repeat("n", 8*kvChunkBytes))
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("a put whose commit failed: %d", resp.StatusCode)
	}
	if v, _ := h.get("doc"); v != "old" {
		t.Fatalf("after the failed put: %q", v)
	}
	if h.keysWithPrefix("p") != 1 || h.keysWithPrefix("c") == 0 {
		t.Fatalf("the failed put left %d pending records and %d chunks; the test expects some", h.keysWithPrefix("p"), h.keysWithPrefix("c"))
	}
	h.storage.syncErr = nil
	h.put("other", "x", 0)
	if h.keysWithPrefix("p") != 0 || h.keysWithPrefix("c") != 0 {
		t.Fatalf("after the next put: %d pending records, %d chunks", h.keysWithPrefix("p"), h.keysWithPrefix("c"))
	}
	if v, _ := h.get("doc"); v != "old" {
		t.Fatalf("doc after the sweep: %q", v)
	}
}

// The first object of a namespace records how many objects keep it and
// refuses another number.
func TestKVObjectRecordsItsObjects(t *testing.T) {
	h := newKVHarness(t)
	for _, tc := range []struct {
		n    string
		code int
		kind string
	}{
		{"4", http.StatusNoContent, ""},
		{"4", http.StatusNoContent, ""},
		{"1", http.StatusBadRequest, "objects-changed"},
		{"0", http.StatusBadRequest, "invalid-option"},
		{"65", http.StatusBadRequest, "invalid-option"},
		{"many", http.StatusBadRequest, "invalid-option"},
	} {
		resp := h.do(http.MethodPost, "objects", url.Values{"n": {tc.n}}, "", "")
		if resp.StatusCode != tc.code || resp.Header.Get(kvErrorHeader) != tc.kind {
			t.Errorf("objects %s: %d %q, want %d %q", tc.n, resp.StatusCode, resp.Header.Get(kvErrorHeader), tc.code, tc.kind)
		}
	}
	if string(h.storage.m[kvObjectsKey]) != "4" {
		t.Fatalf("recorded %q", h.storage.m[kvObjectsKey])
	}
}

func TestMergeKVPages(t *testing.T) {
	keys := func(names ...string) []KVKey {
		out := []KVKey{}
		for _, n := range names {
			out = append(out, KVKey{Name: n})
		}
		return out
	}
	complete := func(names ...string) KVListResult { return KVListResult{Keys: keys(names...), ListComplete: true} }
	partial := func(cursor string, names ...string) KVListResult {
		return KVListResult{Keys: keys(names...), Cursor: encodeKVCursor("", cursor)}
	}
	for _, tc := range []struct {
		name       string
		pages      []KVListResult
		limit      int
		want       string // names
		complete   bool
		wantCursor string
	}{
		{"all complete, under the limit", []KVListResult{complete("a", "d"), complete("b"), complete()}, 10, "a,b,d", true, ""},
		{"all complete, over the limit", []KVListResult{complete("a", "d"), complete("b", "c")}, 3, "a,b,c", false, "c"},
		{"an incomplete page bounds the rest", []KVListResult{partial("c", "a", "c"), complete("b", "d", "e")}, 2, "a,b", false, "b"},
		{"bounded below the limit", []KVListResult{partial("b", "a", "b"), complete("c", "d")}, 3, "a,b", false, "b"},
		{"an incomplete page of expired keys only", []KVListResult{partial("m"), complete("a", "z")}, 5, "a", false, "a"},
		{"nothing before the bound", []KVListResult{partial("m"), complete("z")}, 5, "", false, "m"},
	} {
		got := mergeKVPages(tc.pages, "", tc.limit)
		if names(got) != tc.want || got.ListComplete != tc.complete {
			t.Errorf("%s: %q complete=%v, want %q complete=%v", tc.name, names(got), got.ListComplete, tc.want, tc.complete)
		}
		cursor, _, _, _ := decodeKVCursor(got.Cursor)
		if cursor != tc.wantCursor {
			t.Errorf("%s: cursor %q, want %q", tc.name, cursor, tc.wantCursor)
		}
	}
}

// lossyKVDispatcher runs one KV object in-process and loses the answers of
// the first `lose` requests of each operation in ops, after running them,
// as a broken connection to the node running the object does.
type lossyKVDispatcher struct {
	h     *kvHarness
	lose  int
	ops   map[string]bool
	calls map[string]int
	// withheld: the answers are lost as a read's withheld for a leadership
	// move is (ErrCommitFailed), not as an unknown outcome.
	withheld bool
}

func (d *lossyKVDispatcher) Fetch(_ context.Context, _ string, _ ID, req *http.Request) (*http.Response, error) {
	w := httptest.NewRecorder()
	d.h.obj.ServeHTTP(w, req)
	op := strings.TrimPrefix(req.URL.Path, "/")
	d.calls[op]++
	if d.ops[op] && d.calls[op] <= d.lose {
		if d.withheld {
			return nil, &Error{Message: "response withheld: leadership moved", Retryable: true, Err: ErrCommitFailed}
		}
		return nil, &Error{Message: "forwarding failed; the request may or may not have run: EOF", Err: ErrCommitIndeterminate}
	}
	return w.Result(), nil
}

// A read whose answer is lost is sent again; a write's lost answer goes to
// the caller, who alone knows whether repeating it is right.
func TestKVNamespaceRetriesLostReads(t *testing.T) {
	cases := []struct {
		name      string
		lose      int
		wantErr   bool
		wantCalls int
	}{
		{"one lost answer", 1, false, 2},
		{"two lost answers", 2, false, 3},
		{"every answer lost", kvReadAttempts, true, kvReadAttempts},
		{"one answer withheld", 1, false, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := &lossyKVDispatcher{h: newKVHarness(t), calls: map[string]int{}, withheld: strings.Contains(tc.name, "withheld")}
			env := NewEnv(EnvConfig{KVNamespaces: []KVBinding{{Binding: "KV", ID: "ns"}}, Dispatcher: d})
			kv, err := env.KV("KV")
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := kv.Put(ctx, "k", []byte("v"), KVPutOptions{}); err != nil {
				t.Fatal(err)
			}

			d.ops, d.lose = map[string]bool{"get": true, "list": true}, tc.lose
			value, found, err := kv.Get(ctx, "k")
			if tc.wantErr != (err != nil) || !tc.wantErr && (!found || string(value) != "v") {
				t.Fatalf("Get: %q %v %v; want an error: %v", value, found, err, tc.wantErr)
			}
			if tc.wantErr && !errors.Is(err, ErrCommitIndeterminate) {
				t.Fatalf("Get failed with %v, want ErrCommitIndeterminate", err)
			}
			page, err := kv.List(ctx, KVListOptions{})
			if tc.wantErr != (err != nil) || !tc.wantErr && names(page) != "k" {
				t.Fatalf("List: %q %v; want an error: %v", names(page), err, tc.wantErr)
			}
			if d.calls["get"] != tc.wantCalls || d.calls["list"] != tc.wantCalls {
				t.Fatalf("sent get %d and list %d times, want %d each", d.calls["get"], d.calls["list"], tc.wantCalls)
			}

			d.ops = map[string]bool{"put": true, "delete": true}
			d.calls = map[string]int{}
			d.withheld = false
			if err := kv.Put(ctx, "k", []byte("w"), KVPutOptions{}); !errors.Is(err, ErrCommitIndeterminate) || d.calls["put"] != 1 {
				t.Fatalf("Put with its answer lost: %v after %d sends; want ErrCommitIndeterminate after one", err, d.calls["put"])
			}
			if err := kv.Delete(ctx, "k"); !errors.Is(err, ErrCommitIndeterminate) || d.calls["delete"] != 1 {
				t.Fatalf("Delete with its answer lost: %v after %d sends; want ErrCommitIndeterminate after one", err, d.calls["delete"])
			}
		})
	}
}

// The first call's check of the number of objects records nothing new when
// asked again, so a lost answer is asked again like a read's; a check that
// failed every time is made again by the next call.
func TestKVNamespaceRetriesLostObjectsCheck(t *testing.T) {
	d := &lossyKVDispatcher{h: newKVHarness(t), calls: map[string]int{}, ops: map[string]bool{"objects": true}, lose: kvReadAttempts}
	env := NewEnv(EnvConfig{KVNamespaces: []KVBinding{{Binding: "KV", ID: "ns"}}, Dispatcher: d})
	kv, err := env.KV("KV")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := kv.Put(ctx, "k", []byte("v"), KVPutOptions{}); !errors.Is(err, ErrCommitIndeterminate) || d.calls["objects"] != kvReadAttempts || d.calls["put"] != 0 {
		t.Fatalf("every check's answer lost: %v after %d checks and %d puts; want ErrCommitIndeterminate after %d checks and no put", err, d.calls["objects"], d.calls["put"], kvReadAttempts)
	}
	d.lose = kvReadAttempts + 1 // the next call's first check is lost too, its second answered
	if err := kv.Put(ctx, "k", []byte("v"), KVPutOptions{}); err != nil || d.calls["objects"] != kvReadAttempts+2 || d.calls["put"] != 1 {
		t.Fatalf("next call: %v after %d checks and %d puts", err, d.calls["objects"], d.calls["put"])
	}
	if _, _, err := kv.Get(ctx, "k"); err != nil || d.calls["objects"] != kvReadAttempts+2 {
		t.Fatalf("after a check that succeeded: %v, %d checks; want no more", err, d.calls["objects"])
	}
}

// A value over KVMaxValueBytes is refused by the client, as its other bad
// input is, before anything is sent (docs/kv.md).
func TestKVNamespacePutRefusesOversizedValueLocally(t *testing.T) {
	d := &lossyKVDispatcher{h: newKVHarness(t), calls: map[string]int{}}
	env := NewEnv(EnvConfig{KVNamespaces: []KVBinding{{Binding: "KV", ID: "ns"}}, Dispatcher: d})
	kv, err := env.KV("KV")
	if err != nil {
		t.Fatal(err)
	}
	err = kv.Put(context.Background(), "k", make([]byte, KVMaxValueBytes+1), KVPutOptions{})
	if !errors.Is(err, ErrValueTooLarge) {
		t.Fatalf("Put of %d bytes: %v, want ErrValueTooLarge", KVMaxValueBytes+1, err)
	}
	if d.calls["put"] != 0 {
		t.Fatalf("the oversized value was sent to the namespace's object (%d puts)", d.calls["put"])
	}
}

// entryLimitStorage refuses an entry (key and value) over max bytes, as
// storage with [storage] max_entry_bytes does.
type entryLimitStorage struct {
	*alarmStorage
	max int
}

func (s *entryLimitStorage) Put(key string, value []byte) error {
	if n := len(key) + len(value); n > s.max {
		return fmt.Errorf("%w: entry of %d bytes", ErrValueTooLarge, n)
	}
	return s.alarmStorage.Put(key, value)
}

// A put whose chunk the storage refuses (max_entry_bytes below
// kvChunkBytes, so a value must fit in one storage entry) leaves the key
// as it was: its old chunk and its place in the expiration index too.
func TestKVObjectPutRefusedByStorageChangesNothing(t *testing.T) {
	h := newKVHarness(t)
	h.obj = NewKVClass(func() time.Time { return h.now })(&State{Storage: &entryLimitStorage{alarmStorage: h.storage, max: 512 << 10}}, nil).(*kvObject)
	old := strings.Repeat("o", 300<<10)
	h.put("doc", old, h.now.Unix()+3600)
	chunks, index := h.keysWithPrefix("c"), h.keysWithPrefix("x")
	resp := h.do(http.MethodPut, "put", url.Values{"key": {"doc"}}, `"`+strings.Repeat("m", 200)+`"`, strings.Repeat("n", 600<<10))
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get(kvErrorHeader) != "value-too-large" {
		t.Fatalf("a put whose chunk storage refuses: %d %q", resp.StatusCode, resp.Header.Get(kvErrorHeader))
	}
	// In the caller's terms: not storage's own key and count (QA).
	if msg, _ := io.ReadAll(resp.Body); !strings.Contains(string(msg), "KV value of 614400 bytes") || !strings.Contains(string(msg), "max_entry_bytes") {
		t.Fatalf("a put whose chunk storage refuses says %q", msg)
	}
	if v, ok := h.get("doc"); !ok || v != old {
		t.Fatalf("after the refused put: %d bytes, found %v; want the old value", len(v), ok)
	}
	if h.keysWithPrefix("c") != chunks || h.keysWithPrefix("x") != index {
		t.Fatalf("after the refused put: %d chunks, %d index keys; were %d, %d", h.keysWithPrefix("c"), h.keysWithPrefix("x"), chunks, index)
	}
}

func TestUnescapeLineSeparators(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`"a"`, `"a"`},
		{`"\u2028<\u2029"`, "\"\u2028<\u2029\""},
		{`"\\u2028"`, `"\\u2028"`},                                // the text \u2028: its backslash escaped
		{`"\\\u2028"`, "\"\\\\\u2028\""},                          // a backslash, then U+2028
		{`{"k\u2029":"\n\u2028"}`, "{\"k\u2029\":\"\\n\u2028\"}"}, // other escapes kept
	} {
		got := string(unescapeLineSeparators([]byte(tc.in)))
		if got != tc.want {
			t.Errorf("unescapeLineSeparators(%s) = %q, want %q", tc.in, got, tc.want)
		}
		var a, b any
		if err := json.Unmarshal([]byte(tc.in), &a); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(got), &b); err != nil || !reflect.DeepEqual(a, b) {
			t.Errorf("%s and %s decode differently: %v, %v (%v)", tc.in, got, a, b, err)
		}
	}
}
