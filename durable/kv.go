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
	"net/url"
	"strconv"
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
// Every method sends one request to the namespace's object; ctx bounds it.
type KVNamespace struct {
	binding string
	id      string
	stub    *Stub
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
	resp, err := k.call(ctx, http.MethodGet, "get", url.Values{"key": {key}}, nil, nil)
	if err != nil {
		return nil, nil, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil, false, nil
	}
	if value, err = io.ReadAll(resp.Body); err != nil {
		return nil, nil, false, k.wrap("get", err)
	}
	if m := resp.Header.Get(kvMetadataHeader); m != "" {
		if metadata, err = base64.StdEncoding.DecodeString(m); err != nil {
			return nil, nil, false, k.wrap("get", fmt.Errorf("metadata in the answer: %w", err))
		}
	}
	return value, metadata, true, nil
}

// Put sets key to value, replacing any value, metadata and expiration it had.
func (k *KVNamespace) Put(ctx context.Context, key string, value []byte, opts KVPutOptions) error {
	exp, meta, err := checkKVPut(key, opts, time.Now())
	if err != nil {
		return k.wrap("put", err)
	}
	q := url.Values{"key": {key}}
	if exp != 0 {
		q.Set("expiration", strconv.FormatInt(exp, 10))
	}
	h := http.Header{}
	if meta != nil {
		h.Set(kvMetadataHeader, base64.StdEncoding.EncodeToString(meta))
	}
	resp, err := k.call(ctx, http.MethodPut, "put", q, h, value)
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
	resp, err := k.call(ctx, http.MethodDelete, "delete", url.Values{"key": {key}}, nil, nil)
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
	if _, err := decodeKVCursor(opts.Cursor); err != nil {
		return KVListResult{}, k.wrap("list", err)
	}
	q := url.Values{"prefix": {opts.Prefix}, "cursor": {opts.Cursor}}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	resp, err := k.call(ctx, http.MethodGet, "list", q, nil, nil)
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

func (k *KVNamespace) wrap(op string, err error) error {
	return fmt.Errorf("kv %s (namespace %s): %s: %w", k.binding, k.id, op, err)
}

// call sends one operation to the namespace's object. An answer of 400
// carries the kind of the bad input in kvErrorHeader and becomes the
// matching sentinel error; 404 is for the caller to read.
func (k *KVNamespace) call(ctx context.Context, method, op string, q url.Values, h http.Header, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://kv/"+op+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return nil, k.wrap(op, err)
	}
	for name, v := range h {
		req.Header[name] = v
	}
	resp, err := k.stub.Fetch(req)
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
	return nil, k.wrap(op, fmt.Errorf("%w: %s", kind, bytes.TrimSpace(msg)))
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
	case opts.ExpirationTTL != 0:
		exp = now.Add(opts.ExpirationTTL)
	}
	if !exp.IsZero() && exp.Sub(now) < KVMinExpiration {
		return 0, nil, fmt.Errorf("%w: expiration %s is less than %v in the future", ErrInvalidOption, exp.UTC().Format(time.RFC3339), KVMinExpiration)
	}
	var unix int64
	if !exp.IsZero() {
		unix = exp.Unix()
	}
	if opts.Metadata == nil {
		return unix, nil, nil
	}
	meta, err := json.Marshal(opts.Metadata)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: metadata is not JSON: %v", ErrInvalidOption, err)
	}
	if len(meta) > KVMaxMetadataBytes {
		return 0, nil, fmt.Errorf("%w: metadata of %d bytes as JSON (at most %d)", ErrValueTooLarge, len(meta), KVMaxMetadataBytes)
	}
	return unix, meta, nil
}

// A cursor is the last key of the page before, base64url-encoded.
func encodeKVCursor(lastKey string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(lastKey))
}

func decodeKVCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) > KVMaxKeyBytes {
		return "", fmt.Errorf("%w: %q is not a cursor of this namespace's List", ErrInvalidOption, c)
	}
	return string(b), nil
}
