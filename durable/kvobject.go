package durable

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
//	                                   value
//	"x" + expiration (20 digits) + "/" + key → "" (keys by expiration)
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

type kvEntry struct {
	expiration int64
	metadata   []byte
	value      []byte
}

func (e kvEntry) encode() []byte {
	b := make([]byte, 10, 10+len(e.metadata)+len(e.value))
	binary.BigEndian.PutUint64(b, uint64(e.expiration))
	binary.BigEndian.PutUint16(b[8:], uint16(len(e.metadata)))
	b = append(b, e.metadata...)
	return append(b, e.value...)
}

func decodeKVEntry(b []byte) (kvEntry, error) {
	if len(b) < 10 {
		return kvEntry{}, fmt.Errorf("kv: stored entry of %d bytes is too short", len(b))
	}
	n := int(binary.BigEndian.Uint16(b[8:]))
	if len(b) < 10+n {
		return kvEntry{}, fmt.Errorf("kv: stored entry's metadata runs past its end")
	}
	return kvEntry{expiration: int64(binary.BigEndian.Uint64(b)), metadata: b[10 : 10+n], value: b[10+n:]}, nil
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
	w.Header().Set("Content-Length", strconv.Itoa(len(e.value)))
	_, _ = w.Write(e.value)
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
		if err != nil || exp <= o.now().Unix() {
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
	value, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	e.value = value
	if err := o.unindex(key); err != nil {
		return err
	}
	if err := o.storage.Put("k"+key, e.encode()); err != nil {
		return err
	}
	if e.expiration != 0 {
		if err := o.storage.Put(kvExpiryKey(e.expiration, key), nil); err != nil {
			return err
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

// unindex removes key's entry from the expiration index, if it is there.
func (o *kvObject) unindex(key string) error {
	b, ok, err := o.storage.Get("k" + key)
	if err != nil || !ok {
		return err
	}
	old, err := decodeKVEntry(b)
	if err != nil || old.expiration == 0 {
		return err
	}
	_, err = o.storage.Delete(kvExpiryKey(old.expiration, key))
	return err
}

func (o *kvObject) delete(w http.ResponseWriter, key string) error {
	if err := checkKVKey(key); err != nil {
		return err
	}
	if err := o.unindex(key); err != nil {
		return err
	}
	if _, err := o.storage.Delete("k" + key); err != nil {
		return err
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
	after, err := decodeKVCursor(q.Get("cursor"))
	if err != nil {
		return err
	}
	opts := ListOptions{Prefix: "k" + q.Get("prefix"), Limit: limit}
	if after != "" {
		opts.StartAfter = "k" + after
	}
	kvs, err := o.storage.List(opts)
	if err != nil {
		return err
	}
	page := KVListResult{Keys: []KVKey{}, ListComplete: len(kvs) < limit}
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
		page.Cursor = encodeKVCursor(kvs[len(kvs)-1].Key[1:])
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
