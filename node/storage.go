package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"iter"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/raftstore"
)

// committedReader reads a shard's committed state; *raftstore.Store is one.
type committedReader interface {
	Get(g raftstore.GroupID, obj [32]byte, key string) ([]byte, bool, error)
	List(g raftstore.GroupID, obj [32]byte, opts durable.ListOptions) ([]durable.KV, error)
	ObjectVersion(g raftstore.GroupID, obj [32]byte) (uint64, error)
	Alarm(g raftstore.GroupID, obj [32]byte) (int64, bool, error)
}

var _ committedReader = (*raftstore.Store)(nil)

// committer makes an object's batches durable, in the order submitted.
// submit either queues c, which is then finished exactly once, or returns
// an error and leaves finishing c to the caller.
type committer interface {
	submit(c *commit) error
}

// maxCachedKeys and maxCachedBytes bound an instance's cache of committed
// values; past either the cache starts over (a simple bound is enough:
// Pebble's block cache is behind it). The byte bound keeps an object that
// reads large values (a KV namespace's chunks) from holding gigabytes.
const (
	maxCachedKeys  = 4096
	maxCachedBytes = 16 << 20
)

// objectStorage is one instance's durable.Storage. Reads see, newest first:
// the current turn's pending writes, the batches in flight (proposed, not yet
// committed), the cache of committed values, then Pebble.
type objectStorage struct {
	group  raftstore.GroupID
	obj    [32]byte
	reader committedReader
	shard  committer
	limits durable.Limits
	// onBroken is called (outside mu) once, when a commit fails.
	onBroken func(error)
	// syncFlush, if set, is how Sync flushes (instance.syncFlush: WaitUntil
	// work waits for the running turn to end); nil flushes at once.
	syncFlush func(ctx context.Context) (*commit, error)

	mu sync.Mutex
	// noAlarmHandler is the class's name once the instance has built an
	// object that is not a durable.Alarmer: SetAlarm refuses then.
	noAlarmHandler string
	pending        *writeSet
	inflight       []*commit // oldest first
	last           *commit   // the newest commit made, done or not
	version        uint64    // version of the newest batch made
	cache          map[string]cachedValue
	cacheBytes     int         // the values' bytes in cache
	alarm          *alarmValue // committed alarm, if known
	broken         error
	inTxn          bool
	// alarmWrites counts SetAlarm, DeleteAlarm and DeleteAll calls, so an
	// alarm delivery can tell whether its alarm was written while it ran
	// (deliveringAlarm), even set again for the very time delivered.
	alarmWrites uint64
	// delivering, while an Alarm handler runs, is the alarm it was
	// delivered for and alarmWrites when it began: until the object sets
	// or deletes its alarm, GetAlarm answers that none is set, as
	// Cloudflare's getAlarm does while an alarm runs.
	delivering *alarmDelivery
}

type alarmDelivery struct {
	at     int64 // unix ms
	writes uint64
}

var _ durable.Storage = (*objectStorage)(nil)

type cachedValue struct {
	value  []byte
	exists bool
}

type alarmValue struct {
	at     int64 // unix ms
	exists bool
}

func newObjectStorage(group raftstore.GroupID, obj [32]byte, reader committedReader, shard committer, limits durable.Limits) *objectStorage {
	return &objectStorage{
		group: group, obj: obj, reader: reader, shard: shard, limits: limits,
		cache: make(map[string]cachedValue),
	}
}

// load reads the object's committed version; the first turn calls it
// before the object runs, so its batches continue the committed sequence.
func (s *objectStorage) load() error {
	v, err := s.reader.ObjectVersion(s.group, s.obj)
	if err != nil {
		return fmt.Errorf("reading object version: %w", err)
	}
	s.mu.Lock()
	s.version = v
	s.mu.Unlock()
	return nil
}

// writeSet is a set of writes not yet committed: a DeleteAll (which clears
// everything older), then puts and deletes by key, then an alarm change.
type writeSet struct {
	deleteAll bool
	keys      map[string]cachedValue
	alarm     *alarmValue
	keyBytes  int // the encoded length of the ops of keys (keyOpLen)
}

func newWriteSet() *writeSet { return &writeSet{keys: make(map[string]cachedValue)} }

// keyOpLen is the encoded length of the op that writes v to key.
func keyOpLen(key string, v cachedValue) int {
	op := raftstore.Op{Kind: raftstore.OpDelete, Key: key}
	if v.exists {
		op = raftstore.Op{Kind: raftstore.OpPut, Key: key, Value: v.value}
	}
	return op.EncodedLen()
}

// batchOverhead bounds what a batch adds to its key ops: the object, the
// version and op count, a DeleteAll and an alarm op.
const batchOverhead = 32 + 2*binary.MaxVarintLen64 + 1 + 1 + binary.MaxVarintLen64

// maxStorageEntryBytes is the largest Limits.MaxEntryBytes: a put of that
// many bytes of key and value must make a batch on its own.
const maxStorageEntryBytes = raftstore.MaxBatchBytes - batchOverhead - 1 - 2*binary.MaxVarintLen64

// fits checks that ws (nil: an empty set) with changes applied still makes
// a batch of at most raftstore.MaxBatchBytes, so that its commit fits in
// one Raft entry.
func (ws *writeSet) fits(changes iter.Seq2[string, cachedValue]) error {
	n := 0
	if ws != nil {
		n = ws.keyBytes
	}
	for k, v := range changes {
		if ws != nil {
			if old, ok := ws.keys[k]; ok {
				n -= keyOpLen(k, old)
			}
		}
		n += keyOpLen(k, v)
	}
	if n+batchOverhead > raftstore.MaxBatchBytes {
		return fmt.Errorf("%w: the writes since the last commit would encode to %d bytes, over the %d bytes one commit carries; await Storage.Sync to commit part of them first", durable.ErrTurnTooLarge, n+batchOverhead, raftstore.MaxBatchBytes)
	}
	return nil
}

// puts and deletes are changes for fits.
func puts(entries map[string][]byte) iter.Seq2[string, cachedValue] {
	return func(yield func(string, cachedValue) bool) {
		for k, v := range entries {
			if !yield(k, cachedValue{value: v, exists: true}) {
				return
			}
		}
	}
}

func deletes(keys []string) iter.Seq2[string, cachedValue] {
	return func(yield func(string, cachedValue) bool) {
		for i, k := range keys {
			if slices.Contains(keys[:i], k) {
				continue // a repeated key is one delete, as in the batch
			}
			if !yield(k, cachedValue{}) {
				return
			}
		}
	}
}

// set writes v to key in the set.
func (ws *writeSet) set(key string, v cachedValue) {
	if old, ok := ws.keys[key]; ok {
		ws.keyBytes -= keyOpLen(key, old)
	}
	ws.keys[key] = v
	ws.keyBytes += keyOpLen(key, v)
}

// lookup says what the set knows of key: its value, whether it exists, and
// whether the set decides it at all.
func (ws *writeSet) lookup(key string) (cachedValue, bool) {
	if v, ok := ws.keys[key]; ok {
		return v, true
	}
	if ws.deleteAll {
		return cachedValue{}, true
	}
	return cachedValue{}, false
}

func (ws *writeSet) put(key string, value []byte) {
	ws.set(key, cachedValue{value: value, exists: true})
}
func (ws *writeSet) del(key string) { ws.set(key, cachedValue{}) }

func (ws *writeSet) clearAll() {
	clear(ws.keys)
	ws.keyBytes = 0
	ws.deleteAll = true
	ws.alarm = &alarmValue{}
}

// ops encodes the set as the ops of one ObjectBatch, in a deterministic order.
func (ws *writeSet) ops() []raftstore.Op {
	ops := make([]raftstore.Op, 0, len(ws.keys)+2)
	if ws.deleteAll {
		ops = append(ops, raftstore.Op{Kind: raftstore.OpDeleteAll})
	}
	keys := make([]string, 0, len(ws.keys))
	for k := range ws.keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if v := ws.keys[k]; v.exists {
			ops = append(ops, raftstore.Op{Kind: raftstore.OpPut, Key: k, Value: v.value})
		} else {
			ops = append(ops, raftstore.Op{Kind: raftstore.OpDelete, Key: k})
		}
	}
	switch a := ws.alarm; {
	case a == nil:
	case a.exists:
		ops = append(ops, raftstore.Op{Kind: raftstore.OpSetAlarm, AlarmAt: a.at})
	case !ws.deleteAll: // OpDeleteAll already removed the alarm
		ops = append(ops, raftstore.Op{Kind: raftstore.OpDeleteAlarm})
	}
	return ops
}

// get is lookup through every layer; callers hold s.mu.
func (s *objectStorage) get(key string) (cachedValue, error) {
	if s.pending != nil {
		if v, ok := s.pending.lookup(key); ok {
			return v, nil
		}
	}
	for i := len(s.inflight) - 1; i >= 0; i-- {
		if v, ok := s.inflight[i].writes.lookup(key); ok {
			return v, nil
		}
	}
	if v, ok := s.cache[key]; ok {
		return v, nil
	}
	b, ok, err := s.reader.Get(s.group, s.obj, key)
	if err != nil {
		return cachedValue{}, fmt.Errorf("storage get %q: %w", key, err)
	}
	v := cachedValue{value: b, exists: ok}
	s.remember(key, v)
	return v, nil
}

func (s *objectStorage) remember(key string, v cachedValue) {
	if len(s.cache) >= maxCachedKeys || s.cacheBytes+len(v.value) > maxCachedBytes {
		s.clearCache()
	}
	if old, ok := s.cache[key]; ok {
		s.cacheBytes -= len(old.value)
	}
	s.cache[key] = v
	s.cacheBytes += len(v.value)
}

// writable returns the pending set, creating it; callers hold s.mu.
func (s *objectStorage) writable() *writeSet {
	if s.pending == nil {
		s.pending = newWriteSet()
	}
	return s.pending
}

func (s *objectStorage) usable() error {
	if s.broken != nil {
		return s.broken
	}
	return nil
}

// Get implements durable.Storage.
func (s *objectStorage) Get(key string) ([]byte, bool, error) {
	if err := s.limits.CheckKey(key); err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return nil, false, err
	}
	v, err := s.get(key)
	if err != nil || !v.exists {
		return nil, false, err
	}
	return bytes.Clone(v.value), true, nil
}

// GetMany implements durable.Storage.
func (s *objectStorage) GetMany(keys []string) (map[string][]byte, error) {
	if err := s.checkKeys(keys); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(keys))
	for _, k := range keys {
		v, err := s.get(k)
		if err != nil {
			return nil, err
		}
		if v.exists {
			out[k] = bytes.Clone(v.value)
		}
	}
	return out, nil
}

func (s *objectStorage) checkKeys(keys []string) error {
	if err := s.limits.CheckBatch(len(keys)); err != nil {
		return err
	}
	for _, k := range keys {
		if err := s.limits.CheckKey(k); err != nil {
			return err
		}
	}
	return nil
}

func (s *objectStorage) checkEntries(entries map[string][]byte) error {
	if err := s.limits.CheckBatch(len(entries)); err != nil {
		return err
	}
	for k, v := range entries {
		if err := s.limits.CheckEntry(k, v); err != nil {
			return err
		}
	}
	return nil
}

// Put implements durable.Storage.
func (s *objectStorage) Put(key string, value []byte) error {
	return s.PutMany(map[string][]byte{key: value})
}

// PutMany implements durable.Storage.
func (s *objectStorage) PutMany(entries map[string][]byte) error {
	if err := s.checkEntries(entries); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil // nothing to commit: no empty batch, no Raft entry
	}
	if err := s.pending.fits(puts(entries)); err != nil {
		return err
	}
	ws := s.writable()
	for k, v := range entries {
		ws.put(k, bytes.Clone(v))
	}
	return nil
}

// Delete implements durable.Storage.
func (s *objectStorage) Delete(key string) (bool, error) {
	n, err := s.DeleteMany([]string{key})
	return n == 1, err
}

// DeleteMany implements durable.Storage.
func (s *objectStorage) DeleteMany(keys []string) (int, error) {
	if err := s.checkKeys(keys); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return 0, err
	}
	n := 0
	for i, k := range keys {
		if slices.Contains(keys[:i], k) {
			continue // a repeated key is deleted once
		}
		v, err := s.get(k)
		if err != nil {
			return 0, err
		}
		if v.exists {
			n++
		}
	}
	if len(keys) == 0 {
		return 0, nil
	}
	if err := s.pending.fits(deletes(keys)); err != nil {
		return 0, err
	}
	ws := s.writable()
	for _, k := range keys {
		ws.del(k)
	}
	return n, nil
}

// List implements durable.Storage.
func (s *objectStorage) List(opts durable.ListOptions) ([]durable.KV, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return nil, err
	}
	layers := make([]*writeSet, 0, len(s.inflight)+1)
	for _, c := range s.inflight {
		layers = append(layers, c.writes)
	}
	if s.pending != nil {
		layers = append(layers, s.pending)
	}
	return listLayers(opts, layers, func(o durable.ListOptions) ([]durable.KV, error) {
		return s.reader.List(s.group, s.obj, o)
	})
}

// listLayers lists committed keys through uncommitted layers (oldest
// first). With no layers it is the committed list itself.
func listLayers(opts durable.ListOptions, layers []*writeSet, committed func(durable.ListOptions) ([]durable.KV, error)) ([]durable.KV, error) {
	if len(layers) == 0 {
		return committed(opts)
	}
	// What the layers decide, newest decision winning; a DeleteAll hides
	// everything committed and everything in older layers.
	merged := make(map[string]cachedValue)
	hideCommitted := false
	for _, ws := range layers {
		if ws.deleteAll {
			clear(merged)
			hideCommitted = true
		}
		for k, v := range ws.keys {
			if inRange(k, opts) {
				merged[k] = v
			}
		}
	}
	result := make(map[string][]byte)
	if !hideCommitted {
		q := opts
		if q.Limit > 0 {
			// Deleted keys may remove committed ones from the page: ask for more.
			for _, v := range merged {
				if !v.exists && q.Limit < math.MaxInt {
					q.Limit++ // saturating: a Limit of math.MaxInt must not wrap
				}
			}
		}
		kvs, err := committed(q)
		if err != nil {
			return nil, err
		}
		for _, kv := range kvs {
			result[kv.Key] = kv.Value
		}
	}
	for k, v := range merged {
		if v.exists {
			result[k] = v.value
		} else {
			delete(result, k)
		}
	}
	out := make([]durable.KV, 0, len(result))
	for k, v := range result {
		out = append(out, durable.KV{Key: k, Value: bytes.Clone(v)})
	}
	slices.SortFunc(out, func(a, b durable.KV) int {
		if opts.Reverse {
			return strings.Compare(b.Key, a.Key)
		}
		return strings.Compare(a.Key, b.Key)
	})
	if opts.Limit > 0 && len(out) > opts.Limit {
		out = out[:opts.Limit]
	}
	return out, nil
}

// inRange reports whether key is selected by opts' bounds and prefix.
func inRange(key string, o durable.ListOptions) bool {
	if o.Start != "" && key < o.Start {
		return false
	}
	if o.StartAfter != "" && key <= o.StartAfter {
		return false
	}
	if o.End != "" && key >= o.End {
		return false
	}
	return strings.HasPrefix(key, o.Prefix)
}

// DeleteAll implements durable.Storage.
func (s *objectStorage) DeleteAll() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	s.writable().clearAll()
	s.alarmWrites++
	return nil
}

// transactionOpen reports whether a Transaction is running: its turn keeps
// the instance's gate shut across awaits (instanceDispatcher).
func (s *objectStorage) transactionOpen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inTxn
}

// Transaction implements durable.Storage: fn's writes collect in their own
// set and join the turn's pending writes only if fn succeeds.
func (s *objectStorage) Transaction(fn func(tx durable.Txn) error) (err error) {
	s.mu.Lock()
	if s.inTxn {
		s.mu.Unlock()
		return fmt.Errorf("%w: a transaction is open on this object already (transactions do not nest; one that WaitUntil work opened counts too)", durable.ErrInvalidOption)
	}
	s.inTxn = true
	s.mu.Unlock()
	tx := &txn{s: s, writes: newWriteSet()}
	defer func() {
		tx.ended.Store(true)
		s.mu.Lock()
		s.inTxn = false
		s.mu.Unlock()
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if tx.rolledBack {
		return durable.ErrTransactionRolledBack
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if len(tx.writes.keys) == 0 && tx.writes.alarm == nil {
		return nil // a read-only transaction commits nothing
	}
	if err := s.pending.fits(maps.All(tx.writes.keys)); err != nil {
		return err
	}
	ws := s.writable()
	for k, v := range tx.writes.keys {
		ws.set(k, v)
	}
	if a := tx.writes.alarm; a != nil {
		ws.alarm = a
		s.alarmWrites++
	}
	return nil
}

// Sync implements durable.Storage: it commits what is pending and waits.
func (s *objectStorage) Sync(ctx context.Context) error {
	flush := func(context.Context) (*commit, error) { return s.flush(), nil }
	if s.syncFlush != nil {
		flush = s.syncFlush
	}
	c, err := flush(ctx)
	if err != nil {
		return err
	}
	if c == nil {
		return nil
	}
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// GetAlarm implements durable.Storage.
func (s *objectStorage) GetAlarm() (time.Time, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return time.Time{}, false, err
	}
	a, err := s.currentAlarm()
	if err != nil || !a.exists {
		return time.Time{}, false, err
	}
	if d := s.delivering; d != nil && d.writes == s.alarmWrites && d.at == a.at {
		return time.Time{}, false, nil // the alarm running now
	}
	return time.UnixMilli(a.at), true, nil
}

// deliveringAlarm marks the alarm set for at as running: GetAlarm hides it
// until the object sets or deletes its alarm. The function it returns ends
// the mark, reports whether the alarm was written meanwhile (set again,
// even for the very time delivered, or deleted) and, if del and it was
// not, deletes the alarm delivered: in one step under s.mu, so that a
// SetAlarm from WaitUntil work, which runs outside the gate, cannot fall
// between the check and the delete.
func (s *objectStorage) deliveringAlarm(at int64) (end func(del bool) (written bool, err error)) {
	s.mu.Lock()
	d := &alarmDelivery{at: at, writes: s.alarmWrites}
	s.delivering = d
	s.mu.Unlock()
	return func(del bool) (bool, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.delivering = nil
		if s.alarmWrites != d.writes {
			return true, nil
		}
		if !del {
			return false, nil
		}
		if err := s.usable(); err != nil {
			return false, err
		}
		a, err := s.currentAlarm()
		if err != nil || !a.exists || a.at != at {
			return false, err
		}
		s.writable().alarm = &alarmValue{}
		s.alarmWrites++
		return false, nil
	}
}

func (s *objectStorage) currentAlarm() (alarmValue, error) {
	if s.pending != nil && s.pending.alarm != nil {
		return *s.pending.alarm, nil
	}
	for i := len(s.inflight) - 1; i >= 0; i-- {
		if a := s.inflight[i].writes.alarm; a != nil {
			return *a, nil
		}
	}
	if s.alarm != nil {
		return *s.alarm, nil
	}
	at, ok, err := s.reader.Alarm(s.group, s.obj)
	if err != nil {
		return alarmValue{}, fmt.Errorf("storage get alarm: %w", err)
	}
	s.alarm = &alarmValue{at: at, exists: ok}
	return *s.alarm, nil
}

// The earliest and latest alarm times: those Unix milliseconds hold.
var (
	minAlarmTime = time.UnixMilli(math.MinInt64)
	maxAlarmTime = time.UnixMilli(math.MaxInt64)
)

// SetAlarm implements durable.Storage.
func (s *objectStorage) SetAlarm(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkAlarm(t); err != nil {
		return err
	}
	s.writable().alarm = &alarmValue{at: t.UnixMilli(), exists: true}
	s.alarmWrites++
	return nil
}

// checkAlarm refuses an alarm for t that could not be kept or would never
// run; callers hold s.mu.
func (s *objectStorage) checkAlarm(t time.Time) error {
	if t.IsZero() {
		return fmt.Errorf("%w: alarm time is zero", durable.ErrInvalidOption)
	}
	if t.Before(minAlarmTime) || t.After(maxAlarmTime) {
		// Unix milliseconds, which the alarm is kept in, cannot hold it:
		// it would wrap round into another time, maybe one due at once.
		return fmt.Errorf("%w: alarm time %v is out of range", durable.ErrInvalidOption, t)
	}
	if err := s.usable(); err != nil {
		return err
	}
	if s.noAlarmHandler != "" {
		return fmt.Errorf("%w: class %s has no Alarm method, so an alarm set would never run", durable.ErrNoAlarmHandler, s.noAlarmHandler)
	}
	return nil
}

// refuseAlarms makes SetAlarm fail with durable.ErrNoAlarmHandler: the
// object of class has no Alarm method. (An object that sets an alarm in
// its constructor, before the instance knows this, is not refused.)
func (s *objectStorage) refuseAlarms(class string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noAlarmHandler = class
}

// DeleteAlarm implements durable.Storage.
func (s *objectStorage) DeleteAlarm() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	s.writable().alarm = &alarmValue{}
	s.alarmWrites++
	return nil
}

// flush turns the pending writes into a commit and submits it. It returns
// the newest commit of the object (nil if it never wrote), which every
// response that may have seen its writes must wait for.
func (s *objectStorage) flush() *commit {
	s.mu.Lock()
	if s.broken != nil {
		defer s.mu.Unlock()
		return failedCommit(s.broken)
	}
	if s.pending == nil {
		defer s.mu.Unlock()
		return s.last
	}
	s.version++
	c := newCommit(raftstore.ObjectBatch{Object: s.obj, Version: s.version, Ops: s.pending.ops()}, s.pending, s.committed)
	s.pending = nil
	s.inflight = append(s.inflight, c)
	s.last = c
	// Submitting under s.mu keeps this object's batches in order (lock
	// order objectStorage.mu → shard.mu). A refused commit is finished
	// after unlocking: finishing calls s.committed, which takes s.mu.
	err := s.shard.submit(c)
	s.mu.Unlock()
	if err != nil {
		c.finish(err)
	}
	return c
}

// committed is called once per commit, in submission order, when its
// outcome is known.
func (s *objectStorage) committed(c *commit) {
	s.mu.Lock()
	if i := slices.Index(s.inflight, c); i >= 0 {
		s.inflight = slices.Delete(s.inflight, i, i+1)
	}
	var broke error
	if c.err != nil {
		if s.broken == nil {
			s.broken = c.err
			broke = c.err
		}
		s.clearCache()
	} else {
		ws := c.writes
		if ws.deleteAll {
			s.clearCache()
		}
		for k, v := range ws.keys {
			s.remember(k, v)
		}
		if ws.alarm != nil {
			a := *ws.alarm
			s.alarm = &a
		}
	}
	// s.last may keep c for as long as the instance lives: keep only its
	// outcome and version, not the data.
	c.writes = nil
	c.batch.Ops = nil
	s.mu.Unlock()
	if broke != nil && s.onBroken != nil {
		s.onBroken(broke)
	}
}

// newest returns the newest commit submitted, nil if none was.
func (s *objectStorage) newest() *commit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// seal makes every later storage call fail with reason and returns the
// newest commit, after which nothing of this instance is in flight.
func (s *objectStorage) seal(reason error) *commit {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken == nil {
		s.broken = fmt.Errorf("%w: %v", errInstanceReset, reason)
	}
	s.pending = nil
	return s.last
}

// forget empties the cache of committed state when nothing is pending or
// in flight, for a hibernating object; it reports whether it did. What
// was cached is read again from the store when asked for.
func (s *objectStorage) forget() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending != nil || len(s.inflight) > 0 {
		return false
	}
	s.cache = make(map[string]cachedValue) // a new map: clear keeps the old one's buckets
	s.cacheBytes = 0
	s.alarm = nil
	return true
}

// clearCache empties the cache of committed values; callers hold s.mu.
func (s *objectStorage) clearCache() {
	clear(s.cache)
	s.cacheBytes = 0
}

// idle reports whether nothing is pending or in flight.
func (s *objectStorage) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending == nil && len(s.inflight) == 0
}

// txn is a transaction's view: its own writes over the object's.
type txn struct {
	s          *objectStorage
	writes     *writeSet
	rolledBack bool
	ended      atomic.Bool // Transaction has returned
}

var _ durable.Txn = (*txn)(nil)

func (t *txn) Rollback() { t.rolledBack = true }

// usable refuses calls after Rollback and once Transaction has returned,
// as Cloudflare's transaction does: their writes would never commit, and
// reads would show writes that never commit.
func (t *txn) usable() error {
	switch {
	case t.ended.Load():
		return fmt.Errorf("%w: the transaction has ended (a Txn is used only inside its Transaction's fn)", durable.ErrInvalidOption)
	case t.rolledBack:
		return fmt.Errorf("%w: the transaction cannot be used after Rollback", durable.ErrTransactionRolledBack)
	}
	return nil
}

func (t *txn) lookup(key string) (cachedValue, error) {
	if v, ok := t.writes.lookup(key); ok {
		return v, nil
	}
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	if err := t.s.usable(); err != nil {
		return cachedValue{}, err
	}
	return t.s.get(key)
}

func (t *txn) Get(key string) ([]byte, bool, error) {
	if err := t.usable(); err != nil {
		return nil, false, err
	}
	if err := t.s.limits.CheckKey(key); err != nil {
		return nil, false, err
	}
	v, err := t.lookup(key)
	if err != nil || !v.exists {
		return nil, false, err
	}
	return bytes.Clone(v.value), true, nil
}

func (t *txn) GetMany(keys []string) (map[string][]byte, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	if err := t.s.checkKeys(keys); err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(keys))
	for _, k := range keys {
		v, err := t.lookup(k)
		if err != nil {
			return nil, err
		}
		if v.exists {
			out[k] = bytes.Clone(v.value)
		}
	}
	return out, nil
}

func (t *txn) Put(key string, value []byte) error {
	return t.PutMany(map[string][]byte{key: value})
}

func (t *txn) PutMany(entries map[string][]byte) error {
	if err := t.usable(); err != nil {
		return err
	}
	if err := t.s.checkEntries(entries); err != nil {
		return err
	}
	if err := t.writes.fits(puts(entries)); err != nil {
		return err
	}
	for k, v := range entries {
		t.writes.put(k, bytes.Clone(v))
	}
	return nil
}

func (t *txn) Delete(key string) (bool, error) {
	n, err := t.DeleteMany([]string{key})
	return n == 1, err
}

func (t *txn) DeleteMany(keys []string) (int, error) {
	if err := t.usable(); err != nil {
		return 0, err
	}
	if err := t.s.checkKeys(keys); err != nil {
		return 0, err
	}
	if err := t.writes.fits(deletes(keys)); err != nil {
		return 0, err
	}
	n := 0
	for i, k := range keys {
		if slices.Contains(keys[:i], k) {
			continue // a repeated key is deleted once
		}
		v, err := t.lookup(k)
		if err != nil {
			return 0, err // before any delete: a failed call records nothing
		}
		if v.exists {
			n++
		}
	}
	for _, k := range keys {
		t.writes.del(k)
	}
	return n, nil
}

// GetAlarm implements durable.Txn: the transaction's own alarm write, if
// it made one, else the object's alarm.
func (t *txn) GetAlarm() (time.Time, bool, error) {
	if err := t.usable(); err != nil {
		return time.Time{}, false, err
	}
	if a := t.writes.alarm; a != nil {
		if !a.exists {
			return time.Time{}, false, nil
		}
		return time.UnixMilli(a.at), true, nil
	}
	return t.s.GetAlarm()
}

// SetAlarm implements durable.Txn.
func (t *txn) SetAlarm(at time.Time) error {
	if err := t.usable(); err != nil {
		return err
	}
	t.s.mu.Lock()
	err := t.s.checkAlarm(at)
	t.s.mu.Unlock()
	if err != nil {
		return err
	}
	t.writes.alarm = &alarmValue{at: at.UnixMilli(), exists: true}
	return nil
}

// DeleteAlarm implements durable.Txn.
func (t *txn) DeleteAlarm() error {
	if err := t.usable(); err != nil {
		return err
	}
	t.writes.alarm = &alarmValue{}
	return nil
}

func (t *txn) List(opts durable.ListOptions) ([]durable.KV, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	// The object's own view (committed + uncommitted) is the committed side
	// of the transaction's single layer.
	return listLayers(opts, []*writeSet{t.writes}, t.s.List)
}
