package node

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/renameio/v2"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc/keepalive"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/raftstore"
)

// Node is one roost node: app and admin listeners, the instance manager and
// the shards' storage. In dev mode every shard is a single-voter Raft group
// on the node's one Pebble, through the same code the cluster uses.
type Node struct {
	cfg Config
	app *durable.App
	log *slog.Logger

	store   *raftstore.Store
	groups  []*raftstore.Group
	shards  []*shard
	manager *manager
	metrics *metrics

	appLn, adminLn   net.Listener
	grpcLn           net.Listener // a cluster node's, served by its cluster
	appSrv, adminSrv *http.Server

	cancel context.CancelFunc
	wg     sync.WaitGroup // background loops: proposers, watchers, eviction
	// stragglerGrace is how long Close waits, once its own context has
	// ended and the node's is cancelled, for those loops to notice.
	stragglerGrace time.Duration
	// transferGiveUp bounds how long a shard leader lets a leadership
	// transfer run before ending it (cluster.awaitTransfer).
	transferGiveUp time.Duration
	// duplicatePatience is how long a node that gossip refuses for a
	// duplicate ID runs alone before it fails (duplicateWatch).
	duplicatePatience time.Duration

	// applyWrap, when set (by tests), wraps each shard's Raft applier.
	applyWrap func(applier) applier
	// beforeJoiningShard, when set (by tests), runs before this node
	// starts its replica of a shard it is added to (one that moved here,
	// not one it was bootstrapped with): a test delays it to stand for a
	// node slow to start it.
	beforeJoiningShard func(shard int)
	// holdFirstMap, when set (by tests), keeps this node, as meta leader,
	// from writing the first cluster map while it reports true.
	holdFirstMap func() bool
	// noPipelines, set by tests that move a node's gRPC address, turns
	// raft's pipelined appends off (raftstore.TransportConfig.NoPipelines).
	noPipelines bool
	// metaFSMWrap, when set (by tests), wraps the meta group's state
	// machine as Raft sees it (c.metaFSM stays the one the node reads).
	metaFSMWrap func(raft.FSM) raft.FSM
	// alarms tunes the shards' alarm schedulers (tests change it).
	alarms alarmSettings
	// faults, when set (by tests), injects network faults into the Raft transport.
	faults *raftstore.Faults
	// serverKeepalive is how the gRPC server pings its clients
	// (defaultServerKeepalive; tests shorten it).
	serverKeepalive keepalive.ServerParameters
	// forwardDialer, when set (by tests), opens the connections the node
	// forwards requests over (through a proxy that can black-hole them).
	forwardDialer func(ctx context.Context, addr string) (net.Conn, error)
	// peerTLS secures node-to-node gRPC; nil means plaintext (and dev mode).
	peerTLS *peerTLS
	// cluster is the cluster machinery; nil in dev mode.
	cluster *cluster
	// rejoins is the cluster the data dir said this node belongs to at
	// start (RejoinsCluster).
	rejoins string
	// admin serves the /v1/ API and runs operations (rebalance, drain, heal).
	admin *admin
	// failed carries an error that stops the node from serving (see Failed).
	failed chan error
	// newDataDir records how the data dir was when Start began, so that a
	// node refused at its first join can leave it that way (refuseFirstStart).
	newDataDir dataDirOrigin
	// undoDataDir is set when Close should put the data dir back as newDataDir
	// says it was.
	undoDataDir atomic.Bool
}

// New checks cfg and app (and reads the TLS files cfg names) and prepares
// a node; Start opens its data dir and listeners.
func New(cfg Config, app *durable.App) (*Node, error) {
	if err := app.Validate(); err != nil {
		return nil, fmt.Errorf("app %q: %w", app.Name, err)
	}
	if len(cfg.Bindings) == 0 {
		cfg.Bindings = app.Bindings
	}
	if len(cfg.KVNamespaces) == 0 {
		cfg.KVNamespaces = app.KVNamespaces
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := durable.CheckBindings(cfg.Bindings, app.Classes); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg.Logger = log
	var pt *peerTLS
	if cfg.Cluster() {
		// Now, before anything is opened: a TLS file that cannot be used is
		// a configuration error, not something to find at the first handshake.
		var err error
		if pt, err = loadPeerTLS(cfg); err != nil {
			return nil, err
		}
	}
	n := &Node{cfg: cfg, app: app, log: log, peerTLS: pt, alarms: defaultAlarmSettings(), failed: make(chan error, 1),
		stragglerGrace: 5 * time.Second, serverKeepalive: defaultServerKeepalive(), transferGiveUp: defaultTransferGiveUp,
		duplicatePatience: defaultDuplicatePatience}
	n.admin = newAdmin(n)
	return n, nil
}

// devServerID is the Raft server ID of the single voter of dev-mode groups.
const devServerID = raft.ServerID("dev")

// groupOf is the Raft group of shard i; group 0 is kept for the meta group.
func groupOf(i int) raftstore.GroupID { return raftstore.GroupID(i + 1) }

// shardNumber is the shard whose group is g (groupOf's inverse); messages name
// shards by their number, as the admin API and CLI do.
func shardNumber(g raftstore.GroupID) int { return int(g) - 1 }

// startupWait bounds how long Start waits for every shard to elect itself.
const startupWait = 30 * time.Second

// Start opens storage and begins serving. In dev mode it starts every
// shard and returns once all can serve. In cluster mode it returns once the
// listeners are bound; the cluster forms in the background and /readyz
// says when this node can serve.
func (n *Node) Start(ctx context.Context) (err error) {
	// The listeners first: an address another process holds fails the
	// start before anything is written to the data dir (a first start
	// writes the node's identity and shard count there for good).
	defer func() {
		if err != nil {
			n.closeListeners()
		}
	}()
	if err := n.listen(); err != nil {
		return err
	}
	n.newDataDir = dataDirOriginOf(n.cfg.DataDir)
	if err := os.MkdirAll(n.cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	// A refused first start changes nothing (docs/operations.md): a start
	// that fails on a data dir that was absent or empty — the gossip
	// listener's address taken, say, which is bound only with the
	// cluster — puts it back as it was, once the deferred Close below has
	// closed the store (n.store is nil then), rather than leave it bound
	// to this node's ID, shard count and id key.
	defer func() {
		if err != nil && n.newDataDir != dataDirHeld && n.store == nil {
			if rerr := n.newDataDir.restore(n.cfg.DataDir); rerr != nil {
				err = errors.Join(err, fmt.Errorf("putting %s back as it was: %w", n.cfg.DataDir, rerr))
			}
		}
	}()
	var ident identity
	if n.cfg.Cluster() {
		if ident, err = checkIdentity(n.cfg.DataDir, n.cfg.NodeID); err != nil {
			return err
		}
		if err := checkNotRemoved(n.cfg.DataDir); err != nil {
			return err
		}
		if err := checkStoreKept(n.cfg.DataDir, ident); err != nil {
			return err
		}
	} else if _, err := os.Stat(filepath.Join(n.cfg.DataDir, "node.json")); err == nil {
		return fmt.Errorf("%w: %s belongs to a cluster node; roost dev needs a data dir of its own", ErrDataDirMismatch, n.cfg.DataDir)
	}
	if err := checkLayout(n.cfg.DataDir, layout{Shards: n.cfg.Shards, IDKey: durable.KeyFingerprint(n.cfg.IDKey)}); err != nil {
		return err
	}
	// The open-file limit divided (fdBudget); none if it cannot be read.
	fds, limited := fdBudget{}, false
	if limit, ok := openFileLimit(); ok {
		fds, limited = budgetFor(limit), true
	}
	store, err := raftstore.Open(filepath.Join(n.cfg.DataDir, "pebble"), raftstore.Options{Logger: hclogTo(n.log, hclog.Warn),
		MaxOpenFiles: fds.pebbleFiles, // 0 without a budget: Pebble's default
		MemTableSize: n.memTableSize(),
		OnFSMFailure: func(g raftstore.GroupID, err error) {
			// Its replica would lag from here on, and could still be
			// elected and serve what it has: the node stops, and a
			// restart applies the rest of the group's log.
			n.fail(fmt.Errorf("group %s could not apply a committed entry: %w", g, err))
		},
		// Writes that wait on a full disk would hang every shard this node
		// leads while it still looks healthy: it stops, and the others go
		// on (docs/operations.md, "A full disk").
		OnStalled: func(err error) { n.fail(fmt.Errorf("storage in %s: %w", n.cfg.DataDir, err)) }})
	if errors.Is(err, raftstore.ErrStoreDamaged) {
		return fmt.Errorf("%w: opening storage in %s: %w. %s", ErrNodeStateLost, n.cfg.DataDir, err, lostStoreAdvice(n.cfg.NodeID))
	}
	if err != nil {
		return fmt.Errorf("opening storage in %s: %w", n.cfg.DataDir, err)
	}
	n.store = store
	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	defer func() {
		if err != nil {
			n.Close(context.Background())
		}
	}()

	// Read at a scrape, which the admin listener serves only once Start
	// has set up what they read.
	n.metrics = newMetrics(gauges{
		instances:     func() float64 { return float64(n.manager.count()) },
		shardsLed:     func() float64 { return float64(n.shardsLed()) },
		shardReplicas: func() float64 { return float64(n.shardReplicas()) },
		storeBytes: func() float64 {
			b, _ := n.store.DiskUsage() // 0 once closed
			return float64(b)
		},
	})
	// The app's classes and the one that keeps KV namespaces (App.Validate
	// keeps its name free).
	classes := maps.Clone(n.app.Classes)
	classes[durable.KVClassName] = durable.NewKVClass(time.Now)
	n.manager = &manager{
		ctx: runCtx, cfg: n.cfg, classes: classes, reader: store, metrics: n.metrics,
		nshards:   n.cfg.Shards,
		instances: make(map[[32]byte]*instance),
		keys:      make(map[string]*durable.IDKeyring, len(classes)),
	}
	nsKeys := make(map[string]durable.NamespaceKey, len(classes))
	for class := range classes {
		nsKeys[class] = durable.DeriveNamespaceKey(class, n.cfg.IDKey)
		n.manager.keys[class] = durable.NewIDKeyring(nsKeys[class])
	}
	n.manager.env = durable.NewEnv(durable.EnvConfig{Bindings: n.cfg.Bindings, KVNamespaces: n.cfg.KVNamespaces, Keys: nsKeys, Vars: n.cfg.Vars, Dispatcher: n.manager})
	context.AfterFunc(runCtx, n.manager.cancelInstances)
	n.manager.runEviction(runCtx, &n.wg)

	if !n.cfg.Cluster() {
		if err := n.startDevShards(ctx, runCtx); err != nil {
			return err
		}
	}
	if n.cfg.Cluster() {
		n.grpcLn = n.limitGRPCConns(n.grpcLn, fds, limited)
		if err := n.startCluster(ctx, runCtx, ident); err != nil {
			return err
		}
	}
	// Idle keep-alive connections are closed after idleConnTimeout. The app
	// listener has no whole-request deadline: bodies past their first MiB
	// stream to objects, and WebSockets stay open for hours; a body that
	// stalls fails after BodyStallTimeout instead (stallGuard, http.go), on
	// the admin listener too. The admin listener's calls are short, bar a
	// KV put of a large value: adminReadTimeout bounds a whole request
	// whose client sends its body slowly, without stalling.
	n.appSrv = &http.Server{Handler: n.appHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: idleConnTimeout,
		ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelDebug)}
	n.adminSrv = &http.Server{Handler: n.adminHandler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: adminReadTimeout, IdleTimeout: idleConnTimeout,
		ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelDebug)}
	serving := []any{"node", n.cfg.NodeID, "app", n.appLn.Addr().String(), "admin", n.adminLn.Addr().String(), "shards", n.cfg.Shards, "data_dir", n.cfg.DataDir}
	if limited {
		n.appLn = n.limitConns(n.appLn, "app", true, fds.app)
		n.adminLn = n.limitConns(n.adminLn, "admin", true, fds.admin)
		serving = append(serving, "open_file_limit", fds.limit, "max_app_connections", fds.app, "max_admin_connections", fds.admin)
		if n.cfg.Cluster() {
			serving = append(serving, "max_grpc_connections", fds.grpc)
		}
	}
	go n.appSrv.Serve(n.appLn)
	go n.adminSrv.Serve(n.adminLn)
	n.log.Info("roost node serving", serving...)
	return nil
}

// devMemTableSize is a dev node's Pebble memtable size, a quarter of the
// default: Pebble holds up to two and a half memtables once it has taken
// that many writes, and with 32 MiB ones a dev node that had served
// 100,000 objects and evicted them all kept 111 MB of RSS, 94 MB with
// 8 MiB ones, at the same rates on the counter (docs/benchmarks.md,
// "Session 37"). A cluster node keeps the default: smaller memtables cost
// it about a tenth more CPU an increment over many objects.
const devMemTableSize = 8 << 20

// memTableSize is Pebble's memtable size for this node; 0 means
// raftstore's default.
func (n *Node) memTableSize() uint64 {
	if n.cfg.Cluster() {
		return 0
	}
	return devMemTableSize
}

// limitConns bounds ln to maxOpen connections open at once
// (connLimitListener); http1 listeners answer a refused one 503.
func (n *Node) limitConns(ln net.Listener, name string, http1 bool, maxOpen int) net.Listener {
	return newConnLimitListener(ln, name, http1, maxOpen, n.metrics.connectionsRefused.WithLabelValues(name), n.log)
}

// limitGRPCConns bounds the gRPC listener to its share of the budget, if
// there is one. gRPC sets TCP_USER_TIMEOUT only on a bare *net.TCPConn,
// which the limit's wrapper hides, so userTimeoutListener sets it beneath.
func (n *Node) limitGRPCConns(ln net.Listener, fds fdBudget, limited bool) net.Listener {
	ln = userTimeoutListener{Listener: ln, timeout: n.serverKeepalive.Timeout}
	if limited {
		ln = n.limitConns(ln, "grpc", false, fds.grpc)
	}
	return ln
}

// shardsLed counts the shard groups this node leads.
func (n *Node) shardsLed() int {
	if n.cluster != nil {
		return n.cluster.shardsLed()
	}
	led := 0
	for _, g := range n.groups {
		if g.Raft().State() == raft.Leader {
			led++
		}
	}
	return led
}

// shardReplicas counts the shard groups with a member on this node.
func (n *Node) shardReplicas() int {
	if n.cluster != nil {
		return n.cluster.shardReplicas()
	}
	return len(n.groups)
}

// Timeouts of the app and admin HTTP servers (see Start).
const (
	idleConnTimeout  = 2 * time.Minute
	adminReadTimeout = 5 * time.Minute
)

// listen opens the node's TCP listeners (the gossip one is memberlist's);
// Start closes those it opened if it fails.
func (n *Node) listen() (err error) {
	if n.appLn, err = net.Listen("tcp", n.cfg.HTTPAddr); err != nil {
		return fmt.Errorf("app listener: %w", err)
	}
	if n.adminLn, err = net.Listen("tcp", n.cfg.AdminAddr); err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	if n.cfg.Cluster() {
		if n.grpcLn, err = net.Listen("tcp", n.cfg.GRPCAddr); err != nil {
			return fmt.Errorf("grpc listener: %w", err)
		}
	}
	return nil
}

// closeListeners closes the listeners of a start that failed; their
// servers, if any started, were stopped by Close.
func (n *Node) closeListeners() {
	for _, ln := range []net.Listener{n.appLn, n.adminLn, n.grpcLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

// startDevShards runs every shard as a single-voter group and waits until
// all of them can serve.
func (n *Node) startDevShards(ctx, runCtx context.Context) error {
	for i := range n.cfg.Shards {
		gid := groupOf(i)
		_, trans := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprintf("dev-%d", gid)))
		g, err := n.store.StartGroup(raftstore.GroupConfig{
			ID: gid, LocalID: devServerID, Transport: trans,
			Bootstrap: []raft.Server{{Suffrage: raft.Voter, ID: devServerID, Address: trans.LocalAddr()}},
			Tune:      devRaftTuning,
		})
		if err != nil {
			return fmt.Errorf("starting shard %d: %w", i, err)
		}
		n.groups = append(n.groups, g)
		sh := newShard(gid, g, n.cfg.MaxInflightPerShard, n.metrics)
		if n.applyWrap != nil {
			sh.raft = n.applyWrap(sh.raft)
		}
		n.shards = append(n.shards, sh)
		sh.run(runCtx, &n.wg)
		sh.watchLeadership(runCtx, &n.wg, func() { n.manager.dropShard(sh) })
		newAlarmScheduler(n.manager, sh, n.store, n.alarms).run(runCtx, &n.wg)
	}
	n.manager.router = localRouter(n.shards)
	wctx, wcancel := context.WithTimeout(ctx, startupWait)
	defer wcancel()
	for _, sh := range n.shards {
		if err := sh.waitReady(wctx); err != nil {
			return err
		}
	}
	return nil
}

// devRaftTuning shortens timeouts for single-voter groups: with no peers,
// only startup waits for them. Their election at every start is expected,
// so raft's warnings about it are noise: only errors are logged.
func devRaftTuning(c *raft.Config) {
	c.HeartbeatTimeout = 100 * time.Millisecond
	c.ElectionTimeout = 100 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.Logger = c.Logger.ResetNamed("raft")
	c.Logger.SetLevel(hclog.Error)
}

// hclogTo sends hashicorp/raft's and raftstore's logs to the node's
// logger, one line per message, from level up.
func hclogTo(log *slog.Logger, level hclog.Level) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "raftstore", Level: level, Output: slogWriter{log}, IndependentLevels: true, DisableTime: true})
}

// slogWriter logs each line hclog writes ("[WARN]  raftstore.raft: …") at
// its level, but the warnings and errors that adding a replica or stopping
// the node always cause at info.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelWarn
	for _, lv := range []struct {
		prefix string
		level  slog.Level
	}{{"[TRACE]", slog.LevelDebug}, {"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERROR]", slog.LevelError}} {
		if rest, ok := strings.CutPrefix(line, lv.prefix); ok {
			line, level = strings.TrimSpace(rest), lv.level
			break
		}
	}
	if level >= slog.LevelWarn && slices.ContainsFunc([]string{
		// A follower behind its leader: the leader walks back to the
		// entries it lacks, and sends a snapshot when its log no longer
		// holds them (a replica just added asks for entry 1).
		"failed to get previous log", "appendEntries rejected, sending older logs", `error="log not found"`,
		// A replica just added, whose node starts its group once it sees
		// the map, or one being stopped; the leader retries.
		"is not running on", "is shutting down on",
		// This node stopping.
		"transport shutdown",
	}, func(m string) bool { return strings.Contains(line, m) }) {
		level = slog.LevelInfo
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}

// Close stops serving, commits what is pending (bounded by ctx) and closes
// storage. It may be called after a failed Start.
func (n *Node) Close(ctx context.Context) error {
	var errs []error
	if n.appSrv != nil {
		errs = append(errs, n.appSrv.Shutdown(ctx))
	}
	if n.manager != nil && n.manager.forwarder != nil {
		// The app server's Shutdown leaves the hijacked connections of
		// WebSockets tunnelled to other nodes: their clients are sent close
		// frames (1001) before those connections end with the process.
		n.manager.forwarder.goAwayTunnels(ctx)
	}
	if n.manager != nil {
		errs = append(errs, n.manager.drain(ctx))
	}
	if n.adminSrv != nil {
		errs = append(errs, n.adminSrv.Shutdown(ctx))
	}
	if n.cluster != nil {
		n.cluster.handOff(ctx)
	}
	if n.cancel != nil {
		n.cancel()
	}
	if !waitBounded(ctx, &n.wg, n.stragglerGrace) {
		// Something ignores its cancelled context (an alarm handler that
		// never returns, say) and may still use the
		// groups and the store: they are closed when it ends, not under it.
		// What was acknowledged is in the synced Raft log already.
		go func() {
			n.wg.Wait()
			n.closeStores()
		}()
		n.log.Error("shutdown: background work still running after the grace period; leaving the store open for it")
		return errors.Join(append(errs, fmt.Errorf("%w: background work (an alarm handler?) still running %s after its context was cancelled", ErrCloseIncomplete, n.stragglerGrace))...)
	}
	if ctx.Err() != nil {
		// Each step that waited says only "context deadline exceeded":
		// say once what it means.
		errs = slices.DeleteFunc(errs, func(err error) bool {
			return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
		})
		errs = append(errs, fmt.Errorf("%w: work still under way then (requests, alarm or WebSocket handlers, leadership hand-offs) was cancelled; it has ended, and what was acknowledged is committed", ErrCloseDeadline))
	}
	if err := n.closeStores(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	// Once: a later Close (a deferred one after Run) must not remove what
	// a node started on the same dir since has written.
	if n.undoDataDir.Swap(false) {
		errs = append(errs, n.newDataDir.restore(n.cfg.DataDir))
	}
	return errors.Join(errs...)
}

// ErrCloseIncomplete: Close gave up waiting for work that ignores its
// context; the node's Raft groups and store close when that work ends.
var ErrCloseIncomplete = errors.New("node not fully closed")

// ErrCloseDeadline: Close's context ended before the work under way did,
// which was then cancelled; the node closed.
var ErrCloseDeadline = errors.New("the shutdown grace period ended first")

// waitBounded waits for wg until ctx ends, then for at most grace more,
// and reports whether wg finished.
func waitBounded(ctx context.Context, wg *sync.WaitGroup, grace time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// closeStores closes what the node's goroutines used: cluster state, the
// forwarder, the Raft groups and the store. Close calls it once they ended.
func (n *Node) closeStores() error {
	var errs []error
	if n.cluster != nil {
		n.cluster.close()
	}
	if n.manager != nil && n.manager.forwarder != nil {
		n.manager.forwarder.close()
	}
	for _, g := range n.groups {
		errs = append(errs, g.Shutdown())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
		n.store = nil
	}
	return errors.Join(errs...)
}

// Run is Start, then waiting for ctx to end, then Close (with a grace
// period for in-flight requests).
func (n *Node) Run(ctx context.Context) error {
	if err := n.Start(ctx); err != nil {
		return err
	}
	var failure error
	select {
	case <-ctx.Done():
	case failure = <-n.failed:
	}
	n.log.Info("shutting down")
	cctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return errors.Join(failure, n.Close(cctx))
}

// fail stops the node: Failed delivers err (only the first failure is
// kept), and Run closes the node.
func (n *Node) fail(err error) {
	n.log.Error("node cannot continue", "err", err)
	select {
	case n.failed <- err:
	default:
	}
}

// Failed delivers an error that stops the node after Start returned (it
// could not join, its data dir belongs to another cluster, or a shard's
// state machine failed to apply a committed entry). The caller should
// Close the node and exit.
func (n *Node) Failed() <-chan error { return n.failed }

// RejoinsCluster is the ID of the cluster whose member this node's data
// dir was when the node started ("" for a node new to any cluster, and in
// dev mode). Valid after Start.
func (n *Node) RejoinsCluster() string { return n.rejoins }

// HTTPAddr is the bound app listener address (valid after Start).
func (n *Node) HTTPAddr() net.Addr { return n.appLn.Addr() }

// AdminAddr is the bound admin listener address (valid after Start).
func (n *Node) AdminAddr() net.Addr { return n.adminLn.Addr() }

// Env returns the Env the Worker receives (for tests and embedding).
func (n *Node) Env() *durable.Env { return n.manager.env }

// layout is what a data dir records about itself when first used.
type layout struct {
	Shards int `json:"shards"`
	// IDKey is the fingerprint of Config.IDKey (durable.KeyFingerprint);
	// a data dir written before it was kept had none, which is the
	// fingerprint of no key.
	IDKey string `json:"id_key,omitempty"`
}

// ErrDataDirMismatch: the data dir was created with settings that cannot change.
var ErrDataDirMismatch = errors.New("data dir does not match the configuration")

// ErrStorageStalled: every write waited on the store while its flushes or
// compactions failed (a full disk); the node stopped (Failed) and the
// caller should exit without Close, which would wait on the store.
var ErrStorageStalled = raftstore.ErrStoreStalled

// ErrNodeStateLost: part of what the data dir holds for its node (its
// store, identity or layout) is gone or damaged — not a configuration
// that does not match it; the error says how to restore or replace the
// node.
var ErrNodeStateLost = errors.New("the data dir lost part of its node's state")

// ErrClusterMismatch: a node with no cluster state of its own was started
// with settings its cluster does not share (another --shards).
var ErrClusterMismatch = errors.New("this node's settings do not match the cluster it joins")

// ErrIDKeyMismatch: the node's id key (Config.IDKey) is not the one its
// data dir was created with, or its cluster's.
var ErrIDKeyMismatch = errors.New("id key does not match")

// checkLayout fixes the shard count on first use and refuses to change it later.
func checkLayout(dir string, want layout) error {
	path := filepath.Join(dir, "layout.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		// A store without its layout was written with a shard count and id
		// key no one can tell now: writing this start's would fix whatever
		// it was started with for good (found by QA: one start with the
		// wrong --shards, refused at its join, left a layout that refused
		// the right one).
		has, err := holdsStore(dir)
		if err != nil {
			return err
		}
		if has {
			return fmt.Errorf("%w: %s holds a store but no layout.json, which records the shard count and id key its data was written with; restore the file (every node of a cluster has the same one: copy it from another node)", ErrNodeStateLost, dir)
		}
		b, _ = json.Marshal(want)
		// Synced, file and directory: Pebble syncs what it writes, and a
		// power cut must not leave the data without the file that says
		// how to read it.
		if err := renameio.WriteFile(path, b, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	var l layout
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("%w: %s is corrupt: %v", ErrDataDirMismatch, path, err)
	}
	if l.Shards != want.Shards {
		return fmt.Errorf("%w: %s was created with %d shards; the shard count is fixed once data exists (asked for %d)", ErrDataDirMismatch, dir, l.Shards, want.Shards)
	}
	if got := cmp.Or(l.IDKey, durable.KeyFingerprint("")); got != want.IDKey {
		return fmt.Errorf("%w: %s was created with another id key (fingerprint %s; this node's: %s): every object name and ID would reach other objects than its data holds; start with the key it was created with", ErrIDKeyMismatch, dir, describeKey(got), describeKey(want.IDKey))
	}
	return nil
}

// describeKey is an id key's fingerprint as messages show it.
func describeKey(fingerprint string) string {
	if fingerprint == durable.KeyFingerprint("") {
		return fingerprint + ", no key"
	}
	return fingerprint
}
