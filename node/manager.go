package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/proto"
)

// manager keeps at most one live instance per object on this node and
// delivers requests to it. It is the Dispatcher of the Worker's Env.
type manager struct {
	ctx     context.Context // ends at shutdown
	cfg     Config
	classes map[string]durable.Class
	keys    map[string]*durable.IDKeyring // class → its namespace's keyring, to check an ID's class
	env     *durable.Env
	nshards int
	router  router
	// forwarder reaches other nodes; nil in dev mode, where every shard is local.
	forwarder *forwarder
	reader    committedReader
	metrics   *metrics

	// mu guards instances, instancesPeak and each instance's refs. Lock
	// order: mu, then an instance's gate (only tried, never waited for:
	// hibernate), then its outMu, its wsMu or its storage's mu.
	mu        sync.Mutex
	instances map[[32]byte]*instance
	// instancesPeak is the most instances held since instances was last
	// made: a Go map keeps the memory of its largest size (compactInstances).
	instancesPeak int
}

var _ durable.Dispatcher = (*manager)(nil)

// shardOf maps an object to its shard: xxhash of the ID bytes modulo the
// shard count, which is how buraksezer/consistent assigns a key to a
// partition, so placement can use the shard number as the partition.
func shardOf(id [32]byte, shards int) int {
	return int(xxhash.Sum64(id[:]) % uint64(shards))
}

// maxResets bounds how often one request is retried on a fresh instance
// after the instance it waited for was reset (the turn had not run).
const maxResets = 3

// router says where a shard's requests go: to a shard this node serves
// (local), or to the peer that leads it.
type router interface {
	route(shard int) (local *shard, leader peer, err error)
	// observe records the leader a NOT_LEADER answer named ("" if none).
	observe(shard int, leaderHint string)
}

// quorumCheckAfter is how long a request's routing tries before it asks
// whether its shard has lost its quorum and, if so, answers at once.
const quorumCheckAfter = time.Second

// quorumReporter is a router that can say why a shard has no leader: too
// few of its replicas are alive.
type quorumReporter interface {
	// quorumLost says which of shard's replicas are down when too few are
	// alive for a quorum, and "" otherwise.
	quorumLost(shard int) string
}

var _ quorumReporter = (*cluster)(nil)

// localRouter serves every shard here: dev mode.
type localRouter []*shard

func (r localRouter) route(i int) (*shard, peer, error) { return r[i], peer{}, nil }
func (r localRouter) observe(int, string)               {}

// errNoMap: this node has not received the cluster map yet (it is starting
// or has not joined); requests are refused at once rather than held.
var errNoMap = fmt.Errorf("%w: this node has not received the cluster map yet", errNotReady)

// routeWait bounds how long a request looks for its shard's leader (an
// election takes about a second).
const routeWait = 5 * time.Second

// Fetch implements durable.Dispatcher.
func (m *manager) Fetch(ctx context.Context, class string, id durable.ID, req *http.Request) (*http.Response, error) {
	key, ok := m.keys[class]
	if !ok {
		return nil, fmt.Errorf("%w: class %q is not registered in this binary", durable.ErrUnknownBinding, class)
	}
	// An ID another namespace made must not reach this class's object of
	// the same ID: the class would run on the other's storage. Checked
	// here, before routing, so that it does not depend on whether the
	// object's leader is this node (checkForwarded checks it there too).
	if _, err := key.Check(id.Bytes()); err != nil {
		return nil, fmt.Errorf("namespace of class %s: %w", class, err)
	}
	idx := shardOf(id.Bytes(), m.nshards)
	start := time.Now()
	deadline := start.Add(routeWait)
	var body *bodyBuffer
	for attempt := 0; ; attempt++ {
		local, leader, err := m.router.route(idx)
		if err == nil && body == nil {
			// Read once, ahead of the turn (see readAhead): a local
			// attempt refused before its turn ran (leadership moving)
			// leaves the body to the next attempt.
			if body, err = newBodyBuffer(req.Body); err != nil {
				return nil, err
			}
		}
		if err == nil && !body.replayable() {
			// Nothing ran (a routing error comes before the object
			// runs): a 503 with Retry-After, not the 500 of an
			// exception, and retryable, not an overload.
			return nil, &durable.Error{Message: "request body too large to re-send after a routing error; retry the request", Retryable: true, Err: durable.ErrNotDelivered}
		}
		if err == nil && local != nil {
			lreq := req
			if req.Body != nil && req.Body != http.NoBody {
				lreq = req.WithContext(req.Context()) // a shallow copy
				lreq.Body = body.readCloser()
			}
			resp, lerr := m.fetchLocal(ctx, class, id, lreq, local)
			var re *routingError
			if !errors.As(lerr, &re) {
				return resp, lerr
			}
			err = re // leadership is moving away from this node: route again
		} else if err == nil {
			var resp *http.Response
			resp, err = m.forwarder.forward(ctx, leader, class, id, req, body, 1)
			var re *routingError
			if !errors.As(err, &re) {
				return resp, err
			}
			m.router.observe(idx, re.hint)
		}
		if errors.Is(err, errNoMap) {
			// Other nodes may well serve the shard: say it is this one.
			return nil, &durable.Error{Message: "this node cannot route requests yet: it has not received the cluster map (it is starting or rejoining); retry, or send the request to another node", Retryable: true, Overloaded: true, Err: err}
		}
		// A shard too few of whose replicas are alive for a quorum will
		// not get a leader within routeWait: say so once the tries have
		// had quorumCheckAfter, rather than at the deadline. (Gossip
		// declares a node dead only after seconds without it.)
		var why string
		if d, ok := m.router.(quorumReporter); ok && time.Since(start) >= quorumCheckAfter {
			why = d.quorumLost(idx)
		}
		if why != "" || time.Now().After(deadline) {
			msg := fmt.Sprintf("no node serves shard %d now: %v", idx, err)
			if why != "" {
				// The last try's error names one node; the cause is the
				// shard's.
				msg = fmt.Sprintf("no node serves shard %d now: %s (last try: %v)", idx, why, err)
			}
			return nil, &durable.Error{Message: msg, Retryable: true, Overloaded: true, Err: err}
		}
		select {
		case <-time.After(min(10*time.Millisecond<<attempt, 200*time.Millisecond)):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// checkForwarded validates the head of a request another node forwarded.
func (m *manager) checkForwarded(h *proto.ForwardHead) (string, durable.ID, error) {
	key, ok := m.keys[h.Class]
	if !ok {
		return "", durable.ID{}, fmt.Errorf("%w: class %q is not registered on this node", durable.ErrUnknownBinding, h.Class)
	}
	if len(h.ObjectId) != 32 {
		return "", durable.ID{}, fmt.Errorf("%w: forwarded ID of %d bytes", durable.ErrInvalidID, len(h.ObjectId))
	}
	if h.Hops > maxHops {
		return "", durable.ID{}, fmt.Errorf("%w: forwarded %d times (at most %d)", errInvalidForward, h.Hops, maxHops)
	}
	id, err := key.Check([32]byte(h.ObjectId))
	if err != nil {
		return "", durable.ID{}, err
	}
	if len(h.ObjectName) > 0 {
		name := string(h.ObjectName)
		named := key.FromName(name)
		if !named.Equal(id) {
			return "", durable.ID{}, fmt.Errorf("%w: the forwarded name %q does not make the forwarded ID %s", durable.ErrInvalidID, name, id)
		}
		id = named // State.ID.Name() answers it here too
	}
	return h.Class, id, nil
}

// fetchHere runs a forwarded request if this node serves its shard, and
// otherwise answers a routing error before anything runs.
func (m *manager) fetchHere(ctx context.Context, class string, id durable.ID, req *http.Request, hops int) (*http.Response, error) {
	local, leader, err := m.router.route(shardOf(id.Bytes(), m.nshards))
	if err != nil {
		return nil, &routingError{notReady: true, msg: err.Error()}
	}
	if local == nil {
		return nil, &routingError{hint: leader.id, msg: fmt.Sprintf("this node does not lead the shard of %s (leader: %q)", id, leader.id)}
	}
	req, err = readAhead(req)
	if err != nil {
		return nil, err
	}
	return m.fetchLocal(ctx, class, id, req, local)
}

// readAhead returns req with its body's first replayableBody bytes read
// (the rest, if any, streams in the turn): a client that stalls while
// sending it then holds up its own request only, not every request to the
// object, which would wait behind the turn. A forwarded call's body
// arrives whole (memBody) and is not copied again. Fetch reads its body
// so itself, once for all its attempts (bodyBuffer).
func readAhead(req *http.Request) (*http.Request, error) {
	if _, whole := req.Body.(memBody); whole || req.Body == nil || req.Body == http.NoBody {
		return req, nil
	}
	body, err := newBodyBuffer(req.Body)
	if err != nil {
		return nil, err
	}
	req = req.WithContext(req.Context()) // a shallow copy
	req.Body = body.readCloser()
	return req, nil
}

// fetchLocal runs the request on this node's instance of the object. Its
// body has been read ahead (readAhead, or Fetch's bodyBuffer); an attempt
// whose turn did not run leaves it to the next.
func (m *manager) fetchLocal(ctx context.Context, class string, id durable.ID, req *http.Request, sh *shard) (*http.Response, error) {
	ctor := m.classes[class]
	key := id.Bytes()
	for attempt := 0; ; attempt++ {
		if sh.handingOff.Load() {
			return nil, sh.handOffRefusal()
		}
		if sh.isFenced() {
			// Cut off from its quorum (fence.go): route elsewhere now
			// rather than wait for the fence to lift.
			return nil, &routingError{notReady: true, msg: sh.fencedReason()}
		}
		if attempt > 0 && !sh.isReady() {
			// The instance was reset before the turn ran because this
			// node lost the shard: the request goes to the new leader
			// rather than wait for this node to lead again.
			return nil, &routingError{notReady: true, msg: fmt.Sprintf("shard %d: this node lost its leadership while the request waited", shardNumber(sh.id))}
		}
		if err := m.waitShard(ctx, sh); errors.Is(err, errShardFenced) {
			continue // refused above, as fenced
		} else if err != nil {
			return nil, err
		}
		in, err := m.acquire(ctx, key, id, class, ctor, sh)
		if err != nil {
			return nil, err
		}
		resp, err := in.fetch(ctx, req)
		m.release(in)
		if errors.Is(err, errInstanceReset) && attempt < maxResets {
			continue
		}
		return resp, err
	}
}

// shardWait bounds how long a request waits for a local shard to be ready.
const shardWait = 10 * time.Second

func (m *manager) waitShard(ctx context.Context, sh *shard) error {
	if sh.isReady() {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, shardWait)
	defer cancel()
	if err := sh.waitReady(wctx); errors.Is(err, errShardFenced) {
		return err
	} else if err != nil {
		return &durable.Error{Message: err.Error(), Retryable: true, Overloaded: true, Err: err}
	}
	return nil
}

// acquire returns the live instance of key, activating one if needed, with
// a reference that keeps it from eviction until release.
func (m *manager) acquire(ctx context.Context, key [32]byte, id durable.ID, class string, ctor durable.Class, sh *shard) (*instance, error) {
	for {
		m.mu.Lock()
		in := m.instances[key]
		if in != nil && in.retired.Load() {
			// A reset instance may still have commits in flight; its
			// successor must read state after they settle.
			m.mu.Unlock()
			select {
			case <-in.drained:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			m.mu.Lock()
			if m.instances[key] == in {
				delete(m.instances, key)
			}
			m.mu.Unlock()
			continue
		}
		if !sh.isReady() {
			// Checked under m.mu: dropShard, which follows every change
			// that makes sh not ready, takes m.mu, so an instance added
			// here while sh was ready is one dropShard retires; one added
			// after it would outlive the leadership it was made under.
			m.mu.Unlock()
			return nil, &routingError{notReady: true, msg: fmt.Sprintf("shard %d: this node does not serve it now", shardNumber(sh.id))}
		}
		if in == nil {
			in = newInstance(m, key, id, class, ctor, sh)
			m.instances[key] = in
			m.instancesPeak = max(m.instancesPeak, len(m.instances))
		} else if in.class != class {
			m.mu.Unlock()
			return nil, fmt.Errorf("%w: object %s belongs to class %s, not %s", durable.ErrWrongNamespace, id, in.class, class)
		}
		in.refs++
		in.lastUsed.Store(time.Now().UnixNano())
		m.mu.Unlock()
		return in, nil
	}
}

// hold takes a reference on in, as acquire does, if it is still its
// object's instance here (false: it was evicted or replaced). A socket
// event holds one for its turn.
func (m *manager) hold(in *instance) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.instances[in.key] != in {
		return false
	}
	in.refs++
	return true
}

func (m *manager) release(in *instance) {
	m.mu.Lock()
	in.refs--
	in.lastUsed.Store(time.Now().UnixNano())
	m.mu.Unlock()
}

// evictIdle drops instances that have been idle for longer than
// cfg.IdleTimeout and have nothing running, queued or in flight; such an
// instance with WebSockets open hibernates instead (instance.hibernate).
// It returns how many instances left memory either way.
func (m *manager) evictIdle(now time.Time) int {
	cutoff := now.Add(-m.cfg.IdleTimeout).UnixNano()
	m.mu.Lock()
	defer m.mu.Unlock()
	evicted, hibernated := 0, 0
	for key, in := range m.instances {
		if in.retired.Load() {
			continue // counted as reset, and forgotten once drained
		}
		if in.refs > 0 || in.lastUsed.Load() > cutoff || in.bgCount.Load() > 0 || !in.storage.idle() {
			continue
		}
		if in.openSockets() > 0 {
			if in.hibernate() {
				hibernated++
			}
			continue
		}
		delete(m.instances, key)
		in.cancel(nil)
		evicted++
	}
	m.compactInstances()
	m.metrics.evictions.Add(float64(evicted))
	m.metrics.hibernations.Add(float64(hibernated))
	return evicted + hibernated
}

// compactInstancesAbove is the peak below which the instance map is never
// remade: a map of that many entries costs little.
const compactInstancesAbove = 4096

// compactInstances, under m.mu, remakes the instance map at its present
// size once it holds under a quarter of its peak. A Go map does not shrink
// when entries are deleted: after 100,000 objects had been served and
// evicted, the empty map still held 8 MB.
func (m *manager) compactInstances() {
	if m.instancesPeak < compactInstancesAbove || len(m.instances) >= m.instancesPeak/4 {
		return
	}
	// Not maps.Clone, which copies the map's tables as they are.
	smaller := make(map[[32]byte]*instance, len(m.instances))
	for key, in := range m.instances {
		smaller[key] = in
	}
	m.instances, m.instancesPeak = smaller, len(smaller)
}

// cancelInstances ends the context of every instance in memory, at
// shutdown (m.ctx done). Instances' contexts are not children of m.ctx: a
// context keeps a map of its children that never shrinks, 4 MB after
// 100,000 activations (newInstance).
func (m *manager) cancelInstances() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, in := range m.instances {
		in.cancel(context.Cause(m.ctx))
	}
}

// touch marks in as used now: an event that did not come through acquire
// (a WebSocket message) keeps the instance from hibernating too.
func (m *manager) touch(in *instance) { in.lastUsed.Store(time.Now().UnixNano()) }

// releaseAfterEviction is how many instances one sweep must evict before
// the memory they held is handed back to the OS at once. An idle node does
// not allocate, so the garbage collector would not run for minutes and the
// process would keep the memory of every object it ever served.
const releaseAfterEviction = 1024

// releaseMemory reports whether a sweep that evicted evicted instances,
// evictedSince of them since memory was last handed back, and left left in
// memory should hand it back now: after a large sweep, or once the node
// has gone idle — its last instance evicted — after smaller ones. Without
// the second, a node whose load ended in sweeps of fewer than 1024 kept
// the memory of its last minutes of work (found by QA: 210–241 MB of RSS
// three minutes after a cluster soak, with 87 MB live). Neither happens
// more than once a sweep, nor while a node is busy with many objects.
func releaseMemory(evicted, evictedSince, left int) bool {
	return evicted >= releaseAfterEviction || (evictedSince > 0 && left == 0)
}

// runEviction evicts idle instances until ctx ends.
func (m *manager) runEviction(ctx context.Context, wg *sync.WaitGroup) {
	every := min(max(m.cfg.IdleTimeout/4, 100*time.Millisecond), 10*time.Second)
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		evictedSince := 0
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				evicted := m.evictIdle(now)
				evictedSince += evicted
				if releaseMemory(evicted, evictedSince, m.count()) {
					debug.FreeOSMemory()
					evictedSince = 0
				}
			}
		}
	}()
}

// dropShard retires every instance of a shard at once (leadership lost).
func (m *manager) dropShard(sh *shard) {
	m.mu.Lock()
	var victims []*instance
	for _, in := range m.instances {
		if in.shard == sh {
			victims = append(victims, in)
		}
	}
	m.mu.Unlock()
	for _, in := range victims {
		in.retire(fmt.Errorf("%w: this node lost leadership of shard %s", errNotReady, sh.id))
	}
}

// forget takes a retired instance out of the map once its commits have
// settled (in.drained), as the next acquire of its object would: else it
// stayed there, counted in roost_instances and holding its memory, until
// idle eviction took it and counted it as evicted as well as reset.
func (m *manager) forget(in *instance) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.instances[in.key] == in {
		delete(m.instances, in.key)
	}
}

// count returns the number of instances in memory.
func (m *manager) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.instances)
}

// drain commits what every instance has pending and waits (bounded by ctx)
// for it and for WaitUntil work, at shutdown.
func (m *manager) drain(ctx context.Context) error {
	m.mu.Lock()
	all := make([]*instance, 0, len(m.instances))
	for _, in := range m.instances {
		all = append(all, in)
	}
	m.mu.Unlock()
	for _, in := range all {
		done := make(chan struct{})
		go func() { in.background.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
		// A turn still running (a WebSocket event's, an alarm's, a
		// forwarded request's) commits its own writes when it ends.
		c, err := in.flushBetweenTurns(ctx)
		if err != nil {
			return err
		}
		if c != nil {
			if err := c.wait(ctx); err != nil && ctx.Err() != nil {
				return err
			}
		}
	}
	return nil
}
