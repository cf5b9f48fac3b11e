package multiraft

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// counters is a test state machine: named counters, each command "+name"
// increments one and returns its new value; a command "=..." changes
// nothing and returns its length (to replicate large entries). It keeps its counters in
// memory and in Pebble under c/<group8>/<name>, and reloads them from
// Pebble when it is created, as a real one would after a restart.
type counters struct {
	db     *pebble.DB
	prefix []byte
	mu     sync.Mutex // guards m against the tests' reads
	m      map[string]uint64
	// applied is every command index applied, to check none twice.
	applied []uint64
}

func newCounters(t testing.TB, db *pebble.DB, g GroupID) *counters {
	c := &counters{db: db, prefix: binary.BigEndian.AppendUint64([]byte("c/"), uint64(g)), m: map[string]uint64{}}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: c.prefix, UpperBound: c.end()})
	if err != nil {
		t.Fatal(err)
	}
	for it.First(); it.Valid(); it.Next() {
		c.m[string(it.Key()[len(c.prefix):])] = binary.BigEndian.Uint64(it.Value())
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *counters) end() []byte {
	return binary.BigEndian.AppendUint64([]byte("c/"), binary.BigEndian.Uint64(c.prefix[2:])+1)
}

func (c *counters) Apply(b *pebble.Batch, cmds []Command) ([]any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]any, len(cmds))
	for i, cmd := range cmds {
		if len(cmd.Data) > 0 && cmd.Data[0] == '=' {
			out[i] = uint64(len(cmd.Data)) // padding: changes nothing
			continue
		}
		if len(cmd.Data) < 2 || cmd.Data[0] != '+' {
			return nil, fmt.Errorf("bad command %q", cmd.Data)
		}
		name := string(cmd.Data[1:])
		c.m[name]++
		if err := b.Set(append(append([]byte(nil), c.prefix...), name...), binary.BigEndian.AppendUint64(nil, c.m[name]), nil); err != nil {
			return nil, err
		}
		out[i] = c.m[name]
		c.applied = append(c.applied, cmd.Index)
	}
	return out, nil
}

func (c *counters) Snapshot() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return json.Marshal(c.m)
}

func (c *counters) Restore(b *pebble.Batch, data []byte) error {
	m := map[string]uint64{}
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := b.DeleteRange(c.prefix, c.end(), nil); err != nil {
		return err
	}
	for name, v := range m {
		if err := b.Set(append(append([]byte(nil), c.prefix...), name...), binary.BigEndian.AppendUint64(nil, v), nil); err != nil {
			return err
		}
	}
	c.m = m
	return nil
}

func (c *counters) get(name string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[name]
}

// appliedIndexes is every index the state machine applied, in order.
func (c *counters) appliedIndexes() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.applied)
}

func (c *counters) snapshot() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

var _ StateMachine = (*counters)(nil)

// cluster is engines on a MemNetwork, each with its own Pebble on an
// in-memory filesystem that survives the engine's restarts.
type cluster struct {
	t   testing.TB
	net *MemNetwork
	// mu guards the maps below: the fault test restarts nodes while
	// clients look groups up.
	mu      sync.Mutex
	fs      map[uint64]*vfs.MemFS
	dbs     map[uint64]*pebble.DB
	engines map[uint64]*Engine
	sms     map[uint64]map[GroupID]*counters
	groups  map[uint64]map[GroupID]*Group
	config  func(*Config)
	// syncDelays (nanoseconds, by node id) slow every sync of a node's
	// files, to widen the window between a write and its sync.
	syncDelays [8]atomic.Int64
}

func newCluster(t testing.TB, nodes int, config func(*Config)) *cluster {
	c := &cluster{t: t, net: NewMemNetwork(), fs: map[uint64]*vfs.MemFS{}, dbs: map[uint64]*pebble.DB{},
		engines: map[uint64]*Engine{}, sms: map[uint64]map[GroupID]*counters{}, groups: map[uint64]map[GroupID]*Group{}, config: config}
	for id := uint64(1); id <= uint64(nodes); id++ {
		c.start(id)
	}
	t.Cleanup(func() {
		for _, id := range c.running() {
			c.stop(id)
		}
		c.net.Close() // a second Close does nothing
	})
	return c
}

// start opens node id's database (new or kept from before) and engine.
func (c *cluster) start(id uint64) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fs[id] == nil {
		c.fs[id] = vfs.NewCrashableMem()
	}
	db, err := pebble.Open("db", &pebble.Options{FS: slowSyncFS{c.fs[id], &c.syncDelays[id]}, Logger: quietPebble{}})
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.NodeID, cfg.DB, cfg.Transport = id, db, c.net.Transport(id)
	cfg.TickInterval = 10 * time.Millisecond
	if c.config != nil {
		c.config(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.dbs[id], c.engines[id] = db, e
	c.sms[id], c.groups[id] = map[GroupID]*counters{}, map[GroupID]*Group{}
	c.net.Attach(id, e)
}

// stop closes node id's engine and database, as a clean shutdown.
func (c *cluster) stop(id uint64) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.net.Detach(id)
	c.engines[id].Close()
	if err := c.dbs[id].Close(); err != nil {
		c.t.Fatal(err)
	}
	delete(c.engines, id)
	delete(c.dbs, id)
}

// crash stops node id losing every write not synced, as a power cut.
func (c *cluster) crash(id uint64) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.net.Detach(id)
	// The engine stops first: nothing it acknowledged may be lost.
	c.engines[id].Close()
	crashed := c.fs[id].CrashClone(vfs.CrashCloneCfg{})
	_ = c.dbs[id].Close()
	c.fs[id] = crashed
	delete(c.engines, id)
	delete(c.dbs, id)
}

// powerCut cuts the power of every running node at once, engines still
// running: each loses what it had not synced when its copy was taken,
// whatever it has acknowledged since.
func (c *cluster) powerCut() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := slices.Sorted(maps.Keys(c.engines))
	crashed := map[uint64]*vfs.MemFS{}
	for _, id := range ids {
		crashed[id] = c.fs[id].CrashClone(vfs.CrashCloneCfg{})
	}
	for _, id := range ids {
		c.net.Detach(id)
		c.engines[id].Close()
		_ = c.dbs[id].Close()
		c.fs[id] = crashed[id]
		delete(c.engines, id)
		delete(c.dbs, id)
	}
}

// slowSyncFS delays every sync of its files by *delay nanoseconds.
type slowSyncFS struct {
	vfs.FS
	delay *atomic.Int64
}

func (fs slowSyncFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return slowSyncFile{f, fs.delay}, nil
}

func (fs slowSyncFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.Create(name, cat))
}

func (fs slowSyncFS) OpenReadWrite(name string, cat vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.FS.OpenReadWrite(name, cat, opts...))
}

func (fs slowSyncFS) ReuseForWrite(oldname, newname string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.ReuseForWrite(oldname, newname, cat))
}

type slowSyncFile struct {
	vfs.File
	delay *atomic.Int64
}

func (f slowSyncFile) wait() { time.Sleep(time.Duration(f.delay.Load())) }

func (f slowSyncFile) Sync() error     { f.wait(); return f.File.Sync() }
func (f slowSyncFile) SyncData() error { f.wait(); return f.File.SyncData() }
func (f slowSyncFile) SyncTo(length int64) (bool, error) {
	f.wait()
	return f.File.SyncTo(length)
}

// startGroup starts group g on node id with the given founding voters
// (none: join).
func (c *cluster) startGroup(id uint64, g GroupID, voters ...uint64) *Group {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	sm := newCounters(c.t, c.dbs[id], g)
	h, err := c.engines[id].StartGroup(GroupConfig{ID: g, StateMachine: sm, Voters: voters})
	if err != nil {
		c.t.Fatal(err)
	}
	c.sms[id][g], c.groups[id][g] = sm, h
	return h
}

// leader waits until one running node leads group g in a term no other
// node has gone past, and returns it.
func (c *cluster) leader(g GroupID) uint64 {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var lead, leadTerm, maxTerm uint64
		for _, id := range c.running() {
			h, _ := c.handle(id, g)
			if h == nil {
				continue
			}
			st := h.Status()
			maxTerm = max(maxTerm, st.Term)
			if st.Role == Leader && st.Term >= leadTerm {
				lead, leadTerm = id, st.Term
			}
		}
		if lead != 0 && leadTerm == maxTerm {
			return lead
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.t.Fatalf("group %s: no leader in 10 s", g)
	return 0
}

// converged waits until every running node of group g has applied the
// same entries and holds the same counters.
func (c *cluster) converged(g GroupID) map[string]uint64 {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var want map[string]uint64
		var applied uint64
		same := true
		for _, id := range c.running() {
			h, sm := c.handle(id, g)
			if h == nil {
				continue
			}
			got := sm.snapshot()
			if want == nil {
				want, applied = got, h.Applied()
			} else if !maps.Equal(want, got) || h.Applied() != applied {
				same = false
			}
		}
		if same {
			return want
		}
		if time.Now().After(deadline) {
			for _, id := range c.running() {
				if h, sm := c.handle(id, g); h != nil {
					c.t.Logf("node %d: applied %d, status %+v, counters %v", id, h.Applied(), h.Status(), sm.snapshot())
				}
			}
			c.t.Fatalf("group %s did not converge in 10 s", g)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// running lists the nodes whose engines run.
func (c *cluster) running() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.engines))
}

// handle is group g's handle and state machine on node id (nil if the
// node or the group is not running).
func (c *cluster) handle(id uint64, g GroupID) (*Group, *counters) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.engines[id] == nil {
		return nil, nil
	}
	return c.groups[id][g], c.sms[id][g]
}

// increment proposes "+name" to group g on node id.
func (c *cluster) increment(id uint64, g GroupID, name string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, _ := c.handle(id, g)
	if h == nil {
		return 0, fmt.Errorf("%w: node %d is down", ErrNotLeader, id)
	}
	v, err := h.Propose(ctx, []byte("+"+name))
	if err != nil {
		return 0, err
	}
	return v.(uint64), nil
}

// mustIncrement increments on the group's leader, retrying while the
// leadership moves.
func (c *cluster) mustIncrement(g GroupID, name string) uint64 {
	c.t.Helper()
	for range 50 {
		v, err := c.increment(c.leader(g), g, name)
		if err == nil {
			return v
		}
		if !errors.Is(err, ErrNotLeader) {
			c.t.Fatalf("increment %s: %v", name, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("increment %s: no leader took it", name)
	return 0
}

// quietPebble keeps Pebble's routine messages out of test output.
type quietPebble struct{}

func (quietPebble) Infof(string, ...any)      {}
func (quietPebble) Errorf(f string, v ...any) {}
func (quietPebble) Fatalf(f string, v ...any) { panic(fmt.Sprintf(f, v...)) }
