package durable

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// NewKVClass returns the class of the objects that keep KV namespaces
// (KVClassName), reading the time from now. The runtime registers
// NewKVClass(time.Now); tests drive it with a clock of their own.
//
// Storage layout of one namespace's object:
//
//	"k" + key                        → the entry: expiration (8 bytes,
//	                                   big-endian Unix seconds, 0: none),
//	                                   metadata length (2 bytes), metadata,
//	                                   value (or where its chunks are)
//	"x" + expiration (20 digits) + "/" + key → "" (keys by expiration)
//	"c" + len(key) (3 digits) + key + gen (16 hex) + index (4 digits)
//	                                 → a chunk of a value
//	"p" + key                        → gen (8 bytes) and chunk count (4):
//	                                   a large value being written
//	"o"                              → how many objects keep the
//	                                   namespace (its first object only)
//
// A value over kvInlineBytes is kept in chunks of up to kvChunkBytes, so
// that an entry stays small (List reads every entry of its page, and a
// page of 1000 entries holding values of up to 1 MiB would be a gigabyte
// read to return names) and no storage entry, and no commit, holds all of
// a value of up to 25 MiB. Its entry then holds, instead of the value, the
// high bit of the metadata length set and, after the metadata, the chunks'
// generation (8 bytes), their count (4) and the value's length (8). A value
// of at most kvChunksPerCommit chunks commits whole with its entry. A
// longer one's put writes its chunks in commits of kvChunksPerCommit, the
// first with a "p" record naming them, and then, in one commit, the entry,
// the removal of the value it replaces and of the "p" record. A put that
// fails midway leaves its "p" record, and the next put or delete of any key
// removes the chunks it names (the input gate keeps a put's turn whole, so
// a "p" record seen at the start of a turn is always such a leftover).
// Entries written before values over kvInlineBytes were chunked hold their
// value whole; they are read as before and chunked when next written.
//
// The alarm is set for the earliest expiration; it deletes what has expired
// and moves itself to the next. Until then an expired key is hidden from
// Get and List.
func NewKVClass(now func() time.Time) Class {
	return func(state *State, _ *Env) Object { return &kvObject{storage: state.Storage, now: now} }
}

type kvObject struct {
	storage Storage
	now     func() time.Time
}

var _ Alarmer = (*kvObject)(nil)

// kvPurgeBatch is how many expired keys one alarm deletes; it comes back
// at once for the rest.
const kvPurgeBatch = 100

func (o *kvObject) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var err error
	switch r.URL.Path {
	case "/get":
		err = o.get(w, q.Get("key"))
	case "/put":
		err = o.put(w, r, q)
	case "/delete":
		err = o.delete(w, q.Get("key"))
	case "/list":
		err = o.list(w, q)
	case "/objects":
		err = o.objects(w, q.Get("n"))
	default:
		err = fmt.Errorf("%w: no KV operation %q", ErrInvalidOption, r.URL.Path)
	}
	if err == nil {
		return
	}
	status := http.StatusInternalServerError
	if kind := kvErrorKind(err); kind != "" {
		w.Header().Set(kvErrorHeader, kind)
		status = http.StatusBadRequest
	}
	http.Error(w, err.Error(), status)
}

// Values over kvInlineBytes: kept in chunks of kvChunkBytes,
// kvChunksPerCommit chunks committed at a time (a turn's uncommitted
// writes must stay within one commit: ErrTurnTooLarge).
const (
	kvInlineBytes     = 1 << 10
	kvChunkBytes      = 1 << 20
	kvChunksPerCommit = 3
)

type kvEntry struct {
	expiration int64
	metadata   []byte
	value      []byte // nil when chunked
	chunked    *kvChunks
}

// kvChunks names the chunks of a large value.
type kvChunks struct {
	gen   uint64
	count uint32
	size  int64 // the value's length
}

// kvChunkedFlag, set in the stored metadata length, marks a chunked value.
const kvChunkedFlag = 0x8000

func (e kvEntry) encode() []byte {
	b := make([]byte, 10, 10+len(e.metadata)+len(e.value)+20)
	binary.BigEndian.PutUint64(b, uint64(e.expiration))
	n := uint16(len(e.metadata))
	if e.chunked != nil {
		n |= kvChunkedFlag
	}
	binary.BigEndian.PutUint16(b[8:], n)
	b = append(b, e.metadata...)
	if c := e.chunked; c != nil {
		b = binary.BigEndian.AppendUint64(b, c.gen)
		b = binary.BigEndian.AppendUint32(b, c.count)
		return binary.BigEndian.AppendUint64(b, uint64(c.size))
	}
	return append(b, e.value...)
}

func decodeKVEntry(b []byte) (kvEntry, error) {
	if len(b) < 10 {
		return kvEntry{}, fmt.Errorf("kv: stored entry of %d bytes is too short", len(b))
	}
	n := int(binary.BigEndian.Uint16(b[8:]))
	chunked := n&kvChunkedFlag != 0
	n &^= kvChunkedFlag
	if len(b) < 10+n {
		return kvEntry{}, fmt.Errorf("kv: stored entry's metadata runs past its end")
	}
	e := kvEntry{expiration: int64(binary.BigEndian.Uint64(b)), metadata: b[10 : 10+n]}
	rest := b[10+n:]
	if !chunked {
		e.value = rest
		return e, nil
	}
	if len(rest) != 20 {
		return kvEntry{}, fmt.Errorf("kv: stored chunked entry has %d bytes after its metadata, not 20", len(rest))
	}
	c := &kvChunks{gen: binary.BigEndian.Uint64(rest), count: binary.BigEndian.Uint32(rest[8:]), size: int64(binary.BigEndian.Uint64(rest[12:]))}
	if c.size <= 0 || c.size > KVMaxValueBytes || int64(c.count) != (c.size+kvChunkBytes-1)/kvChunkBytes {
		return kvEntry{}, fmt.Errorf("kv: stored chunked entry of %d bytes in %d chunks", c.size, c.count)
	}
	e.chunked = c
	return e, nil
}

// committedInSteps reports whether a put of these chunks commits some
// before its entry, and so needs a "p" record to clean up after a failure
// midway; fewer commit with the entry, all or none.
func (c *kvChunks) committedInSteps() bool { return c.count > kvChunksPerCommit }

func kvChunkKey(key string, gen uint64, i uint32) string {
	return fmt.Sprintf("c%03d%s%016x%04d", len(key), key, gen, i)
}

// kvPendingKey is the "p" record of a large value of key being written.
func kvPendingKey(key string) string { return "p" + key }

// deleteChunks deletes the chunks c names.
func (o *kvObject) deleteChunks(key string, c *kvChunks) error {
	keys := make([]string, 0, min(c.count, 128))
	for i := uint32(0); i < c.count; i++ {
		keys = append(keys, kvChunkKey(key, c.gen, i))
		if len(keys) == cap(keys) || i == c.count-1 {
			if _, err := o.storage.DeleteMany(keys); err != nil {
				return err
			}
			keys = keys[:0]
		}
	}
	return nil
}

// sweep removes the chunks of puts that failed midway (their "p" records).
func (o *kvObject) sweep() error {
	for {
		left, err := o.storage.List(ListOptions{Prefix: "p", Limit: 16})
		if err != nil || len(left) == 0 {
			return err
		}
		for _, kv := range left {
			if len(kv.Value) != 12 {
				return fmt.Errorf("kv: malformed pending record %q", kv.Key)
			}
			c := &kvChunks{gen: binary.BigEndian.Uint64(kv.Value), count: binary.BigEndian.Uint32(kv.Value[8:])}
			if err := o.deleteChunks(kv.Key[1:], c); err != nil {
				return err
			}
			if _, err := o.storage.Delete(kv.Key); err != nil {
				return err
			}
		}
	}
}

// writeChunks stores value in chunks under a new generation, committing
// all but the last kvChunksPerCommit as it goes, and returns them. The "p" record naming them is the caller's to
// delete, in the commit that stores the entry.
func (o *kvObject) writeChunks(ctx context.Context, key string, value []byte) (*kvChunks, error) {
	c := &kvChunks{gen: rand.Uint64(), count: uint32((len(value) + kvChunkBytes - 1) / kvChunkBytes), size: int64(len(value))}
	if c.committedInSteps() {
		pending := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, c.gen), c.count)
		if err := o.storage.Put(kvPendingKey(key), pending); err != nil {
			return nil, err
		}
	}
	for i := uint32(0); i < c.count; i++ {
		if i > 0 && i%kvChunksPerCommit == 0 {
			if err := o.storage.Sync(ctx); err != nil {
				return nil, err
			}
		}
		chunk := value[int(i)*kvChunkBytes : min(len(value), int(i+1)*kvChunkBytes)]
		if err := o.storage.Put(kvChunkKey(key, c.gen, i), chunk); err != nil {
			return nil, err
		}
	}
	return c, nil // the last chunks commit with the entry
}

func kvExpiryKey(exp int64, key string) string { return fmt.Sprintf("x%020d/%s", exp, key) }

// lookup returns key's entry; found is false if there is none or it expired.
func (o *kvObject) lookup(key string) (e kvEntry, found bool, err error) {
	b, ok, err := o.storage.Get("k" + key)
	if err != nil || !ok {
		return kvEntry{}, false, err
	}
	if e, err = decodeKVEntry(b); err != nil {
		return kvEntry{}, false, err
	}
	return e, !o.expired(e), nil
}

func (o *kvObject) expired(e kvEntry) bool {
	return e.expiration != 0 && e.expiration <= o.now().Unix()
}

func (o *kvObject) get(w http.ResponseWriter, key string) error {
	if err := checkKVKey(key); err != nil {
		return err
	}
	e, found, err := o.lookup(key)
	if err != nil {
		return err
	}
	if !found {
		http.Error(w, "no such key", http.StatusNotFound)
		return nil
	}
	if e.metadata != nil {
		w.Header().Set(kvMetadataHeader, base64.StdEncoding.EncodeToString(e.metadata))
	}
	c := e.chunked
	if c == nil {
		w.Header().Set("Content-Length", strconv.Itoa(len(e.value)))
		_, _ = w.Write(e.value)
		return nil
	}
	// Read every chunk before answering, so a missing one is an error,
	// not a short value.
	chunks := make([][]byte, c.count)
	var n int64
	for i := range chunks {
		b, ok, err := o.storage.Get(kvChunkKey(key, c.gen, uint32(i)))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("kv: chunk %d of %q is missing", i, key)
		}
		chunks[i] = b
		n += int64(len(b))
	}
	if n != c.size {
		return fmt.Errorf("kv: the chunks of %q hold %d bytes, not %d", key, n, c.size)
	}
	w.Header().Set("Content-Length", strconv.FormatInt(c.size, 10))
	for _, b := range chunks {
		if _, err := w.Write(b); err != nil {
			return nil // the caller went away
		}
	}
	return nil
}

func (o *kvObject) put(w http.ResponseWriter, r *http.Request, q url.Values) error {
	key := q.Get("key")
	if err := checkKVKey(key); err != nil {
		return err
	}
	var e kvEntry
	if s := q.Get("expiration"); s != "" {
		exp, err := strconv.ParseInt(s, 10, 64)
		if err != nil || exp <= o.now().Unix() || exp > KVMaxExpirationUnix {
			return fmt.Errorf("%w: expiration %q is not a Unix time in the future", ErrInvalidOption, s)
		}
		e.expiration = exp
	}
	if m := r.Header.Get(kvMetadataHeader); m != "" {
		meta, err := base64.StdEncoding.DecodeString(m)
		switch {
		case err != nil || !json.Valid(meta):
			return fmt.Errorf("%w: metadata is not base64 of JSON", ErrInvalidOption)
		case len(meta) > KVMaxMetadataBytes:
			return fmt.Errorf("%w: metadata of %d bytes (at most %d)", ErrValueTooLarge, len(meta), KVMaxMetadataBytes)
		}
		e.metadata = meta
	}
	value, err := io.ReadAll(io.LimitReader(r.Body, KVMaxValueBytes+1))
	if err != nil {
		return err
	}
	if len(value) > KVMaxValueBytes {
		return fmt.Errorf("%w: a KV value may be at most %d bytes", ErrValueTooLarge, KVMaxValueBytes)
	}
	// The longest storage key the put writes must be one storage takes
	// ([storage] max_key_bytes may be set below what a KV key needs):
	// refused now, before anything is written, rather than midway, which
	// would leave the key half replaced or a "p" record whose chunks no
	// sweep can name.
	longest := "k" + key
	switch {
	case len(value) > kvInlineBytes:
		longest = kvChunkKey(key, 0, 0)
	case e.expiration != 0:
		longest = kvExpiryKey(e.expiration, key)
	}
	if _, _, err := o.storage.Get(longest); err != nil {
		return kvFit(err, key, value)
	}
	if err := o.sweep(); err != nil {
		return err
	}
	// The entry is written before what it replaces is dropped: storage
	// may refuse it ([storage] max_entry_bytes), and the turn's writes
	// before that are committed all the same.
	oldEntry, hadOld, err := o.storage.Get("k" + key)
	if err != nil {
		return err
	}
	if len(value) > kvInlineBytes {
		if e.chunked, err = o.writeChunks(r.Context(), key, value); err != nil {
			return kvFit(err, key, value)
		}
	} else {
		e.value = value
	}
	if err := o.storage.Put("k"+key, e.encode()); err != nil {
		return kvFit(err, key, value)
	}
	if e.chunked != nil && e.chunked.committedInSteps() {
		if _, err := o.storage.Delete(kvPendingKey(key)); err != nil {
			return err
		}
	}
	if hadOld {
		if err := o.dropEntry(key, oldEntry); err != nil {
			return err
		}
	}
	if e.expiration != 0 {
		if err := o.storage.Put(kvExpiryKey(e.expiration, key), nil); err != nil {
			return kvFit(err, key, value)
		}
		at := time.Unix(e.expiration, 0)
		if cur, set, err := o.storage.GetAlarm(); err != nil {
			return err
		} else if !set || cur.After(at) {
			if err := o.storage.SetAlarm(at); err != nil {
				return err
			}
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// kvFit restates, in terms of the caller's key and value, storage's
// refusal of what a put writes: storage names its own key ("k" and the
// KV key, a chunk's, the expiry index's) and counts what the namespace
// adds. Only [storage] limits set below a KV entry's needs refuse it.
func kvFit(err error, key string, value []byte) error {
	switch {
	case errors.Is(err, ErrKeyTooLarge):
		return fmt.Errorf("%w: KV key of %d bytes: with what the KV namespace adds to it in storage, it is over this node's [storage] max_key_bytes", ErrKeyTooLarge, len(key))
	case errors.Is(err, ErrValueTooLarge):
		return fmt.Errorf("%w: KV value of %d bytes: stored with its key and metadata, it is over this node's [storage] max_entry_bytes", ErrValueTooLarge, len(value))
	}
	return err
}

// drop removes what key's current entry keeps besides itself: its place
// in the expiration index and the chunks of a large value.
func (o *kvObject) drop(key string) error {
	b, ok, err := o.storage.Get("k" + key)
	if err != nil || !ok {
		return err
	}
	return o.dropEntry(key, b)
}

// dropEntry removes what the stored entry b of key keeps besides itself.
func (o *kvObject) dropEntry(key string, b []byte) error {
	old, err := decodeKVEntry(b)
	if err != nil {
		return err
	}
	if old.chunked != nil {
		if err := o.deleteChunks(key, old.chunked); err != nil {
			return err
		}
	}
	if old.expiration != 0 {
		_, err = o.storage.Delete(kvExpiryKey(old.expiration, key))
	}
	return err
}

func (o *kvObject) delete(w http.ResponseWriter, key string) error {
	if err := checkKVKey(key); err != nil {
		return err
	}
	if err := o.sweep(); err != nil {
		return err
	}
	if err := o.drop(key); err != nil {
		return err
	}
	if _, err := o.storage.Delete("k" + key); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// kvObjectsKey holds, in a namespace's first object, how many objects
// keep its keys (decimal).
const kvObjectsKey = "o"

// objects records how many objects keep the namespace's keys, the first
// time it is asked, and refuses another number later: the keys of a
// namespace spread over n objects are only found with n.
func (o *kvObject) objects(w http.ResponseWriter, n string) error {
	if v, err := strconv.Atoi(n); err != nil || v < 1 || v > KVMaxObjects {
		return fmt.Errorf("%w: number of objects %q is not between 1 and %d", ErrInvalidOption, n, KVMaxObjects)
	}
	b, ok, err := o.storage.Get(kvObjectsKey)
	switch {
	case err != nil:
		return err
	case !ok:
		if err := o.storage.Put(kvObjectsKey, []byte(n)); err != nil {
			return err
		}
	case string(b) != n:
		return fmt.Errorf("%w: this KV namespace keeps its keys in %s objects; its binding says %s (the number cannot change once the namespace is used)", ErrKVObjectsChanged, b, n)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (o *kvObject) list(w http.ResponseWriter, q url.Values) error {
	limit := KVMaxListLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > KVMaxListLimit {
			return fmt.Errorf("%w: limit %q is not between 1 and %d", ErrInvalidOption, s, KVMaxListLimit)
		}
		limit = n
	}
	after, err := checkKVListPage(q.Get("prefix"), q.Get("cursor"))
	if err != nil {
		return err
	}
	// One key more than the page holds says whether more follow: a page
	// of exactly limit keys, the last ones, is complete.
	opts := ListOptions{Prefix: "k" + q.Get("prefix"), Limit: limit + 1}
	if after != "" {
		opts.StartAfter = "k" + after
	}
	kvs, err := o.storage.List(opts)
	if err != nil {
		return err
	}
	page := KVListResult{Keys: []KVKey{}, ListComplete: len(kvs) <= limit}
	kvs = kvs[:min(len(kvs), limit)]
	for _, kv := range kvs {
		e, err := decodeKVEntry(kv.Value)
		if err != nil {
			return err
		}
		if o.expired(e) {
			continue
		}
		page.Keys = append(page.Keys, KVKey{Name: kv.Key[1:], Expiration: e.expiration, Metadata: e.metadata})
	}
	if !page.ListComplete {
		page.Cursor = encodeKVCursor(q.Get("prefix"), kvs[len(kvs)-1].Key[1:])
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(page)
}

// Alarm deletes the keys that have expired, up to kvPurgeBatch of them,
// and sets the alarm for the next expiration (or at once if more are due).
func (o *kvObject) Alarm(ctx context.Context, _ AlarmInfo) error {
	now := o.now()
	due, err := o.storage.List(ListOptions{Prefix: "x", End: kvExpiryKey(now.Unix()+1, ""), Limit: kvPurgeBatch})
	if err != nil {
		return err
	}
	for _, kv := range due {
		expStr, key, ok := strings.Cut(kv.Key[1:], "/")
		exp, err := strconv.ParseInt(expStr, 10, 64)
		if !ok || err != nil {
			return fmt.Errorf("kv: malformed expiration index key %q", kv.Key)
		}
		if b, ok, err := o.storage.Get("k" + key); err != nil {
			return err
		} else if ok {
			// The index is kept in step with the entries; check anyway
			// that this is the entry the index key was made for.
			if e, err := decodeKVEntry(b); err == nil && e.expiration == exp {
				if e.chunked != nil {
					if err := o.deleteChunks(key, e.chunked); err != nil {
						return err
					}
				}
				if _, err := o.storage.Delete("k" + key); err != nil {
					return err
				}
			}
		}
		if _, err := o.storage.Delete(kv.Key); err != nil {
			return err
		}
	}
	if len(due) == kvPurgeBatch {
		return o.storage.SetAlarm(now.Add(time.Millisecond))
	}
	next, err := o.storage.List(ListOptions{Prefix: "x", Limit: 1})
	if err != nil || len(next) == 0 {
		return err // the runtime deletes the alarm that fired
	}
	expStr, _, _ := strings.Cut(next[0].Key[1:], "/")
	exp, err := strconv.ParseInt(expStr, 10, 64)
	if err != nil {
		return errors.New("kv: malformed expiration index key " + next[0].Key)
	}
	return o.storage.SetAlarm(time.Unix(exp, 0))
}
