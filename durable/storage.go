package durable

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

// KV is one key and its value, as returned by List in key order.
type KV struct {
	Key   string
	Value []byte
}

// ListOptions selects a range of keys, as in Workers' storage.list().
// Keys are ordered by their UTF-8 bytes.
type ListOptions struct {
	Start      string // first key returned, inclusive
	StartAfter string // list keys after this one (exclusive); not with Start
	End        string // stop before this key (exclusive); "" means no end
	Prefix     string // only keys that begin with Prefix
	Reverse    bool   // descending order; Limit then keeps the last keys
	Limit      int    // at most this many keys; 0 means no limit
}

// Validate reports options that make no sense, wrapping ErrInvalidOption.
func (o ListOptions) Validate() error {
	if o.Start != "" && o.StartAfter != "" {
		return fmt.Errorf("%w: Start and StartAfter cannot both be set", ErrInvalidOption)
	}
	if o.Limit < 0 {
		return fmt.Errorf("%w: Limit %d is negative", ErrInvalidOption, o.Limit)
	}
	return nil
}

// ReadWriter is the key-value part of Storage, shared by transactions.
// Values are returned as copies the caller may keep and change.
type ReadWriter interface {
	// Get returns the value of key and whether it exists.
	Get(key string) ([]byte, bool, error)
	// GetMany returns the values of the keys that exist (at most Limits.MaxBatchKeys keys).
	GetMany(keys []string) (map[string][]byte, error)
	// Put sets key to value. It returns at once: the write is part of the
	// current turn and is committed with it (the output gate holds the
	// turn's response until then).
	Put(key string, value []byte) error
	// PutMany sets several keys atomically.
	PutMany(entries map[string][]byte) error
	// Delete removes key and reports whether it existed.
	Delete(key string) (bool, error)
	// DeleteMany removes keys and returns how many existed.
	DeleteMany(keys []string) (int, error)
	// List returns the keys selected by opts, in order, with their values.
	List(opts ListOptions) ([]KV, error)
}

// Storage is an object's transactional key-value storage. Every write a
// turn makes is committed atomically with the turn's other writes; reads see
// the object's own writes at once, committed or not.
type Storage interface {
	ReadWriter
	// DeleteAll removes every key of the object (its alarm too).
	DeleteAll() error
	// Transaction runs fn; its writes apply atomically if fn returns nil and
	// are discarded if fn returns an error or calls tx.Rollback.
	Transaction(fn func(tx Txn) error) error
	// Sync waits until every write made so far is durable on a quorum.
	Sync(ctx context.Context) error
	// GetAlarm returns the time the object's alarm is set for, if any.
	// While an alarm's handler runs that alarm is not set any more (as
	// Cloudflare's getAlarm): GetAlarm reports none until the object sets
	// the alarm again. One whose handler failed is set until its retry.
	GetAlarm() (time.Time, bool, error)
	// SetAlarm sets (or moves) the object's single alarm. An object that
	// is not an Alarmer gets ErrNoAlarmHandler.
	SetAlarm(t time.Time) error
	// DeleteAlarm cancels the alarm, if any.
	DeleteAlarm() error
}

// Txn is the view of storage inside Storage.Transaction.
type Txn interface {
	ReadWriter
	// GetAlarm, SetAlarm and DeleteAlarm are Storage's, inside the
	// transaction: GetAlarm sees the transaction's own alarm write, and
	// the write applies with the transaction's others or not at all.
	GetAlarm() (time.Time, bool, error)
	SetAlarm(t time.Time) error
	DeleteAlarm() error
	// Rollback discards the transaction's writes; Transaction then returns
	// ErrTransactionRolledBack. Later calls on the Txn fail with
	// ErrTransactionRolledBack, and calls once Transaction has returned
	// with ErrInvalidOption, as Cloudflare's do.
	Rollback()
}

// Limits bounds what one storage call may carry. The defaults follow
// Cloudflare's SQLite-backed objects.
type Limits struct {
	MaxKeyBytes   int // longest key
	MaxEntryBytes int // longest key + value
	MaxBatchKeys  int // most keys in one GetMany/PutMany/DeleteMany
}

// DefaultLimits returns 2 KiB keys, 2 MiB key+value, 128 keys per multi-key call.
func DefaultLimits() Limits {
	return Limits{MaxKeyBytes: 2 << 10, MaxEntryBytes: 2 << 20, MaxBatchKeys: 128}
}

// Validate reports limits that are not positive.
func (l Limits) Validate() error {
	if l.MaxKeyBytes <= 0 || l.MaxEntryBytes <= 0 || l.MaxBatchKeys <= 0 {
		return fmt.Errorf("storage limits must be positive: %+v", l)
	}
	if l.MaxEntryBytes < l.MaxKeyBytes {
		return fmt.Errorf("storage limits: max entry bytes %d is below max key bytes %d", l.MaxEntryBytes, l.MaxKeyBytes)
	}
	return nil
}

// CheckKey returns an error wrapping ErrKeyTooLarge for an oversized key.
func (l Limits) CheckKey(key string) error {
	if len(key) > l.MaxKeyBytes {
		return fmt.Errorf("%w: key of %d bytes exceeds the limit of %d bytes", ErrKeyTooLarge, len(key), l.MaxKeyBytes)
	}
	return nil
}

// CheckEntry checks a key and its value, for a write: the key may not be
// empty (ErrEmptyKey).
func (l Limits) CheckEntry(key string, value []byte) error {
	if key == "" {
		return fmt.Errorf("%w: a stored key needs at least one byte", ErrEmptyKey)
	}
	if err := l.CheckKey(key); err != nil {
		return err
	}
	if n := len(key) + len(value); n > l.MaxEntryBytes {
		return fmt.Errorf("%w: key %q with its value is %d bytes, over the limit of %d bytes", ErrValueTooLarge, truncate(key), n, l.MaxEntryBytes)
	}
	return nil
}

// CheckBatch checks the number of keys of a multi-key call.
func (l Limits) CheckBatch(n int) error {
	if n > l.MaxBatchKeys {
		return fmt.Errorf("%w: %d keys, the limit is %d", ErrTooManyKeys, n, l.MaxBatchKeys)
	}
	return nil
}

// truncate shortens s for an error message, cutting at a rune boundary so
// the result stays valid UTF-8.
func truncate(s string) string {
	if len(s) <= 32 {
		return s
	}
	i := 32
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// GetJSON reads key and decodes its JSON value into a T. A missing key
// gives T's zero value and ok == false.
func GetJSON[T any](s ReadWriter, key string) (v T, ok bool, err error) {
	b, ok, err := s.Get(key)
	if err != nil || !ok {
		return v, ok, err
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, true, fmt.Errorf("storage key %q: decoding JSON: %w", truncate(key), err)
	}
	return v, true, nil
}

// PutJSON stores v as JSON under key.
func PutJSON(s ReadWriter, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("storage key %q: encoding JSON: %w", truncate(key), err)
	}
	return s.Put(key, b)
}
