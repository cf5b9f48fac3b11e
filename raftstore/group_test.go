package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/roostdb/roost/durable"
)

func newTransport(t testing.TB, id string) raft.Transport {
	t.Helper()
	_, tr := raft.NewInmemTransport(raft.ServerAddress(id))
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func waitLeader(t testing.TB, r *raft.Raft) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.State() != raft.Leader {
		if time.Now().After(deadline) {
			t.Fatalf("no leadership after 10s (state %v)", r.State())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startSingle(t testing.TB, s *Store, id GroupID, tr raft.Transport, extra func(*GroupConfig)) *Group {
	t.Helper()
	cfg := GroupConfig{
		ID:        id,
		LocalID:   "n1",
		Transport: tr,
		Bootstrap: []raft.Server{{Suffrage: raft.Voter, ID: "n1", Address: tr.LocalAddr()}},
	}
	if extra != nil {
		extra(&cfg)
	}
	g, err := s.StartGroup(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, g.Raft())
	return g
}

// proposeAll has each of n goroutines own one object and commit versions
// from..to of it, one entry each, concurrently.
func proposeAll(t *testing.T, r *raft.Raft, n int, from, to uint64) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for v := from; v <= to; v++ {
				e := Entry{Batches: []ObjectBatch{batch(oid(w), v, put("n", fmt.Sprint(v)), put(fmt.Sprintf("k%03d", v), "x"))}}
				data, err := e.AppendBinary(nil)
				if err != nil {
					errs <- err
					return
				}
				f := r.Apply(data, 10*time.Second)
				if err := f.Error(); err != nil {
					errs <- fmt.Errorf("worker %d version %d: %w", w, v, err)
					return
				}
				if res, ok := f.Response().(ApplyResult); !ok || len(res.Rejected) != 0 {
					errs <- fmt.Errorf("worker %d version %d: response %v", w, v, f.Response())
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func checkObjects(t *testing.T, s *Store, g GroupID, n int, version uint64) {
	t.Helper()
	for w := 0; w < n; w++ {
		st := readObject(t, s, g, oid(w))
		if st.Version != version || st.Keys["n"] != fmt.Sprint(version) || len(st.Keys) != int(version)+1 {
			t.Fatalf("object %d: version %d, n=%q, %d keys; want version %d", w, st.Version, st.Keys["n"], len(st.Keys), version)
		}
	}
}

func TestGroupSingleVoterRestart(t *testing.T) {
	const workers, perWorker = 64, 8
	dir := t.TempDir()
	s := openAt(t, dir)
	tr := newTransport(t, "n1")
	g := startSingle(t, s, 9, tr, nil)
	if g.ID() != 9 {
		t.Fatalf("ID = %v", g.ID())
	}
	if _, err := s.StartGroup(GroupConfig{ID: 9, LocalID: "n1", Transport: tr}); !errors.Is(err, ErrGroupRunning) {
		t.Fatalf("second StartGroup = %v, want ErrGroupRunning", err)
	}
	// Committed-state reads run alongside the applies; an object's version
	// must never go backwards, and its "n" key must never be ahead of it.
	stop := make(chan struct{})
	readerDone := make(chan error, 1)
	go func() { readerDone <- readWhileApplying(s, 9, workers, stop) }()
	proposeAll(t, g.Raft(), workers, 1, perWorker)
	close(stop)
	if err := <-readerDone; err != nil {
		t.Fatal(err)
	}
	checkObjects(t, s, 9, workers, perWorker)
	// A snapshot through raft's own machinery (FileSnapshotStore + Persist),
	// so the restart below starts from snapshot metadata.
	if err := g.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	proposeAll(t, g.Raft(), workers, perWorker+1, perWorker+2)
	applied, err := s.AppliedIndex(9)
	if err != nil || applied < workers*(perWorker+2) {
		t.Fatalf("AppliedIndex = %d, %v", applied, err)
	}
	if err := g.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := g.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openAt(t, dir)
	checkObjects(t, s2, 9, workers, perWorker+2)
	// Bootstrap is passed again and must be ignored: the group has state.
	tr2 := newTransport(t, "n1")
	g2 := startSingle(t, s2, 9, tr2, nil)
	if err := g2.Raft().Barrier(10 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	checkObjects(t, s2, 9, workers, perWorker+2)
	proposeAll(t, g2.Raft(), workers, perWorker+3, perWorker+3)
	checkObjects(t, s2, 9, workers, perWorker+3)
	// Close shuts down a group that is still running.
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if g2.Raft().State() != raft.Shutdown {
		t.Fatalf("group state after Store.Close = %v", g2.Raft().State())
	}
}

// counterFSM is an in-memory FSM like the meta group's: it has nothing on
// disk, so it needs raft to restore its snapshot on start.
type counterFSM struct {
	mu  sync.Mutex
	sum uint64
}

func (c *counterFSM) Apply(l *raft.Log) any {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sum += binary.BigEndian.Uint64(l.Data)
	return c.sum
}

func (c *counterFSM) Snapshot() (raft.FSMSnapshot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return counterSnap(c.sum), nil
}

func (c *counterFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var b [8]byte
	if _, err := io.ReadFull(rc, b[:]); err != nil {
		return err
	}
	c.mu.Lock()
	c.sum = binary.BigEndian.Uint64(b[:])
	c.mu.Unlock()
	return nil
}

type counterSnap uint64

func (c counterSnap) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(binary.BigEndian.AppendUint64(nil, uint64(c))); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}
func (counterSnap) Release() {}

func fast(c *raft.Config) {
	c.HeartbeatTimeout = 50 * time.Millisecond
	c.ElectionTimeout = 50 * time.Millisecond
	c.LeaderLeaseTimeout = 50 * time.Millisecond
}

func TestGroupPlainFSMRestoresSnapshotOnStart(t *testing.T) {
	dir := t.TempDir()
	s := openAt(t, dir)
	fsm := &counterFSM{}
	g := startSingle(t, s, 1, newTransport(t, "n1"), func(c *GroupConfig) { c.FSM = fsm; c.Tune = fast })
	apply := func(r *raft.Raft, n uint64) {
		t.Helper()
		if err := r.Apply(binary.BigEndian.AppendUint64(nil, n), 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	for i := uint64(1); i <= 10; i++ {
		apply(g.Raft(), i)
	}
	if err := g.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	apply(g.Raft(), 100)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openAt(t, dir)
	fsm2 := &counterFSM{}
	g2 := startSingle(t, s2, 1, newTransport(t, "n1"), func(c *GroupConfig) { c.FSM = fsm2; c.Tune = fast })
	if err := g2.Raft().Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	fsm2.mu.Lock()
	sum := fsm2.sum
	fsm2.mu.Unlock()
	// Without the snapshot restore, only the entries after it (100) would be replayed.
	if sum != 155 {
		t.Fatalf("in-memory FSM after restart = %d, want 155", sum)
	}
}

func TestStartGroupValidates(t *testing.T) {
	s := openTest(t)
	if _, err := s.StartGroup(GroupConfig{ID: 1, Transport: newTransport(t, "x")}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("no LocalID: %v", err)
	}
	if _, err := s.StartGroup(GroupConfig{ID: 1, LocalID: "x"}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("no Transport: %v", err)
	}
}

func TestDefaultRaftConfig(t *testing.T) {
	c := DefaultRaftConfig("n1")
	if err := raft.ValidateConfig(c); err != nil {
		t.Fatal(err)
	}
	if !c.NoSnapshotRestoreOnStart || !c.BatchApplyCh || c.MaxAppendEntries != 204 ||
		c.HeartbeatTimeout != 500*time.Millisecond || c.ElectionTimeout != 500*time.Millisecond ||
		c.LeaderLeaseTimeout != 250*time.Millisecond || c.CommitTimeout != time.Second ||
		c.LocalID != "n1" || c.Logger == nil || c.Logger.IsInfo() {
		t.Fatalf("unexpected defaults: %+v", c)
	}
}

// BenchmarkGroupApply: 64 proposers on one single-voter group, each
// committing its own object's versions; reports applies/s.
func BenchmarkGroupApply(b *testing.B) {
	s := openAt(b, b.TempDir())
	g := startSingle(b, s, 1, newTransport(b, "n1"), nil)
	r := g.Raft()
	var next atomic.Int64
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((64 + procs - 1) / procs)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		obj := oid(int(next.Add(1)))
		var data []byte
		for v := uint64(1); pb.Next(); v++ {
			e := Entry{Batches: []ObjectBatch{batch(obj, v, put("counter", fmt.Sprint(v)))}}
			var err error
			if data, err = e.AppendBinary(data[:0]); err != nil {
				b.Error(err)
				return
			}
			// raft keeps the slice until the entry is applied.
			f := r.Apply(append([]byte(nil), data...), 10*time.Second)
			if err := f.Error(); err != nil {
				b.Error(err)
				return
			}
			if res, ok := f.Response().(ApplyResult); !ok || len(res.Rejected) != 0 {
				b.Errorf("response %v", f.Response())
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "applies/s")
}

// A restore that was cut short leaves the group's state half-loaded; the
// next start must rebuild it from the group's snapshot store and log.
func TestGroupRecoversFromInterruptedRestore(t *testing.T) {
	const workers = 4
	dir := t.TempDir()
	s := openAt(t, dir)
	g := startSingle(t, s, 3, newTransport(t, "n1"), func(c *GroupConfig) { c.Tune = fast })
	proposeAll(t, g.Raft(), workers, 1, 5)
	if err := g.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	proposeAll(t, g.Raft(), workers, 6, 7)
	if err := g.Shutdown(); err != nil {
		t.Fatal(err)
	}
	// A stream that ends early: Restore wipes the group, loads nothing and
	// leaves its marker, as a crash in the middle of a restore would.
	cut := append([]byte(nil), snapshotMagic[:]...)
	cut = append(cut, 3, 'a', 'b', 'c')
	if err := s.NewShardFSM(3).Restore(io.NopCloser(bytes.NewReader(cut))); !errors.Is(err, ErrCorruptSnapshot) {
		t.Fatalf("Restore(cut) = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, g2 := reopenSingle(t, dir, 3)
	checkObjects(t, s2, 3, workers, 7)
	proposeAll(t, g2.Raft(), workers, 8, 8)
	checkObjects(t, s2, 3, workers, 8)
}

func readWhileApplying(s *Store, g GroupID, workers int, stop <-chan struct{}) error {
	seen := make([]uint64, workers)
	for reads := 0; ; reads++ {
		select {
		case <-stop:
			if reads == 0 {
				return errors.New("reader never ran")
			}
			return nil
		default:
		}
		w := reads % workers
		v, err := s.ObjectVersion(g, oid(w))
		if err != nil {
			return err
		}
		if v < seen[w] {
			return fmt.Errorf("object %d version went back from %d to %d", w, seen[w], v)
		}
		seen[w] = v
		n, ok, err := s.Get(g, oid(w), "n")
		if err != nil {
			return err
		}
		// n is written in the same batch as the version, and read after it,
		// so it can only be equal or ahead.
		if v > 0 {
			got, err := strconv.ParseUint(string(n), 10, 64)
			if !ok || err != nil || got < v {
				return fmt.Errorf("object %d: n=%q (%v) behind version %d", w, n, ok, v)
			}
		}
		if _, err := s.List(g, oid(w), durable.ListOptions{Prefix: "k", Reverse: true, Limit: 3}); err != nil {
			return err
		}
		if _, err := s.DueAlarms(g, 1<<62, 10); err != nil {
			return err
		}
		if _, err := s.AppliedIndex(g); err != nil {
			return err
		}
	}
}
