package node

import (
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/roostdb/roost/durable"
)

// gateCommitter holds the commits submitted to it until release, which
// hands them, in order, to the shard. Unlike heldCommitter it can hold and
// release again and again.
type gateCommitter struct {
	to   committer
	mu   sync.Mutex
	held []*commit
}

func (g *gateCommitter) submit(c *commit) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.held = append(g.held, c)
	return nil
}

func (g *gateCommitter) release() {
	g.mu.Lock()
	held := g.held
	g.held = nil
	g.mu.Unlock()
	for _, c := range held {
		if err := g.to.submit(c); err != nil {
			c.finish(err)
		}
	}
}

// storageModel is what an object's storage should hold: Cloudflare's
// semantics over a plain map.
type storageModel map[string]string

// list selects keys as Cloudflare's storage.list() does ("" is unset).
func (m storageModel) list(o durable.ListOptions) []string {
	var keys []string
	for k := range m {
		switch {
		case o.Start != "" && k < o.Start,
			o.StartAfter != "" && k <= o.StartAfter,
			o.End != "" && k >= o.End,
			!strings.HasPrefix(k, o.Prefix):
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if o.Reverse {
		slices.Reverse(keys)
	}
	if o.Limit > 0 && len(keys) > o.Limit {
		keys = keys[:o.Limit]
	}
	return keys
}

// TestStorageModel runs random operations on an object's storage and on a
// storageModel, committing (or holding commits in flight, failing one of
// them, or reopening the storage over the committed state) at random
// points, and compares every result. It is deterministic for a seed.
func TestStorageModel(t *testing.T) {
	n := storageTestNode(t)
	keys := []string{"a", "a/", "a/1", "a/2", "a\x00", "ab", "b", "b/1", "ba", "é", "z", "\xff", "\xff\xff"}
	bounds := append(slices.Clone(keys), "a/0", "a/15", "c", "e", "\xfe")
	for seed := int64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			obj := storageTestObject(t)
			gate := &gateCommitter{to: storageTestShard(n, obj)}
			st := openTestStorage(t, n, obj, gate)
			model := storageModel{}
			var log []string
			fail := func(format string, args ...any) {
				t.Helper()
				t.Fatalf("seed %d, after\n\t%s\n%s", seed, strings.Join(log, "\n\t"), fmt.Sprintf(format, args...))
			}
			key := func() string { return keys[rng.Intn(len(keys))] }
			value := func() string {
				if rng.Intn(8) == 0 {
					return ""
				}
				return fmt.Sprint(rng.Intn(1000))
			}
			someKeys := func() []string {
				ks := make([]string, 1+rng.Intn(5))
				for i := range ks {
					ks[i] = key()
				}
				return ks
			}
			bound := func() string {
				if rng.Intn(2) == 0 {
					return ""
				}
				return bounds[rng.Intn(len(bounds))]
			}
			// step runs one random read or write on rw and on m.
			step := func(rw durable.ReadWriter, m storageModel, where string) {
				switch rng.Intn(9) {
				case 0:
					k := key()
					log = append(log, fmt.Sprintf("%s Get(%q)", where, k))
					got, ok, err := rw.Get(k)
					want, wantOK := m[k]
					if err != nil || ok != wantOK || string(got) != want {
						fail("Get(%q) = %q, %v, %v; want %q, %v", k, got, ok, err, want, wantOK)
					}
				case 1:
					ks := someKeys()
					log = append(log, fmt.Sprintf("%s GetMany(%q)", where, ks))
					got, err := rw.GetMany(ks)
					want := map[string]string{}
					for _, k := range ks {
						if v, ok := m[k]; ok {
							want[k] = v
						}
					}
					if err != nil || showMap(bytesMap(got)) != showMap(want) {
						fail("GetMany(%q) = %s, %v; want %s", ks, showMap(bytesMap(got)), err, showMap(want))
					}
				case 2:
					k, v := key(), value()
					log = append(log, fmt.Sprintf("%s Put(%q, %q)", where, k, v))
					if err := rw.Put(k, []byte(v)); err != nil {
						fail("Put: %v", err)
					}
					m[k] = v
				case 3:
					entries := map[string][]byte{}
					for _, k := range someKeys() {
						entries[k] = []byte(value())
					}
					log = append(log, fmt.Sprintf("%s PutMany(%s)", where, showMap(bytesMap(entries))))
					if err := rw.PutMany(entries); err != nil {
						fail("PutMany: %v", err)
					}
					for k, v := range entries {
						m[k] = string(v)
					}
				case 4:
					k := key()
					log = append(log, fmt.Sprintf("%s Delete(%q)", where, k))
					got, err := rw.Delete(k)
					_, want := m[k]
					if err != nil || got != want {
						fail("Delete(%q) = %v, %v; want %v", k, got, err, want)
					}
					delete(m, k)
				case 5:
					ks := someKeys()
					log = append(log, fmt.Sprintf("%s DeleteMany(%q)", where, ks))
					got, err := rw.DeleteMany(ks)
					want := 0
					for _, k := range ks {
						if _, ok := m[k]; ok {
							want++
							delete(m, k)
						}
					}
					if err != nil || got != want {
						fail("DeleteMany(%q) = %d, %v; want %d", ks, got, err, want)
					}
				case 6:
					// A refused call records nothing.
					long := strings.Repeat("k", n.cfg.Limits.MaxKeyBytes+1)
					ks := append(someKeys(), long)
					entries := map[string][]byte{long: nil}
					for _, k := range ks[:len(ks)-1] {
						entries[k] = []byte(value())
					}
					log = append(log, fmt.Sprintf("%s refused calls with %q", where, ks[:len(ks)-1]))
					if err := rw.PutMany(entries); !errors.Is(err, durable.ErrKeyTooLarge) {
						fail("PutMany with a long key: %v", err)
					}
					if _, err := rw.DeleteMany(ks); !errors.Is(err, durable.ErrKeyTooLarge) {
						fail("DeleteMany with a long key: %v", err)
					}
					if _, err := rw.GetMany(ks); !errors.Is(err, durable.ErrKeyTooLarge) {
						fail("GetMany with a long key: %v", err)
					}
					if err := rw.Put(long, nil); !errors.Is(err, durable.ErrKeyTooLarge) {
						fail("Put with a long key: %v", err)
					}
					if _, err := rw.Delete(long); !errors.Is(err, durable.ErrKeyTooLarge) {
						fail("Delete with a long key: %v", err)
					}
					big := map[string][]byte{}
					for i := 0; i <= n.cfg.Limits.MaxBatchKeys; i++ {
						big[fmt.Sprint("many/", i)] = nil
					}
					if err := rw.PutMany(big); !errors.Is(err, durable.ErrTooManyKeys) {
						fail("PutMany of too many keys: %v", err)
					}
				default:
					o := durable.ListOptions{End: bound(), Prefix: bound(), Reverse: rng.Intn(2) == 0}
					if rng.Intn(2) == 0 {
						o.Limit = 1 + rng.Intn(4)
					}
					switch rng.Intn(3) {
					case 0:
						o.Start = bound()
					case 1:
						o.StartAfter = bound()
					}
					if rng.Intn(4) == 0 {
						o.Prefix = ""
					}
					log = append(log, fmt.Sprintf("%s List(%s)", where, showOpts(o)))
					got, err := rw.List(o)
					var want []durable.KV
					for _, k := range m.list(o) {
						want = append(want, durable.KV{Key: k, Value: []byte(m[k])})
					}
					if err != nil || showKVs(got) != showKVs(want) {
						fail("List(%s) = %s, %v;\n\twant %s", showOpts(o), showKVs(got), err, showKVs(want))
					}
				}
			}
			errBoom := errors.New("boom")
			// committed is what the store holds; flushed the model as of
			// each commit held in flight, oldest first.
			committed := storageModel{}
			var flushed []storageModel
			flush := func() {
				if st.pending != nil {
					flushed = append(flushed, maps.Clone(model))
				}
				st.flush()
			}
			commitAll := func() {
				t.Helper()
				flush()
				c := st.newest()
				gate.release()
				if c != nil {
					<-c.done
					if c.err != nil {
						fail("commit: %v", c.err)
					}
				}
				if !st.idle() {
					fail("storage not idle after its newest commit")
				}
				committed, flushed = maps.Clone(model), nil
			}
			// failCommit fails one of the commits in flight: those before it
			// commit, those after it must not, and the storage is broken.
			failCommit := func() {
				t.Helper()
				flush()
				gate.mu.Lock()
				held := gate.held
				gate.held = nil
				gate.mu.Unlock()
				if len(held) == 0 {
					return
				}
				i := rng.Intn(len(held))
				log = append(log, fmt.Sprintf("fail commit %d of %d in flight", i, len(held)))
				for _, c := range held[:i] {
					if err := gate.to.submit(c); err != nil {
						c.finish(err)
					}
				}
				if i > 0 {
					<-held[i-1].done
					if err := held[i-1].err; err != nil {
						fail("commit before the failed one: %v", err)
					}
					committed = flushed[i-1]
				}
				held[i].finish(errBoom)
				for _, c := range held[i+1:] {
					if err := gate.to.submit(c); err != nil {
						c.finish(err)
					}
				}
				for _, c := range held[i+1:] {
					<-c.done
					if c.err == nil {
						fail("a commit after the failed one committed")
					}
				}
				if _, _, err := st.Get("a"); !errors.Is(err, errBoom) {
					fail("Get after a failed commit: %v", err)
				}
				if err := st.Put("a", nil); !errors.Is(err, errBoom) {
					fail("Put after a failed commit: %v", err)
				}
				if _, err := st.List(durable.ListOptions{}); !errors.Is(err, errBoom) {
					fail("List after a failed commit: %v", err)
				}
				st = openTestStorage(t, n, obj, gate)
				model, flushed = maps.Clone(committed), nil
			}
			for i := 0; i < 400; i++ {
				switch r := rng.Intn(41); {
				case r < 28:
					step(st, model, "")
				case r < 30:
					log = append(log, "DeleteAll()")
					if err := st.DeleteAll(); err != nil {
						fail("DeleteAll: %v", err)
					}
					clear(model)
				case r < 34:
					tm := maps.Clone(model)
					end := rng.Intn(3) // commit, Rollback, error
					log = append(log, "Transaction {")
					err := st.Transaction(func(tx durable.Txn) error {
						for j := rng.Intn(6); j >= 0; j-- {
							step(tx, tm, "  tx")
						}
						switch end {
						case 1:
							tx.Rollback()
						case 2:
							return errBoom
						}
						return nil
					})
					log = append(log, fmt.Sprintf("} %d", end))
					switch end {
					case 0:
						if err != nil {
							fail("Transaction: %v", err)
						}
						model = tm
					case 1:
						if !errors.Is(err, durable.ErrTransactionRolledBack) {
							fail("Transaction rolled back: %v", err)
						}
					case 2:
						if !errors.Is(err, errBoom) {
							fail("Transaction failing: %v", err)
						}
					}
				case r < 37:
					log = append(log, "flush (held in flight)")
					flush()
				case r < 39:
					log = append(log, "commit")
					commitAll()
				case r < 40:
					log = append(log, "commit and reopen")
					commitAll()
					st = openTestStorage(t, n, obj, gate)
				default:
					failCommit()
				}
				if len(log) > 60 {
					log = log[len(log)-60:]
				}
			}
			commitAll()
		})
	}
}

func showOpts(o durable.ListOptions) string {
	return fmt.Sprintf("{Start:%q StartAfter:%q End:%q Prefix:%q Reverse:%v Limit:%d}", o.Start, o.StartAfter, o.End, o.Prefix, o.Reverse, o.Limit)
}
