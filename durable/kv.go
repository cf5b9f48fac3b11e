package durable

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Workers KV, as a Worker or an object sees it: a namespace of keys with
// values, optional JSON metadata and optional expiration. Each KV namespace
// (the id of a [[kv_namespaces]] entry) is kept by one internal Durable
// Object of the class KVClassName, so its storage is replicated and its
// operations are linearizable — stronger than Cloudflare's KV, whose reads
// may be stale for up to a minute; code written for that is right here too.

// KVClassName is the internal class that keeps the KV namespaces. The
// runtime registers it; an app may not register a class of this name.
const KVClassName = "roost.KV"

// KV limits, Cloudflare's.
const (
	KVMaxKeyBytes      = 512
	KVMaxMetadataBytes = 1024
	KVMaxValueBytes    = 25 << 20
	// KVMinExpiration is how far in the future an expiration must be.
	KVMinExpiration = 60 * time.Second
	// KVMaxListLimit is the most keys one List returns (and its default).
	KVMaxListLimit = 1000
	// KVMaxExpirationUnix is the latest expiration a key may have (Unix
	// seconds): the last second of year 9999. Later ones would overflow
	// the alarm time (Unix milliseconds) that purges the key.
	KVMaxExpirationUnix = 253402300799
	// KVMaxExpirationTTL is the longest expiration_ttl the admin API (and
	// so `roost kv put --ttl`) takes: a century, so that now plus it
	// cannot wrap around into a near expiry.
	KVMaxExpirationTTL = 100 * 365 * 24 * time.Hour
)

// KVPutOptions are the options of KVNamespace.Put. At most one of
// Expiration and ExpirationTTL may be set.
type KVPutOptions struct {
	// Expiration is when the key expires (second precision).
	Expiration time.Time
	// ExpirationTTL is how long from now until the key expires.
	ExpirationTTL time.Duration
	// Metadata is stored with the key as JSON (at most 1024 bytes) and
	// returned by GetWithMetadata and List; nil stores none.
	Metadata any
}

// KVListOptions are the options of KVNamespace.List.
type KVListOptions struct {
	Prefix string // only keys that start with it
	Limit  int    // at most this many keys; 0 means KVMaxListLimit
	Cursor string // from the previous page's KVListResult.Cursor
}

// KVKey is one key of a List page.
type KVKey struct {
	Name       string          `json:"name"`
	Expiration int64           `json:"expiration,omitempty"` // Unix seconds; 0: never
	Metadata   json.RawMessage `json:"metadata,omitempty"`
}

// KVListResult is one page of keys in byte order. When ListComplete is
// false, Cursor continues the listing.
type KVListResult struct {
	Keys         []KVKey `json:"keys"`
	ListComplete bool    `json:"list_complete"`
	Cursor       string  `json:"cursor,omitempty"`
}

// KVNamespace is a KV namespace bound to the Worker ([[kv_namespaces]]).
// Its keys are kept by one object, or spread by a hash of the key over
// KVBinding.Objects objects; Get, Put and Delete send one request to the
// key's object, List one to each object and merges their pages. ctx bounds
// each call. Get and List (and the first call's check of the number of
// objects) are sent again, kvReadAttempts times in all, when an answer is
// lost on the way; Put and Delete report it (ErrCommitIndeterminate).
//
// The number of objects must not change once the namespace holds keys
// (a key would be looked for in another object): the first object records
// it, and the first call of a process checks it; a mismatch fails every
// call with ErrInvalidOption.
type KVNamespace struct {
	binding string
	id      string
	stubs   []*Stub
	check   *kvObjectsCheck
}

// KVMaxObjects bounds KVBinding.Objects.
const KVMaxObjects = 64

// kvObjectIDs are the IDs of the objects that keep b's namespace. The
// first is the one a namespace of one object has always had, so a
// namespace can be spread when it is new, from that first object.
func kvObjectIDs(ns *Namespace, b KVBinding) []ID {
	ids := []ID{ns.IDFromName(b.ID)}
	for i := 1; i < b.Objects; i++ {
		ids = append(ids, ns.IDFromName(b.ID+"\x00"+strconv.Itoa(i)))
	}
	return ids
}

// kvObjectsCheck remembers that the namespace's first object agreed to the
// binding's number of objects.
type kvObjectsCheck struct{ ok atomic.Bool }

// verify asks the first object once (per process) to record or confirm
// the number of objects. Asking twice records nothing new, so a lost
// answer is asked again as a read's is (retryRead), and calls that start
// before the first answer each ask: no lock is held across the fetch,
// which may open the calling object's input gate — a second turn would
// wait for the lock holding the gate the first needs back.
func (k *KVNamespace) verify(ctx context.Context) error {
	if k.check.ok.Load() {
		return nil
	}
	err := retryRead(ctx, func() error {
		resp, err := k.send(ctx, k.stubs[0], http.MethodPost, "objects", url.Values{"n": {strconv.Itoa(len(k.stubs))}}, nil, nil)
		if err == nil {
			resp.Body.Close()
		}
		return err
	})
	if err == nil {
		k.check.ok.Store(true)
	}
	return err
}

// stubFor is the stub of the object that keeps key.
func (k *KVNamespace) stubFor(key string) *Stub {
	if len(k.stubs) == 1 {
		return k.stubs[0]
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	return k.stubs[h.Sum64()%uint64(len(k.stubs))]
}

// Binding returns the binding name the namespace was reached by.
func (k *KVNamespace) Binding() string { return k.binding }

// Get returns the value of key; found is false if it has none (or it expired).
func (k *KVNamespace) Get(ctx context.Context, key string) (value []byte, found bool, err error) {
	value, _, found, err = k.GetWithMetadata(ctx, key)
	return value, found, err
}

// GetWithMetadata returns the value of key and the metadata it was put
// with (nil if none).
func (k *KVNamespace) GetWithMetadata(ctx context.Context, key string) (value []byte, metadata json.RawMessage, found bool, err error) {
	if err := checkKVKey(key); err != nil {
		return nil, nil, false, k.wrap("get", err)
	}
	err = retryRead(ctx, func() error {
		value, metadata, found, err = k.getOnce(ctx, key)
		return err
	})
	return value, metadata, found, err
}

func (k *KVNamespace) getOnce(ctx context.Context, key string) (value []byte, metadata json.RawMessage, found bool, err error) {
	resp, err := k.call(ctx, key, http.MethodGet, "get", url.Values{"key": {key}}, nil, nil)
	if err != nil {
		return nil, nil, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil, false, nil
	}
	if value, err = io.ReadAll(resp.Body); err != nil {
		return nil, nil, false, k.wrap("get", fmt.Errorf("%w: %v", errKVAnswerCut, err))
	}
	if m := resp.Header.Get(kvMetadataHeader); m != "" {
		if metadata, err = base64.StdEncoding.DecodeString(m); err != nil {
			return nil, nil, false, k.wrap("get", fmt.Errorf("metadata in the answer: %w", err))
		}
	}
	return value, metadata, true, nil
}

// kvReadAttempts is how many times a read (Get, List) is sent when its
// answer is lost on the way: a forwarded request whose outcome is unknown
// (the connection to the node running the object broke, say), an answer
// withheld because leadership moved while it was read (ErrCommitFailed),
// or a body cut off. A read changes nothing, so sending it again is safe; a write's
// unknown outcome goes to the caller, who knows whether to repeat it.
const kvReadAttempts = 3

// errKVAnswerCut: the answer's body broke off before its end.
var errKVAnswerCut = errors.New("the answer broke off")

// retryRead runs read, again after a short pause while its answer was
// lost, kvReadAttempts times at most.
func retryRead(ctx context.Context, read func() error) error {
	for attempt := 1; ; attempt++ {
		err := read()
		lost := errors.Is(err, ErrCommitIndeterminate) || errors.Is(err, ErrCommitFailed) || errors.Is(err, errKVAnswerCut)
		if err == nil || attempt == kvReadAttempts || !lost {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
		}
	}
}

// Put sets key to value, replacing any value, metadata and expiration it had.
func (k *KVNamespace) Put(ctx context.Context, key string, value []byte, opts KVPutOptions) error {
	exp, meta, err := checkKVPut(key, opts, time.Now())
	if err != nil {
		return k.wrap("put", err)
	}
	if len(value) > KVMaxValueBytes {
		return k.wrap("put", fmt.Errorf("%w: a KV value may be at most %d bytes", ErrValueTooLarge, KVMaxValueBytes))
	}
	q := url.Values{"key": {key}}
	if exp != 0 {
		q.Set("expiration", strconv.FormatInt(exp, 10))
	}
	h := http.Header{}
	if meta != nil {
		h.Set(kvMetadataHeader, base64.StdEncoding.EncodeToString(meta))
	}
	resp, err := k.call(ctx, key, http.MethodPut, "put", q, h, value)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Delete removes key; deleting a key that does not exist is not an error.
func (k *KVNamespace) Delete(ctx context.Context, key string) error {
	if err := checkKVKey(key); err != nil {
		return k.wrap("delete", err)
	}
	resp, err := k.call(ctx, key, http.MethodDelete, "delete", url.Values{"key": {key}}, nil, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// List returns one page of the keys (not the values) in byte order.
func (k *KVNamespace) List(ctx context.Context, opts KVListOptions) (KVListResult, error) {
	if opts.Limit < 0 || opts.Limit > KVMaxListLimit {
		return KVListResult{}, k.wrap("list", fmt.Errorf("%w: limit %d is not between 1 and %d", ErrInvalidOption, opts.Limit, KVMaxListLimit))
	}
	if _, err := checkKVListPage(opts.Prefix, opts.Cursor); err != nil {
		return KVListResult{}, k.wrap("list", err)
	}
	if err := k.verify(ctx); err != nil {
		return KVListResult{}, err
	}
	limit := cmp.Or(opts.Limit, KVMaxListLimit)
	q := url.Values{"prefix": {opts.Prefix}, "cursor": {opts.Cursor}, "limit": {strconv.Itoa(limit)}}
	pages := make([]KVListResult, len(k.stubs))
	errs := make([]error, len(k.stubs))
	var wg sync.WaitGroup
	for i, stub := range k.stubs {
		wg.Go(func() {
			errs[i] = retryRead(ctx, func() (err error) {
				pages[i], err = k.listOne(ctx, stub, q)
				return err
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return KVListResult{}, err
	}
	return mergeKVPages(pages, opts.Prefix, limit), nil
}

// listOne lists one object's keys.
func (k *KVNamespace) listOne(ctx context.Context, stub *Stub, q url.Values) (KVListResult, error) {
	resp, err := k.send(ctx, stub, http.MethodGet, "list", q, nil, nil)
	if err != nil {
		return KVListResult{}, err
	}
	defer resp.Body.Close()
	var page KVListResult
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return KVListResult{}, k.wrap("list", fmt.Errorf("decoding the answer: %w", err))
	}
	return page, nil
}

// mergeKVPages merges the pages the objects of a namespace answered to one
// List call (the same cursor and limit; their keys are disjoint) into its
// page. An object whose page is not complete may hold keys after its page's
// cursor, so the merged page ends there at the latest (the smallest such
// cursor); its own cursor is its last key, or that bound if it holds none.
func mergeKVPages(pages []KVListResult, prefix string, limit int) KVListResult {
	if len(pages) == 1 {
		return pages[0]
	}
	bound, bounded := "", false
	var keys []KVKey
	for _, p := range pages {
		keys = append(keys, p.Keys...)
		if !p.ListComplete {
			c, _, _, _ := decodeKVCursor(p.Cursor) // the object's own cursor: well formed
			if !bounded || c < bound {
				bound, bounded = c, true
			}
		}
	}
	slices.SortFunc(keys, func(a, b KVKey) int { return strings.Compare(a.Name, b.Name) })
	if bounded {
		n, _ := slices.BinarySearchFunc(keys, bound, func(k KVKey, b string) int { return strings.Compare(k.Name, b) })
		if n < len(keys) && keys[n].Name == bound {
			n++
		}
		keys = keys[:n]
	}
	out := KVListResult{Keys: keys, ListComplete: !bounded && len(keys) <= limit}
	if len(keys) > limit {
		out.Keys = keys[:limit]
	}
	if !out.ListComplete {
		last := bound
		if len(out.Keys) > 0 {
			last = out.Keys[len(out.Keys)-1].Name
		}
		out.Cursor = encodeKVCursor(prefix, last)
	}
	if out.Keys == nil {
		out.Keys = []KVKey{}
	}
	return out
}

func (k *KVNamespace) wrap(op string, err error) error {
	return fmt.Errorf("kv %s (namespace %s): %s: %w", k.binding, k.id, op, err)
}

// call sends one operation on key to the object that keeps it.
func (k *KVNamespace) call(ctx context.Context, key, method, op string, q url.Values, h http.Header, body []byte) (*http.Response, error) {
	if err := k.verify(ctx); err != nil {
		return nil, err
	}
	return k.send(ctx, k.stubFor(key), method, op, q, h, body)
}

// send sends one operation to one of the namespace's objects. An answer of
// 400 carries the kind of the bad input in kvErrorHeader and becomes the
// matching sentinel error; 404 is for the caller to read.
func (k *KVNamespace) send(ctx context.Context, stub *Stub, method, op string, q url.Values, h http.Header, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://kv/"+op+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return nil, k.wrap(op, err)
	}
	for name, v := range h {
		req.Header[name] = v
	}
	resp, err := stub.Fetch(req)
	if err != nil {
		return nil, k.wrap(op, err)
	}
	if resp.StatusCode < 300 || resp.StatusCode == http.StatusNotFound && op == "get" {
		return resp, nil
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	var kind error = errKVUnexpected
	if e, ok := kvErrorKinds[resp.Header.Get(kvErrorHeader)]; ok {
		kind = e
	}
	// The object's message starts with the sentinel's own text: say it once.
	text := string(bytes.TrimSpace(msg))
	text = strings.TrimPrefix(text, kind.Error()+": ")
	return nil, k.wrap(op, fmt.Errorf("%w: %s", kind, text))
}

// errKVUnexpected: the namespace's object answered in a way the client
// does not know.
var errKVUnexpected = errors.New("unexpected answer from the KV namespace")

// The KV protocol between KVNamespace and the namespace's object.
const (
	kvMetadataHeader = "X-Roost-Kv-Metadata" // base64 of the metadata JSON
	kvErrorHeader    = "X-Roost-Kv-Error"    // the kind of a 400
)

// kvErrorKinds maps kvErrorHeader values to sentinel errors.
var kvErrorKinds = map[string]error{
	"key-too-large":   ErrKeyTooLarge,
	"value-too-large": ErrValueTooLarge,
	"invalid-option":  ErrInvalidOption,
	"objects-changed": ErrKVObjectsChanged,
}

// kvErrorKind is the kvErrorHeader value of err ("" if none fits).
func kvErrorKind(err error) string {
	for name, e := range kvErrorKinds {
		if errors.Is(err, e) {
			return name
		}
	}
	return ""
}

func checkKVKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: a KV key may not be empty", ErrInvalidOption)
	case key == "." || key == "..":
		return fmt.Errorf("%w: a KV key may not be %q", ErrInvalidOption, key)
	case len(key) > KVMaxKeyBytes:
		return fmt.Errorf("%w: KV key of %d bytes (at most %d)", ErrKeyTooLarge, len(key), KVMaxKeyBytes)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: a KV key must be UTF-8", ErrInvalidOption)
	}
	return nil
}

// checkKVListPage checks a List's prefix and cursor and returns the key
// the cursor continues after ("" for none). A prefix no key can have (not
// UTF-8, longer than a key) would list nothing, and a cursor of a listing
// with another prefix would skip or repeat keys: both are refused rather
// than answered with a page that looks right.
func checkKVListPage(prefix, cursor string) (after string, err error) {
	switch {
	case len(prefix) > KVMaxKeyBytes:
		return "", fmt.Errorf("%w: a prefix of %d bytes is longer than any KV key (at most %d)", ErrInvalidOption, len(prefix), KVMaxKeyBytes)
	case !utf8.ValidString(prefix):
		return "", fmt.Errorf("%w: the prefix must be UTF-8, as KV keys are", ErrInvalidOption)
	}
	if cursor == "" {
		return "", nil
	}
	after, of, known, err := decodeKVCursor(cursor)
	if err != nil {
		return "", err
	}
	if known && of != prefix || !strings.HasPrefix(after, prefix) {
		return "", fmt.Errorf("%w: cursor %q continues a listing with another prefix; give the prefix it came with", ErrInvalidOption, cursor)
	}
	return after, nil
}

// checkKVPut checks a Put and returns its expiration (Unix seconds, 0 for
// none) and its metadata JSON (nil for none).
func checkKVPut(key string, opts KVPutOptions, now time.Time) (int64, []byte, error) {
	if err := checkKVKey(key); err != nil {
		return 0, nil, err
	}
	var exp time.Time
	switch {
	case !opts.Expiration.IsZero() && opts.ExpirationTTL != 0:
		return 0, nil, fmt.Errorf("%w: give Expiration or ExpirationTTL, not both", ErrInvalidOption)
	case !opts.Expiration.IsZero():
		exp = opts.Expiration
	case opts.ExpirationTTL != 0 && opts.ExpirationTTL < KVMinExpiration:
		// Checked as given: now's fraction of a second, dropped below,
		// would let a TTL of 59.5 s pass.
		return 0, nil, fmt.Errorf("%w: expiration TTL %v is less than %v", ErrInvalidOption, opts.ExpirationTTL, KVMinExpiration)
	case opts.ExpirationTTL != 0:
		exp = now.Add(opts.ExpirationTTL)
	}
	// In whole seconds, as Workers counts an expiration (seconds since the
	// epoch): floor(now) + 60 s is far enough ahead however far into its
	// second now is.
	if !exp.IsZero() && exp.Unix()-now.Unix() < int64(KVMinExpiration/time.Second) {
		return 0, nil, fmt.Errorf("%w: expiration %s is less than %v in the future", ErrInvalidOption, exp.UTC().Format(time.RFC3339), KVMinExpiration)
	}
	if !exp.IsZero() && exp.Unix() > KVMaxExpirationUnix {
		return 0, nil, fmt.Errorf("%w: expiration %s is after the last one a key may have (year 9999)", ErrInvalidOption, exp.UTC().Format(time.RFC3339))
	}
	var unix int64
	if !exp.IsZero() {
		unix = exp.Unix()
	}
	if opts.Metadata == nil {
		return unix, nil, nil
	}
	// Without json.Marshal's escaping of <, > and &: each would count six
	// bytes against the limit, where JSON.stringify's count is one.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(opts.Metadata); err != nil {
		return 0, nil, fmt.Errorf("%w: metadata is not JSON: %v", ErrInvalidOption, err)
	}
	meta := unescapeLineSeparators(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
	if len(meta) > KVMaxMetadataBytes {
		return 0, nil, fmt.Errorf("%w: metadata of %d bytes as JSON (at most %d)", ErrValueTooLarge, len(meta), KVMaxMetadataBytes)
	}
	return unix, meta, nil
}

// unescapeLineSeparators writes U+2028 and U+2029 as themselves (three
// bytes each) where encoding/json escaped them (six bytes, \u2028), which
// it does whatever SetEscapeHTML says: JSON.stringify does not, and the
// metadata limit counts its bytes. A backslash escaped as \\ is skipped
// whole, so the text \u2028 in a string stays as it is.
func unescapeLineSeparators(js []byte) []byte {
	if !bytes.Contains(js, []byte(`\u202`)) {
		return js
	}
	out := make([]byte, 0, len(js))
	for i := 0; i < len(js); i++ {
		if js[i] != '\\' || i+1 == len(js) {
			out = append(out, js[i])
			continue
		}
		if rest := js[i:]; bytes.HasPrefix(rest, []byte(`\u2028`)) || bytes.HasPrefix(rest, []byte(`\u2029`)) {
			out = utf8.AppendRune(out, rune(0x2028+int(rest[5]-'8')))
			i += 5
			continue
		}
		out = append(out, js[i], js[i+1]) // an escape pair: \\ among them
		i++
	}
	return out
}

// A cursor is the last key of the page before, base64url-encoded.
// A List cursor is the last key of its page and the prefix of its
// listing, each base64url (unpadded), joined by a dot (not in base64url's
// alphabet): a cursor given with another prefix, even one its key starts
// with, would skip or repeat keys, and is refused (checkKVListPage). A
// cursor without a dot, of a node from before the prefix was in it, holds
// the key alone.
func encodeKVCursor(prefix, lastKey string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(lastKey)) + "." + base64.RawURLEncoding.EncodeToString([]byte(prefix))
}

// decodeKVCursor returns a cursor's last key and prefix; known is false
// for a cursor that does not hold its prefix.
func decodeKVCursor(c string) (lastKey, prefix string, known bool, err error) {
	bad := fmt.Errorf("%w: %q is not a cursor of this namespace's List", ErrInvalidOption, c)
	k, p, known := strings.Cut(c, ".")
	key, err := base64.RawURLEncoding.Strict().DecodeString(k)
	// A cursor holds a key and a prefix, so they are UTF-8 (checkKVKey,
	// checkKVListPage): most garbage is not.
	if err != nil || len(key) > KVMaxKeyBytes || !utf8.Valid(key) {
		return "", "", false, bad
	}
	if known {
		b, err := base64.RawURLEncoding.Strict().DecodeString(p)
		if err != nil || len(b) > KVMaxKeyBytes || !utf8.Valid(b) {
			return "", "", false, bad
		}
		prefix = string(b)
	}
	return string(key), prefix, known, nil
}
