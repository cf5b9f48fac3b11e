package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/roostdb/roost/durable"
)

// errInstanceReset: the instance was retired. Before a turn began (it
// waited at the gate) the turn never ran, and the manager retries it on a
// new instance or at the new leader; a turn that ran when its instance was
// retired is reported as of unknown outcome instead (instance.fetch).
var errInstanceReset = errors.New("instance was reset")

// instance is the one live instance of an object on this node. Its gate is
// the input gate: a turn holds it from start to end, except while awaiting
// an outgoing Stub.Fetch.
type instance struct {
	m     *manager
	key   [32]byte
	id    durable.ID
	class string
	ctor  durable.Class
	shard *shard

	gate    chan struct{} // a token in the channel means a turn holds the gate
	waiting atomic.Int32  // requests waiting for the gate

	ctx    context.Context // ends when the instance is retired (its cause the reason) or evicted
	cancel context.CancelCauseFunc

	storage *objectStorage

	// Set up by the first turn, then only used under the gate.
	obj   durable.Object
	state *durable.State
	env   *durable.Env

	blockDepth atomic.Int32 // BlockConcurrencyWhile nesting: keeps the gate shut across awaits
	// blockFailed holds the exception of a BlockConcurrencyWhile whose fn
	// failed in the running turn, until runTurn makes it the turn's.
	blockFailed atomic.Pointer[error]
	background  sync.WaitGroup
	bgCount     atomic.Int32

	retired   atomic.Bool
	retiredCh chan struct{} // closed when retired is set
	drained   chan struct{} // closed when a retired instance has no commit in flight

	// WebSockets (websocket.go). Lock order: the gate, then outMu or wsMu;
	// outMu and wsMu are never held together.
	wsMu    sync.Mutex
	sockets []*socket // open, in the order accepted
	// autoResponse is what the sockets' readers answer by themselves
	// (State.SetWebSocketAutoResponse); it outlives hibernation.
	autoResponse atomic.Pointer[durable.WebSocketAutoResponse]

	outMu sync.Mutex
	// turns counts the turns begun and not ended: more than one while a
	// turn awaits a Stub.Fetch with the gate open. Sends go to outbox
	// while any runs; the first to end takes them (its commit follows
	// every write made before them).
	turns        int
	outbox       []pendingSend // what the running turns sent
	releases     []sendBatch   // turns' sends waiting for their output gate, in order
	releaseWake  chan struct{}
	releaserOnce sync.Once

	// Owned by manager.mu.
	refs int

	// lastUsed is when the instance last served (unix nanoseconds): set
	// by release and, without manager.mu, by socket events (touch).
	lastUsed atomic.Int64
}

var (
	_ durable.StateRuntime           = (*instance)(nil)
	_ durable.WebSocketAutoResponder = (*instance)(nil)
)

func newInstance(m *manager, key [32]byte, id durable.ID, class string, ctor durable.Class, sh *shard) *instance {
	// The context ends with the node (m.cancelInstances), though it is not
	// m.ctx's child; one made after that, under m.mu, is ended at once.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(m.ctx))
	if m.ctx.Err() != nil {
		cancel(context.Cause(m.ctx))
	}
	in := &instance{
		m: m, key: key, id: id, class: class, ctor: ctor, shard: sh,
		gate: make(chan struct{}, 1), ctx: ctx, cancel: cancel, retiredCh: make(chan struct{}), drained: make(chan struct{}),
		releaseWake: make(chan struct{}, 1),
		storage:     newObjectStorage(sh.id, key, m.reader, sh, m.cfg.Limits),
	}
	in.storage.onBroken = in.retire
	in.storage.syncFlush = in.syncFlush
	return in
}

// backgroundKey marks the context WaitUntil work is given.
type backgroundKey struct{}

// flushBetweenTurns commits what is pending once no turn runs: a flush in
// the middle of a turn would commit the writes it made so far as a batch
// of their own. WaitUntil work (at its end and in Sync) and shutdown flush
// so; a turn, which holds the gate, flushes at once.
func (in *instance) flushBetweenTurns(ctx context.Context) (*commit, error) {
	if err := in.lock(ctx); err != nil {
		return nil, err
	}
	defer in.unlock()
	return in.storage.flush(), nil
}

// syncFlush is Storage.Sync's flush: between turns when called with the
// context WaitUntil work was given, at once from a turn.
func (in *instance) syncFlush(ctx context.Context) (*commit, error) {
	if ctx.Value(backgroundKey{}) == in {
		return in.flushBetweenTurns(ctx)
	}
	return in.storage.flush(), nil
}

// turnKey marks a request context as belonging to a turn of an instance,
// so an outgoing fetch made with it can open that instance's gate.
type turnKey struct{}

// turnMark is one turn's record of the outgoing fetches its code makes
// with its context (instanceDispatcher.Fetch). The turn holds the gate
// except while fetches of it are in flight: the first to start flushes
// the turn's writes and opens the gate, and a fetch that answers returns
// only once every fetch of the turn in flight has answered and the turn
// holds the gate again. So the turn's code never runs beside another
// turn's after an await, however many goroutines it fetches from (a
// fan-out, KV's List over several objects), and a call back into this
// object from any of those fetches finds the gate open (A→B→A). Code the
// turn runs in other goroutines while its fetches are in flight runs
// beside other turns: the gate cannot see it. Once the turn has ended its
// context has ended too (markTurn) and opens nothing: a fetch a goroutine
// left behind makes with it touches no gate and carries the ended context.
type turnMark struct {
	inst *instance
	// stopCtx ends the context markTurn gave the turn's code.
	stopCtx func()

	mu       sync.Mutex
	inFlight int  // fetches begun and not answered
	open     bool // the turn let the gate go for them
	ended    bool
	// resumed is closed when the turn holds the gate again after it was
	// opened (or the turn ended), waking the fetches that answered while
	// others were still in flight.
	resumed chan struct{}
}

// markTurn returns the context for a turn's code, marked as a turn of in,
// and the mark, whose end the turn calls once its code has returned and
// before endTurn. The context ends with ctx, when the code has returned (as
// net/http's request context does: work it left running without WaitUntil
// is cancelled), and when the instance is retired, with the reason as its
// cause: a handler still running then — a long request or alarm on a node
// that lost the shard's leadership — learns that its writes can no longer
// commit and that the object may be running on another node already.
func (in *instance) markTurn(ctx context.Context) (context.Context, *turnMark) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(in.ctx, func() { cancel(context.Cause(in.ctx)) })
	t := &turnMark{inst: in, stopCtx: func() { stop(); cancel(nil) }}
	return context.WithValue(ctx, turnKey{}, t), t
}

// lockSettled takes t.mu once no fetch of the turn is taking the gate back
// (open with none in flight: the last to answer is retaking it), so that
// the gate is either the turn's or let go for fetches still in flight.
func (t *turnMark) lockSettled() {
	t.mu.Lock()
	for t.open && t.inFlight == 0 && !t.ended {
		r := t.resumed
		t.mu.Unlock()
		<-r
		t.mu.Lock()
	}
}

// beginAwait opens the gate for a fetch unless it is open already, and
// reports false if the turn has ended, or holds the gate and keepShut says
// it must stay shut (a transaction or BlockConcurrencyWhile of the
// turn's): the fetch then touches no gate. While the turn has let the gate
// go, a transaction open is another turn's, and does not count.
func (t *turnMark) beginAwait(keepShut func() bool) bool {
	t.lockSettled()
	defer t.mu.Unlock()
	if t.ended || !t.open && keepShut() {
		return false
	}
	t.inFlight++
	if !t.open {
		// Writes made so far are committed as their own batch: they
		// happened before the await, as in Workers.
		t.inst.storage.flush()
		t.open = true
		t.resumed = make(chan struct{})
		t.inst.unlock()
	}
	return true
}

// endAwait returns once the turn holds the gate again: the last fetch of
// the turn in flight to answer takes it back, and the others wait for it.
func (t *turnMark) endAwait() {
	t.mu.Lock()
	t.inFlight--
	if t.ended || !t.open {
		t.mu.Unlock()
		return
	}
	resumed, last := t.resumed, t.inFlight == 0
	t.mu.Unlock()
	if !last {
		<-resumed
		return
	}
	_ = t.inst.lock(context.Background()) // cannot fail: no deadline
	t.mu.Lock()
	t.open = false
	close(resumed)
	t.mu.Unlock()
}

// end marks the turn over, taking the gate back if a fetch the turn did
// not wait for still holds it open: endTurn releases the gate.
func (t *turnMark) end() {
	defer t.stopCtx()
	t.lockSettled()
	t.ended = true
	retake := t.open
	if retake {
		t.open = false
		close(t.resumed) // the waiting fetches return, now outside any turn
	}
	t.mu.Unlock()
	if retake {
		_ = t.inst.lock(context.Background())
	}
}

func (in *instance) lock(ctx context.Context) error {
	select {
	case in.gate <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (in *instance) unlock() { <-in.gate }

// beginTurn takes the gate for a turn and opens its outbox; it fails with
// errInstanceReset if the instance was retired meanwhile. The turn counts
// on its shard until endTurn, so a leadership hand-over waits for it
// (shard.quiesce). A movable turn — a request or an alarm, which their
// callers retry at the next leader — is refused before it runs if a
// hand-over has begun: its commit would be refused. It returns the newest
// commit submitted before the turn, for endTurn.
func (in *instance) beginTurn(ctx context.Context, movable bool) (prior *commit, err error) {
	for retired := in.retiredCh; ; {
		select {
		case in.gate <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-retired:
			if !in.shard.isReady() {
				// Retired because this node no longer serves the
				// shard: the turn never ran, and its retry at the new
				// leader need not wait for the turn ahead to end.
				return nil, errInstanceReset
			}
			// A reset of the object alone (an exception, a failed
			// commit): its successor starts after the turn ahead ends,
			// so the two never run side by side here.
			retired = nil
			continue
		}
		break
	}
	if in.retired.Load() {
		in.unlock()
		return nil, errInstanceReset
	}
	if err := in.shard.enterTurn(movable); err != nil {
		in.unlock()
		return nil, err
	}
	in.openOutbox()
	return in.storage.newest(), nil
}

// fetch runs req as one turn and returns its response once the output gate
// lets it go.
func (in *instance) fetch(ctx context.Context, req *http.Request) (*http.Response, error) {
	// The caller has read the body's start already (readAhead).
	if n := in.waiting.Add(1); int(n) > in.m.cfg.MaxQueuedPerObject {
		in.waiting.Add(-1)
		in.m.metrics.overloaded.Inc()
		return nil, &durable.Error{Message: fmt.Sprintf("Durable Object is overloaded: %d requests queued", n-1), Overloaded: true, Retryable: true, Err: durable.ErrOverloaded}
	}
	prior, err := in.beginTurn(ctx, true)
	in.waiting.Add(-1)
	if err != nil {
		return nil, err
	}
	rec := newResponseBuffer()
	turnCtx, mark := in.markTurn(ctx)
	exc := in.runTurn(func() error {
		if err := in.activate(); err != nil {
			return err
		}
		in.obj.ServeHTTP(rec, objectRequest(turnCtx, req))
		return nil
	})
	mark.end()
	last, confirm := in.endTurn(prior, exc)

	resp, err := in.outputGate(ctx, last, confirm, exc, rec)
	if errors.Is(err, errInstanceReset) {
		// Retired while the turn ran (leadership lost, a fence): the turn
		// ran, so the manager must not take it for one that never did.
		err = &durable.Error{Message: "Durable Object was reset while the request ran; writes it made before an awaited fetch may have committed: " + err.Error(),
			Err: fmt.Errorf("%w: %v", durable.ErrCommitIndeterminate, err)}
	}
	if err != nil && rec.socket != nil {
		rec.socket.abort() // the client never learns of the socket
	}
	return resp, err
}

// outputGate holds a turn's response until nothing it may have seen can
// be lost and, if confirm, until this node has confirmed it still leads
// the shard.
//
// A shard fenced meanwhile (this node leads it but cannot reach a quorum
// of its replicas, fence.go) ends the wait for a commit: raft gives the
// commit up only when its lease steps the leader down, about 10 s later,
// and a client waiting that long learns nothing it cannot be told now —
// that the writes may or may not commit. A turn that wrote nothing of its
// own is told that its answer is withheld and that it may be retried.
func (in *instance) outputGate(ctx context.Context, last *commit, confirm bool, exc error, rec *responseBuffer) (*http.Response, error) {
	if last != nil {
		select {
		case <-last.done:
		case <-in.shard.fenceSignal():
			if !last.isDone() { // a commit that ended as the fence came is answered as it ended
				err := in.shard.fencedError()
				if confirm {
					return nil, unconfirmedRead(err)
				}
				return nil, &durable.Error{
					Message: "Durable Object's writes may or may not have committed: " + in.shard.fencedReason() + "; they were still committing",
					Err:     fmt.Errorf("%w: %w", durable.ErrCommitIndeterminate, err),
				}
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if last.err != nil {
			return nil, storageFailure(last.err)
		}
	}
	if confirm {
		// An answer no commit of its own vouches for: linearizable
		// only if we still lead the shard.
		if err := in.shard.verifyLeader(ctx); err != nil {
			return nil, unconfirmedRead(err)
		}
	}
	if exc != nil {
		return nil, exc
	}
	return rec.response(), nil
}

// unconfirmedRead is the error of a turn that wrote nothing and whose
// leadership check failed (leadership moved while it ran): its response
// may have been stale, so it is withheld; nothing of the turn reached
// storage, so it is a retryable ErrCommitFailed, a 503, as a write that
// certainly did not commit is.
func unconfirmedRead(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &durable.Error{
		Message:   "Durable Object response withheld: this node could not confirm it still leads the object's shard, so what the object read may be stale; the request wrote nothing and may be retried: " + err.Error(),
		Retryable: true,
		Err:       fmt.Errorf("%w: %w", durable.ErrCommitFailed, err),
	}
}

// endTurn ends a turn begun with beginTurn and releases the gate: the
// turn's writes are committed (last, nil if there are none in flight),
// what it sent follows them through the output gate, and an exception
// retires the instance — a Go panic may leave the object's memory
// half-updated, so it starts afresh, while the writes made before the
// panic still commit, as a Workers object's do.
//
// prior is what beginTurn returned. confirm is set when no commit
// submitted during the turn is in flight (the turn wrote nothing, or its
// writes committed already): its answer then needs a leadership check of
// its own. A commit submitted before the turn began does not vouch for it:
// its quorum may have acknowledged it before the request arrived, the
// answer only read late, and a newer leader could have committed since
// (docs/architecture.md, section 8).
func (in *instance) endTurn(prior *commit, exc error) (last *commit, confirm bool) {
	last = in.storage.flush()
	in.shard.exitTurn() // after flush: the turn's writes are queued on the shard now
	confirm = last == nil || last.isDone() || last == prior
	in.releaseOutbox(last, confirm)
	if exc != nil {
		in.retire(exc)
	}
	in.unlock()
	return last, confirm
}

// storageFailure turns a commit failure into the exception the caller sees.
func storageFailure(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &durable.Error{
		Message:   "Durable Object storage operation failed; the object was reset: " + err.Error(),
		Retryable: errors.Is(err, durable.ErrCommitFailed),
		Err:       err,
	}
}

// runTurn runs fn, turning a panic into an exception for the caller. A
// BlockConcurrencyWhile that failed in fn makes its error the turn's
// exception, even if fn went on and returned normally: the object is reset
// when the turn ends, as after a panic.
func (in *instance) runTurn(fn func() error) (exc error) {
	defer func() {
		if f := in.blockFailed.Swap(nil); f != nil && exc == nil {
			exc = *f
		}
	}()
	return in.catch(fn)
}

// catch runs fn, turning a panic or an error into an exception.
func (in *instance) catch(fn func() error) (exc error) {
	defer func() {
		if r := recover(); r != nil {
			in.m.cfg.Logger.Error("durable object panicked", "class", in.class, "id", in.id.String(), "panic", r, "stack", string(debug.Stack()))
			exc = &durable.Error{Message: fmt.Sprintf("Durable Object %s threw an exception: %v", in.class, r)}
		}
	}()
	if err := fn(); err != nil {
		var de *durable.Error
		if errors.As(err, &de) {
			return err
		}
		return &durable.Error{Message: err.Error(), Err: err}
	}
	return nil
}

// activate builds the object in its first turn, and in the first after it
// hibernated (under the gate).
func (in *instance) activate() error {
	if in.obj != nil {
		return nil
	}
	if err := in.storage.load(); err != nil {
		return fmt.Errorf("activating %s %s: %w", in.class, in.id, err)
	}
	in.env = in.m.env.WithDispatcher(instanceDispatcher{in: in})
	in.state = durable.NewState(in.id, in.storage, in)
	in.m.metrics.activations.Inc()
	obj := in.ctor(in.state, in.env)
	if f := in.blockFailed.Load(); f != nil {
		return *f // the constructor's BlockConcurrencyWhile failed: no object
	}
	if obj == nil {
		return fmt.Errorf("class %s returned a nil object", in.class)
	}
	if _, ok := obj.(durable.Alarmer); !ok {
		in.storage.refuseAlarms(in.class)
	}
	in.obj = obj
	return nil
}

// hibernate drops the object from memory — the Object, its State and Env,
// and the storage cache — while the instance and its WebSockets stay, as
// Cloudflare hibernates an object whose sockets are open: the next event
// (a socket message or close, a request, an alarm) constructs the object
// again, as a cold start would, and its handlers find the sockets with
// GetWebSockets, their tags and attachments unchanged. It does nothing,
// and reports false, unless the gate is free and the object is quiet: not
// already hibernated or retired, no turn begun (one awaiting a Stub.Fetch
// leaves the gate open), no BlockConcurrencyWhile under way, no write
// pending or in flight. The caller holds m.mu and has checked that
// no request holds a reference and no WaitUntil work runs.
func (in *instance) hibernate() bool {
	select {
	case in.gate <- struct{}{}:
	default:
		return false // a turn runs
	}
	defer in.unlock()
	in.outMu.Lock()
	running := in.turns > 0 // a turn awaiting a Stub.Fetch leaves the gate open
	in.outMu.Unlock()
	if running || in.obj == nil || in.retired.Load() || in.blockDepth.Load() > 0 || !in.storage.forget() {
		return false
	}
	in.obj, in.state, in.env = nil, nil, nil
	return true
}

// retire stops the instance taking turns. Its in-flight commits finish
// (later ones are fenced by version); drained closes when they have.
func (in *instance) retire(reason error) {
	if in.retired.Swap(true) {
		return
	}
	close(in.retiredCh)
	in.m.metrics.resets.Inc()
	last := in.storage.seal(reason)
	cause := errInstanceReset
	if reason != nil {
		cause = fmt.Errorf("%w: %w", errInstanceReset, reason)
	}
	in.cancel(cause)
	go func() {
		if last != nil {
			<-last.done
		}
		close(in.drained)
		in.m.forget(in)
	}()
}

// BlockConcurrencyWhile implements durable.StateRuntime. It must be called
// from the constructor or a turn (which already hold the gate); it keeps the
// gate shut even while fn awaits a Stub.Fetch. An error or panic in fn is
// returned and becomes the turn's exception (runTurn): as after a panic in
// a handler, the turn's writes commit and then the instance is reset
// (endTurn). Resetting it here, in the middle of the turn, dropped the
// writes made before and answered the caller that the turn's commit was
// of unknown outcome.
func (in *instance) BlockConcurrencyWhile(fn func() error) error {
	in.blockDepth.Add(1)
	defer in.blockDepth.Add(-1)
	exc := in.catch(fn)
	if exc != nil {
		in.blockFailed.CompareAndSwap(nil, &exc)
	}
	return exc
}

// WaitUntil implements durable.StateRuntime.
func (in *instance) WaitUntil(fn func(ctx context.Context)) {
	in.bgCount.Add(1)
	in.background.Add(1)
	go func() {
		defer in.background.Done()
		defer in.bgCount.Add(-1)
		exc := in.runTurn(func() error { fn(context.WithValue(in.ctx, backgroundKey{}, in)); return nil })
		// What fn wrote is committed now. (A retired instance's context is
		// done, and its storage sealed: nothing to commit.) A panic in fn
		// may leave the object's memory half-updated, as one in a handler
		// may: then, as endTurn does, the writes made before it commit and
		// the instance starts afresh.
		if in.lock(in.ctx) != nil {
			return
		}
		in.storage.flush()
		if exc != nil {
			in.retire(exc)
		}
		in.unlock()
	}()
}

// instanceDispatcher is the Dispatcher of an instance's Env: while a turn
// awaits an outgoing fetch, the instance's gate opens (unless
// BlockConcurrencyWhile holds it, or a transaction is open), so A→B→A does
// not deadlock. A transaction keeps the gate shut because its reads and
// writes must not interleave with another turn's: it is one object-wide
// unit, as a turn is.
type instanceDispatcher struct{ in *instance }

func (d instanceDispatcher) Fetch(ctx context.Context, class string, id durable.ID, req *http.Request) (*http.Response, error) {
	in := d.in
	mark, _ := ctx.Value(turnKey{}).(*turnMark)
	keepShut := func() bool { return in.blockDepth.Load() > 0 || in.storage.transactionOpen() }
	if mark == nil || mark.inst != in || !mark.beginAwait(keepShut) {
		return in.m.Fetch(ctx, class, id, req)
	}
	defer mark.endAwait()
	return in.m.Fetch(ctx, class, id, req)
}

// objectRequest is req as an object's ServeHTTP gets it: its own copy (the
// object may change its headers or URL, and a caller may fetch one request
// to several objects at once), with a body and a RequestURI as a server's
// handler has, wherever the object runs.
func objectRequest(ctx context.Context, req *http.Request) *http.Request {
	r := req.Clone(ctx)
	if r.Body == nil {
		r.Body = http.NoBody
	}
	if r.RequestURI == "" {
		r.RequestURI = r.URL.RequestURI()
	}
	return r
}

// responseBuffer holds an object's response until the output gate opens.
type responseBuffer struct {
	header http.Header
	status int
	body   bytes.Buffer
	socket *socket // the WebSocket the turn accepted: the response is its 101
}

func newResponseBuffer() *responseBuffer { return &responseBuffer{header: make(http.Header)} }

func (b *responseBuffer) Header() http.Header { return b.header }

// WriteHeader takes codes as net/http does, since an object is an
// http.Handler: a code it could not send is a panic (the turn's exception,
// a 500 to the caller, where the Worker's attempt to relay it answered an
// empty 200), and an informational 1xx is not the final status (it cannot
// be relayed through a buffered answer either, so it is dropped).
func (b *responseBuffer) WriteHeader(status int) {
	if status < 100 || status > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", status))
	}
	if status < 200 && status != http.StatusSwitchingProtocols {
		return
	}
	if b.status == 0 {
		b.status = status
	}
}

func (b *responseBuffer) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}

func (b *responseBuffer) response() *http.Response {
	if b.socket != nil {
		return &http.Response{
			Status: "101 Switching Protocols", StatusCode: http.StatusSwitchingProtocols,
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: b.header,
			Body: b.socket.peer, ContentLength: -1,
		}
	}
	status := b.status
	if status == 0 {
		status = http.StatusOK
	}
	b.header.Set("Content-Length", strconv.Itoa(b.body.Len()))
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        b.header,
		Body:          io.NopCloser(bytes.NewReader(b.body.Bytes())),
		ContentLength: int64(b.body.Len()),
	}
}
