package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/raftstore"
)

// applier is the part of *raft.Raft a shard proposes through; tests wrap it
// to inject commit failures.
type applier interface {
	Apply(cmd []byte, timeout time.Duration) raft.ApplyFuture
	VerifyLeader() raft.Future
}

var _ applier = groupApplier{}

// applyTimeout bounds how long a proposal may wait to enter Raft's queue.
const applyTimeout = 5 * time.Second

// shard is one Raft group as the instance manager sees it: the proposer that
// groups ready batches into entries, the batched leadership check for
// reads, and whether this node may serve the shard now.
type shard struct {
	id          raftstore.GroupID
	group       *raftstore.Group
	raft        applier
	maxInflight int
	metrics     *metrics

	mu       sync.Mutex
	queue    []*commit // submitted, not yet proposed
	inflight int       // entries proposed, outcome not yet known
	closed   bool
	wake     chan struct{}
	results  chan proposal

	readyMu sync.Mutex
	ready   chan struct{} // closed while leading && !fenced
	// fencedCh is closed while fenced, so that requests waiting for ready
	// learn at once that they should be routed elsewhere.
	fencedCh chan struct{}
	leading  bool // this node leads the shard and has applied its log
	fenced   bool // this node leads it but cannot reach a quorum of its voters (fence.go)
	// unfencing is set while a barrier that may lift the fence runs.
	unfencing atomic.Bool
	// stalledSince and stalledApplied, owned by the fence loop
	// (fence.go, nudgeStalled): since when this node, leading, has held
	// entries it has not committed while its applied index stayed
	// stalledApplied.
	stalledSince   time.Time
	stalledApplied uint64

	verifyMu   sync.Mutex
	nextVerify *verifyBatch
	verifying  bool

	// alarmWake nudges the shard's alarm scheduler, which otherwise sleeps
	// until the next alarm or retry it knows of: a committed write set an
	// alarm, this node just became able to serve the shard, or a delivery
	// ended.
	alarmWake chan struct{}

	// handingOff is set while this node hands the shard's leadership to
	// another replica: new requests are re-routed instead of starting turns
	// whose commits Raft would refuse during the transfer.
	handingOff atomic.Bool
	// losses counts the leadership losses followLeadership has acted on
	// (instances dropped), so that a hand-over can wait for its own.
	losses atomic.Uint64
	// turns counts the turns running on the shard's instances (enterTurn,
	// exitTurn), so a hand-over waits for the commits of turns that began
	// before it. A turn counts itself before it reads handingOff and
	// quiesce sets handingOff before it reads turns, so either the turn is
	// refused or quiesce waits for it.
	turns atomic.Int64
}

type proposal struct {
	future  raft.ApplyFuture
	commits []*commit
	// setsAlarm: a batch of the entry sets an alarm, which may be earlier
	// than the one the alarm scheduler sleeps until.
	setsAlarm bool
}

type verifyBatch struct {
	done chan struct{}
	err  error
}

func newShard(id raftstore.GroupID, g *raftstore.Group, maxInflight int, m *metrics) *shard {
	s := &shard{
		id: id, group: g, maxInflight: maxInflight, metrics: m,
		wake:      make(chan struct{}, 1),
		results:   make(chan proposal, maxInflight),
		ready:     make(chan struct{}),
		fencedCh:  make(chan struct{}),
		alarmWake: make(chan struct{}, 1),
	}
	if g != nil {
		s.raft = groupApplier{g.Raft(), g}
	}
	return s
}

// groupApplier proposes through the group's raft and checks leadership
// through the group, which sends the check's heartbeats without delay.
type groupApplier struct {
	*raft.Raft
	g *raftstore.Group
}

func (a groupApplier) VerifyLeader() raft.Future { return a.g.VerifyLeader() }

// run proposes and collects until ctx ends; it owns two goroutines.
func (s *shard) run(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(2)
	go func() { defer wg.Done(); s.propose(ctx) }()
	go func() { defer wg.Done(); s.collect() }()
}

// submit queues c for the next entry of this shard. It returns an error,
// without finishing c, if the shard takes no more commits: the caller
// holds its storage lock and finishes c after releasing it.
func (s *shard) submit(c *commit) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("%w: shard %s is shutting down", durable.ErrCommitFailed, s.id)
	}
	s.queue = append(s.queue, c)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// propose turns everything queued into one Raft entry whenever fewer than
// maxInflight entries are outstanding: under load, batches pile up while
// entries are in flight and the next entry carries them all.
func (s *shard) propose(ctx context.Context) {
	defer close(s.results)
	var buf []byte
	for {
		select {
		case <-s.wake:
		case <-ctx.Done():
			s.mu.Lock()
			s.closed = true
			queued := s.queue
			s.queue = nil
			s.mu.Unlock()
			for _, c := range queued {
				c.finish(fmt.Errorf("%w: shard %s is shutting down", durable.ErrCommitFailed, s.id))
			}
			return
		}
		for {
			s.mu.Lock()
			if len(s.queue) == 0 || s.inflight >= s.maxInflight {
				s.mu.Unlock()
				break
			}
			commits := s.takeEntry()
			s.inflight++
			s.mu.Unlock()

			entry := raftstore.Entry{Batches: make([]raftstore.ObjectBatch, len(commits))}
			setsAlarm := false
			for i, c := range commits {
				entry.Batches[i] = c.batch
				setsAlarm = setsAlarm || batchSetsAlarm(c.batch)
			}
			var err error
			buf, err = entry.AppendBinary(buf[:0])
			if err != nil {
				s.finishAll(commits, fmt.Errorf("%w: encoding entry: %v", durable.ErrCommitFailed, err))
				s.doneInflight()
				continue
			}
			// Raft keeps the slice until the entry is stored: hand it a copy.
			data := append([]byte(nil), buf...)
			if cap(buf) > 1<<20 {
				buf = nil // an entry of large writes: do not keep its size for every later one
			}
			s.metrics.entries.Inc()
			s.metrics.batchesPerEntry.Observe(float64(len(commits)))
			s.results <- proposal{future: s.raft.Apply(data, applyTimeout), commits: commits, setsAlarm: setsAlarm}
		}
	}
}

// takeEntry takes from the queue the commits of the next entry: as many,
// oldest first, as fit in raftstore.MaxEntryBytes (at least one; a commit's
// batch fits alone, see writeSet.fits). Callers hold s.mu.
func (s *shard) takeEntry() []*commit {
	if len(s.queue) == 1 {
		commits := s.queue
		s.queue = nil
		return commits
	}
	n, size := 0, 0
	for ; n < len(s.queue); n++ {
		b := s.queue[n].batch.EncodedLen()
		if n > 0 && raftstore.EntryLen(n+1, size+b) > raftstore.MaxEntryBytes {
			break
		}
		size += b
	}
	commits := s.queue[:n:n]
	if n == len(s.queue) {
		s.queue = nil
	} else {
		s.queue = slices.Clone(s.queue[n:])
	}
	return commits
}

// collect waits for each entry's outcome, in order, and finishes its commits.
func (s *shard) collect() {
	for p := range s.results {
		err := p.future.Error()
		if err != nil {
			s.finishAll(p.commits, commitError(s.id, err))
		} else {
			switch resp := p.future.Response().(type) {
			case raftstore.ApplyResult:
				rejected := make(map[int]bool, len(resp.Rejected))
				for _, i := range resp.Rejected {
					rejected[i] = true
				}
				for i, c := range p.commits {
					if rejected[i] {
						s.metrics.commitFailures.Inc()
						c.finish(fmt.Errorf("%w: an earlier write of this object failed, so this one was discarded", durable.ErrCommitFailed))
					} else {
						c.finish(nil)
					}
				}
			case error:
				if errors.Is(resp, raftstore.ErrFSMFailed) {
					// Raft committed the entry; only this replica's state
					// machine failed to write it. Every healthy replica
					// applies it, and this one does after a restart: it
					// is not a commit that left nothing in storage.
					s.finishAll(p.commits, fmt.Errorf("%w: shard %s: committed, but not applied here: %v", durable.ErrCommitIndeterminate, s.id, resp))
				} else {
					// An entry no replica can decode: committed, and a no-op everywhere.
					s.finishAll(p.commits, fmt.Errorf("%w: %v", durable.ErrCommitFailed, resp))
				}
			default:
				s.finishAll(p.commits, fmt.Errorf("%w: unexpected apply response %T", durable.ErrCommitFailed, resp))
			}
		}
		// Woken after the outcome, so the scheduler reads the applied alarm.
		// A failed entry wakes it too: "indeterminate" may have committed,
		// and a needless wake costs one scan.
		if p.setsAlarm {
			s.wakeAlarms()
		}
		s.doneInflight()
	}
}

// batchSetsAlarm reports whether b sets an alarm. Deleting one needs no
// wake-up: the scheduler then wakes for an alarm that is gone and finds
// nothing due.
func batchSetsAlarm(b raftstore.ObjectBatch) bool {
	for _, op := range b.Ops {
		if op.Kind == raftstore.OpSetAlarm {
			return true
		}
	}
	return false
}

// wakeAlarms makes the shard's alarm scheduler look at the shard's alarms
// now. A wake-up while it is already awake is kept for its next sleep, so
// none is lost.
func (s *shard) wakeAlarms() {
	select {
	case s.alarmWake <- struct{}{}:
	default:
	}
}

func (s *shard) finishAll(commits []*commit, err error) {
	s.metrics.commitFailures.Add(float64(len(commits)))
	for _, c := range commits {
		c.finish(err)
	}
}

func (s *shard) doneInflight() {
	s.mu.Lock()
	s.inflight--
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// quiesce stops new turns on the shard and waits, at most max, until the
// turns already running have ended and their commits have their outcome;
// call it before a leadership transfer, and resume after.
func (s *shard) quiesce(max time.Duration) {
	s.handingOff.Store(true)
	deadline := time.Now().Add(max)
	for !s.idle() && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
}

// idle says no turn runs on the shard and no commit awaits its outcome.
// It reads turns first: a turn queues its commit before it stops counting.
func (s *shard) idle() bool {
	if s.turns.Load() > 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue) == 0 && s.inflight == 0
}

// enterTurn counts a turn starting on the shard. A movable turn is
// refused, uncounted, once a hand-over has begun (see turns).
func (s *shard) enterTurn(movable bool) error {
	s.turns.Add(1)
	if movable && s.handingOff.Load() {
		s.turns.Add(-1)
		return s.handOffRefusal()
	}
	return nil
}

// exitTurn counts a turn's end, once its commit (if any) is queued.
func (s *shard) exitTurn() { s.turns.Add(-1) }

// handOffRefusal is the routing error of a request refused because the
// shard's leadership is moving: it did not run, so it may be retried.
func (s *shard) handOffRefusal() error {
	return &routingError{notReady: true, msg: fmt.Sprintf("shard %d: leadership is moving to another node", shardNumber(s.id))}
}

// resume lets requests start turns on the shard again.
func (s *shard) resume() { s.handingOff.Store(false) }

// awaitLoss waits, at most max, until followLeadership has acted on a
// leadership loss after the first `before` (losses' value before a
// hand-over) and dropped the shard's instances.
func (s *shard) awaitLoss(before uint64, max time.Duration) {
	deadline := time.Now().Add(max)
	for s.losses.Load() == before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

// commitError says whether a failed proposal may still have committed.
// Only errors raised before the entry reached the log are definite.
func commitError(id raftstore.GroupID, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout),
		errors.Is(err, raft.ErrLeadershipTransferInProgress): // all refused before the log
		return fmt.Errorf("%w: shard %d: %v", durable.ErrCommitFailed, shardNumber(id), err)
	default:
		return fmt.Errorf("%w: shard %d: %v", durable.ErrCommitIndeterminate, shardNumber(id), err)
	}
}

// verifyLeader confirms this node still leads the shard. Concurrent callers
// share one check: a caller arriving while a check runs joins the next one,
// which starts after the caller arrived, so the check is fresh for everyone.
func (s *shard) verifyLeader(ctx context.Context) error {
	s.verifyMu.Lock()
	if s.nextVerify == nil {
		s.nextVerify = &verifyBatch{done: make(chan struct{})}
	}
	b := s.nextVerify
	if !s.verifying {
		s.verifying = true
		go s.runVerify()
	}
	s.verifyMu.Unlock()
	select {
	case <-b.done:
		return b.err
	case <-s.fenceSignal():
		// A fenced leader's check waits for raft's lease to run out.
		select {
		case <-b.done:
			return b.err
		default:
			return s.fencedError()
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runVerify runs checks while callers wait; it returns when none do.
func (s *shard) runVerify() {
	for {
		s.verifyMu.Lock()
		b := s.nextVerify
		s.nextVerify = nil
		if b == nil {
			s.verifying = false
			s.verifyMu.Unlock()
			return
		}
		s.verifyMu.Unlock()
		if err := s.raft.VerifyLeader().Error(); err != nil {
			b.err = fmt.Errorf("%w: shard %s: leadership check: %v", errNotReady, s.id, err)
		}
		close(b.done)
	}
}

// errNotReady: this node cannot serve the shard now (no leadership yet, or lost).
var errNotReady = errors.New("shard not ready")

// watchLeadership marks the shard ready when this node becomes leader and
// has applied everything committed before (a Barrier), and not ready when it
// loses leadership; onLost runs then.
func (s *shard) watchLeadership(ctx context.Context, wg *sync.WaitGroup, onLost func()) {
	r := s.group.Raft()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.followLeadership(ctx, r.LeaderCh(), r.CurrentTerm, func() error { return r.Barrier(0).Error() }, onLost)
	}()
}

// followLeadership is watchLeadership's loop, on raft's leadership
// notifications, its current term and a barrier.
func (s *shard) followLeadership(ctx context.Context, leaderCh <-chan bool, term func() uint64, barrier func() error, onLost func()) {
	var ledIn uint64 // the term this node became ready to lead in; 0: not leading
	for {
		select {
		case <-ctx.Done():
			return
		case isLeader := <-leaderCh:
			if !isLeader {
				ledIn = 0
				s.setLeading(false)
				onLost()
				s.losses.Add(1)
				continue
			}
			if ledIn != 0 && term() != ledIn {
				// raft keeps only the newest notification: a loss and a
				// new win between two reads arrive as one "true". The
				// instances of the old term go as on a loss: another node
				// may have led, and written, in between.
				ledIn = 0
				s.setLeading(false)
				onLost()
				s.losses.Add(1)
			}
			// Reads come from the FSM: make sure it holds every entry
			// committed under earlier terms before serving any.
			t := term()
			if err := barrier(); err != nil {
				continue
			}
			ledIn = t
			s.setLeading(true)
		}
	}
}

// setLeading records whether this node leads the shard with its log applied.
func (s *shard) setLeading(leading bool) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	s.leading = leading
	s.updateReadyLocked()
}

// liftFenceUnlessLeading lifts the fence of a shard this node no longer
// leads once followLeadership has taken the loss (checkFence).
func (s *shard) liftFenceUnlessLeading() {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	if !s.leading {
		s.setFencedLocked(false)
	}
}

// setFenced records whether this node, as the shard's leader, is cut off
// from a quorum of its voters (fence.go). It reports whether the shard
// stopped being ready, in which case the caller drops its instances.
func (s *shard) setFenced(fenced bool) (stopped bool) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	return s.setFencedLocked(fenced)
}

// setFencedLocked is setFenced with readyMu held.
func (s *shard) setFencedLocked(fenced bool) (stopped bool) {
	was := s.isReadyLocked()
	if fenced != s.fenced {
		if fenced {
			close(s.fencedCh)
		} else {
			s.fencedCh = make(chan struct{})
		}
	}
	s.fenced = fenced
	s.updateReadyLocked()
	return was && !s.isReadyLocked()
}

// fenceSignal is closed while the shard is fenced: from the moment it is,
// if it is not yet.
func (s *shard) fenceSignal() <-chan struct{} {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	return s.fencedCh
}

// fencedError says why a fenced shard stopped serving (errNotReady).
func (s *shard) fencedError() error {
	return fmt.Errorf("%w: %s", errNotReady, s.fencedReason())
}

// fencedReason is fencedError's text without errNotReady's.
func (s *shard) fencedReason() string {
	return fmt.Sprintf("this node leads shard %s but cannot reach a quorum of its replicas", s.id)
}

func (s *shard) isFenced() bool {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	return s.fenced
}

// updateReadyLocked makes ready match leading && !fenced.
func (s *shard) updateReadyLocked() {
	want := s.leading && !s.fenced
	if s.isReadyLocked() == want {
		return
	}
	if !want {
		s.ready = make(chan struct{})
		return
	}
	close(s.ready)
	// A new leader fires what came due while another node led.
	s.wakeAlarms()
}

func (s *shard) isReadyLocked() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

func (s *shard) isReady() bool {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	return s.isReadyLocked()
}

// errShardFenced: the shard was fenced while a request waited for it.
var errShardFenced = errors.New("shard fenced")

// waitReady waits (bounded by ctx) until this node can serve the shard,
// or returns errShardFenced once it is fenced: a fence lasts until the
// node reaches a quorum again, and another replica may lead meanwhile.
func (s *shard) waitReady(ctx context.Context) error {
	s.readyMu.Lock()
	ready, fenced := s.ready, s.fencedCh
	s.readyMu.Unlock()
	select {
	case <-ready:
		return nil
	case <-fenced:
		return errShardFenced
	case <-ctx.Done():
		return fmt.Errorf("%w: shard %s has no leader on this node yet: %v", errNotReady, s.id, ctx.Err())
	}
}
