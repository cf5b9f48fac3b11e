package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/roostdb/roost/durable"
)

// The admin API's KV calls (docs/admin-api.md, "KV"): the same operations
// as a Worker's Env.KV, on the namespaces this node's configuration binds,
// in dev mode and in a cluster alike. Values travel as base64 in JSON.

// maxKVAdminBody bounds a put's body: a value of KVMaxValueBytes,
// base64-encoded, with room for the rest.
const maxKVAdminBody = durable.KVMaxValueBytes/3*4 + 1<<20

type kvValueAnswer struct {
	Key      string          `json:"key"`
	Value    []byte          `json:"value"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// The largest expiration_ttl and expiration a put takes: a century from
// now, and the last second of year 9999.
const (
	maxKVExpirationSeconds = int64(durable.KVMaxExpirationTTL / time.Second)
	maxKVExpirationUnix    = durable.KVMaxExpirationUnix
)

type kvPutBody struct {
	Value         []byte          `json:"value"`
	ExpirationTTL *int64          `json:"expiration_ttl,omitempty"` // seconds from now
	Expiration    *int64          `json:"expiration,omitempty"`     // Unix seconds
	Metadata      json.RawMessage `json:"metadata,omitempty"`
}

// kvNamespace is the namespace of the call's {binding}.
func (a *admin) kvNamespace(r *http.Request) (*durable.KVNamespace, error) {
	kv, err := a.n.Env().KV(r.PathValue("binding"))
	if err != nil {
		return nil, errorf(http.StatusNotFound, "%v", err)
	}
	return kv, nil
}

// kvError maps an error of a KV operation to the API's status.
func kvError(err error) error {
	switch {
	case errors.Is(err, durable.ErrInvalidOption), errors.Is(err, durable.ErrKeyTooLarge), errors.Is(err, durable.ErrValueTooLarge):
		return &apiError{code: http.StatusBadRequest, msg: err.Error(), err: err}
	case errors.Is(err, durable.ErrKVObjectsChanged):
		// The node's configuration and the namespace disagree: no call
		// can succeed until the binding is put back.
		return &apiError{code: http.StatusConflict, msg: err.Error(), err: err}
	case durable.HTTPStatus(err) == http.StatusServiceUnavailable:
		return &apiError{code: http.StatusServiceUnavailable, msg: err.Error(), err: err}
	}
	return err
}

func (a *admin) kvList(w http.ResponseWriter, r *http.Request) error {
	kv, err := a.kvNamespace(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	opts := durable.KVListOptions{Prefix: q.Get("prefix"), Cursor: q.Get("cursor")}
	if s := q.Get("limit"); s != "" {
		if opts.Limit, err = strconv.Atoi(s); err != nil || opts.Limit < 1 || opts.Limit > durable.KVMaxListLimit {
			return errorf(http.StatusBadRequest, "limit %q: give a number of keys from 1 to %d (leave it out for %d)", s, durable.KVMaxListLimit, durable.KVMaxListLimit)
		}
	}
	page, err := kv.List(r.Context(), opts)
	if err != nil {
		return kvError(err)
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

func (a *admin) kvGet(w http.ResponseWriter, r *http.Request) error {
	kv, err := a.kvNamespace(r)
	if err != nil {
		return err
	}
	key := r.PathValue("key")
	value, meta, found, err := kv.GetWithMetadata(r.Context(), key)
	if err != nil {
		return kvError(err)
	}
	if !found {
		return errorf(http.StatusNotFound, "KV %s has no key %q", kv.Binding(), key)
	}
	writeJSON(w, http.StatusOK, kvValueAnswer{Key: key, Value: value, Metadata: meta})
	return nil
}

func (a *admin) kvPut(w http.ResponseWriter, r *http.Request) error {
	kv, err := a.kvNamespace(r)
	if err != nil {
		return err
	}
	// A value over the limit is 413 whether the body that carries it is
	// over its own limit or not (base64 makes it a third larger).
	valueTooLarge := func(err error) error {
		return &apiError{code: http.StatusRequestEntityTooLarge, err: err,
			msg: fmt.Sprintf("the value is larger than a KV value may be, %d bytes (the body holds it in base64: at most %d bytes in all)", durable.KVMaxValueBytes, maxKVAdminBody)}
	}
	var body kvPutBody
	if err := decodeBodyUpTo(r, &body, false, maxKVAdminBody); err != nil {
		if errors.Is(err, errBodyTooLarge) {
			return valueTooLarge(err)
		}
		return err
	}
	if body.Value == nil {
		return errorf(http.StatusBadRequest, `the body needs "value" (base64; "" for an empty value)`)
	}
	if len(body.Value) > durable.KVMaxValueBytes {
		return valueTooLarge(durable.ErrValueTooLarge)
	}
	// Bounded so that the arithmetic below cannot wrap around into a near
	// expiry: a century is more than any cache needs.
	// A field given as 0 is refused, not read as "no expiration": leave it
	// out for that.
	var opts durable.KVPutOptions
	if ttl := body.ExpirationTTL; ttl != nil {
		if *ttl <= 0 || *ttl > maxKVExpirationSeconds {
			return errorf(http.StatusBadRequest, "expiration_ttl %d is out of range: give seconds from now, 60 to %d (leave it out for no expiration)", *ttl, int64(maxKVExpirationSeconds))
		}
		opts.ExpirationTTL = time.Duration(*ttl) * time.Second
	}
	if exp := body.Expiration; exp != nil {
		if *exp <= 0 || *exp > maxKVExpirationUnix {
			return errorf(http.StatusBadRequest, "expiration %d is out of range: give Unix seconds, up to %d (leave it out for no expiration)", *exp, int64(maxKVExpirationUnix))
		}
		opts.Expiration = time.Unix(*exp, 0)
	}
	if body.Metadata != nil && string(body.Metadata) != "null" {
		opts.Metadata = body.Metadata
	}
	key := r.PathValue("key")
	if err := kv.Put(r.Context(), key, body.Value, opts); err != nil {
		return kvError(err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"key": key})
	return nil
}

func (a *admin) kvDelete(w http.ResponseWriter, r *http.Request) error {
	kv, err := a.kvNamespace(r)
	if err != nil {
		return err
	}
	key := r.PathValue("key")
	if err := kv.Delete(r.Context(), key); err != nil {
		return kvError(err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"key": key})
	return nil
}
