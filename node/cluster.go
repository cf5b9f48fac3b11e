package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/renameio/v2"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/loglimit"
	"github.com/roostdb/roost/placement"
	"github.com/roostdb/roost/proto"
	"github.com/roostdb/roost/raftstore"
)

// metaGroup is the Raft group of the cluster map; shard i is group i+1.
const metaGroup raftstore.GroupID = 0

// joinHint follows a failed join: seeds that answer and still refuse the
// join are most often nodes with another gossip key (or none), and
// memberlist reports that only as a closed connection.
const joinHint = " (are the seeds up, and do all nodes have the same gossip key?)"

// joinHintFor is joinHint, unless err shows that a seed answered with
// something other than gossip: then --join names another listener.
func joinHintFor(err error) string {
	if strings.Contains(err.Error(), "invalid msgType") {
		return " (a seed answered with something other than gossip: --join takes the address of a node's --gossip listener, not its app, admin or gRPC one)"
	}
	return joinHint
}

// joinPatience is how long a node keeps trying to join before it gives up:
// seeds may start later than it, but not much later.
const joinPatience = 2 * time.Minute

// controlInterval is how often the meta leader reconciles membership and
// every node reconciles its shard groups with the map.
const controlInterval = 250 * time.Millisecond

// metaTiming is QuietTiming with a short CommitTimeout: every node acts on
// the map, and a node that restarts learns which of its meta log entries
// are committed — the map it starts its shards from — only from the
// leader's next AppendEntries. Heartbeats do not carry the commit index,
// and with a 5 s CommitTimeout that made a restarted node wait 5–10 s to
// become ready. One group's appends twice a second cost nothing measurable.
func metaTiming(c *raft.Config) {
	raftstore.QuietTiming(c)
	c.CommitTimeout = 500 * time.Millisecond
}

// controlIdleInterval is the control loop's period while every shard this
// node leads has the configuration the map wants and every replica it
// should run is running: only slow work (registering nodes, healing,
// leader balancing) is left, and a map change wakes the loop at once.
const controlIdleInterval = time.Second

// cluster is what a node runs in cluster mode: the gRPC listener (Raft of
// every group, forwarding), gossip membership, the meta group holding the
// cluster map, the shard groups the map gives this node, and the router.
type cluster struct {
	n       *Node
	self    placement.NodeID
	advGRPC string

	grpcSrv *grpc.Server
	fwdSrv  *forwardServer // registered on grpcSrv
	trans   *raftstore.Transport
	members *placement.Membership
	// gossipMeta is what this node gossips about itself; rememberCluster
	// (on the reconcile goroutine) adds the cluster ID once it is known.
	gossipMeta placement.NodeMeta
	metaFSM    *placement.FSM
	meta       *raftstore.Group

	identity identity // what the data dir says about this node
	// stopping is set when a planned stop begins (handOff).
	stopping atomic.Bool
	// joinErr is the last failed attempt to join, while the node retries:
	// /readyz gives it as the reason.
	joinErr atomic.Pointer[error]
	// duplicateID is the conflict while gossip refuses this node because
	// another live process uses its ID (duplicateWatch), for /readyz.
	duplicateID atomic.Pointer[error]
	// restarted is set, before the cluster's goroutines start, when the
	// data dir held a meta log: the node rejoins rather than forms.
	restarted bool
	// firstStartWait says why a node without state has not started its
	// meta group yet (firststart.go), for /readyz.
	firstStartWait atomic.Pointer[string]
	// formationWarned is the last formationMismatch the meta leader
	// logged, so that it logs each once.
	formationWarned atomic.Pointer[string]
	// removed says why this node no longer belongs to the cluster
	// (removed.go), for /readyz; nil while it does.
	removed atomic.Pointer[string]
	// removedHere is set when the map this node holds says it was
	// removed (it runs on, and its readiness says what to do: removedAdvice).
	removedHere atomic.Bool
	// notRemovedYet is set, for a node restarted from a data dir of a
	// cluster, until it has learnt that it was not removed while it was
	// away (watchRemoval): its own map cannot tell, and it must not be
	// ready on the strength of that map meanwhile.
	notRemovedYet atomic.Bool
	// beenReady is set the first time ready reports the node ready; from
	// then on a shard changing leader does not make it unready
	// (leaderChangeGrace).
	beenReady atomic.Bool

	mu     sync.Mutex
	groups map[int]*localShard // shards with a replica on this node
	hints  map[int]string      // shard → leader node ID, from NOT_LEADER answers
	// handedOff is when this node last tried to hand a shard's leadership
	// to another voter (balanceLeaders), so it does not retry at once.
	handedOff map[int]time.Time
	mapSeen   placement.Map
	// leftovers are the shards whose data is on disk here while this node
	// runs no replica of them (reclaim.go).
	leftovers map[int]*leftover

	healer healer // on the meta leader: since when nodes have been dead

	elect *elector // forces elections where no leader is alive (elect.go)
	// fenceKick asks the fence loop to look at once (fence.go).
	fenceKick chan struct{}
	// rejoinKick asks the rejoin loop to look at once (rejoin.go): the
	// meta group of a restarted node has started.
	rejoinKick chan struct{}
}

// localShard is a replica of a shard on this node.
type localShard struct {
	group *raftstore.Group
	shard *shard
	stop  context.CancelFunc
	// catchUp follows the replica this node, leading the shard, waits on
	// to catch up (reconcileConfig; owned by the control loop).
	catchUp catchUpTrack
	// leftConfirmed: a leader confirmed that the group's committed
	// configuration leaves this node out (confirmLeft) while the map's
	// shard had version leftConfirmed-1 (0: never), checked at most once
	// every reclaimInterval (nextLeftCheck, Unix ns) and one at a time
	// (checkingLeft).
	leftConfirmed atomic.Uint64
	checkingLeft  atomic.Bool
	nextLeftCheck atomic.Int64
}

// identity is what a data dir records about the node that owns it.
type identity struct {
	NodeID    string `json:"node_id"`
	ClusterID string `json:"cluster_id,omitempty"`
	// DataID is random, made with the data dir: the map records it, so a
	// node back under its ID with a new data dir is told apart (firststart.go).
	DataID string `json:"data_id,omitempty"`
}

// checkIdentity binds a data dir to one node ID: a data dir of another node
// (or of dev mode) is refused rather than silently reused.
func checkIdentity(dir, nodeID string) (identity, error) {
	path := filepath.Join(dir, "node.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(filepath.Join(dir, "pebble")); serr == nil {
			return identity{}, fmt.Errorf("%w: %s holds data but no node identity (node.json): if it is node %s's data dir and node.json was lost, restore the file; if it is a dev-mode data dir, give node %s an empty one", ErrDataDirMismatch, dir, nodeID, nodeID)
		}
		id := identity{NodeID: nodeID, DataID: newRandomID()}
		return id, writeIdentity(dir, id)
	}
	if err != nil {
		return identity{}, fmt.Errorf("reading %s: %w", path, err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil {
		return identity{}, fmt.Errorf("%w: %s is corrupt (%v): it holds the node's ID, its cluster's and its data dir's. %s", ErrNodeStateLost, path, err, lostStoreAdvice(nodeID))
	}
	if id.NodeID != nodeID {
		return identity{}, fmt.Errorf("%w: %s belongs to node %q, not %q", ErrDataDirMismatch, dir, id.NodeID, nodeID)
	}
	if id.DataID == "" { // a data dir from before data dir IDs
		id.DataID = newRandomID()
		return id, writeIdentity(dir, id)
	}
	return id, nil
}

// checkStoreKept refuses a data dir whose node has been a member of a
// cluster (node.json names it) but whose store is gone: a new empty store
// would forget the node's Raft log, term and votes while the groups still
// count it as a voter, and a data dir without its store is not caught by
// the data dir ID check, which lives in node.json (found by QA).
func checkStoreKept(dir string, id identity) error {
	if id.ClusterID == "" {
		return nil // never saw a map: its store held nothing yet
	}
	if has, err := holdsStore(dir); has || err != nil {
		return err
	}
	return fmt.Errorf("%w: %s says node %s is a member of cluster %s, but its store (pebble/) is gone: with its Raft log, term and votes lost, its replicas could help elect a leader that lacks acknowledged writes. %s",
		ErrNodeStateLost, filepath.Join(dir, "node.json"), id.NodeID, id.ClusterID, lostStoreAdvice(id.NodeID))
}

// holdsStore reports whether dir has a store: a pebble/ with anything in it.
func holdsStore(dir string) (bool, error) {
	entries, err := os.ReadDir(filepath.Join(dir, "pebble"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("reading %s: %w", filepath.Join(dir, "pebble"), err)
	}
	return len(entries) > 0, nil
}

// lostStoreAdvice is what to do about a node whose store is lost or
// damaged; nodeID is "" in dev mode.
func lostStoreAdvice(nodeID string) string {
	if nodeID == "" {
		return "Restore the data dir from a backup, or start roost dev with an empty one"
	}
	return fmt.Sprintf("Restore the data dir from a backup, or let the cluster replace the node (it re-creates a dead node's replicas after dead_node_grace; then `roost remove %s`) and start it with a new --id and an empty data dir", nodeID)
}

func writeIdentity(dir string, id identity) error {
	b, _ := json.Marshal(id)
	// Synced, as layout.json (checkLayout).
	return renameio.WriteFile(filepath.Join(dir, "node.json"), b, 0o644)
}

// advertised replaces the host of a listener address with the advertised host.
func advertised(listen net.Addr, host string) string {
	h, port, _ := net.SplitHostPort(listen.String())
	if host != "" {
		h = host
	}
	return net.JoinHostPort(h, port)
}

// startCluster brings up everything cluster mode needs. It returns before
// the cluster has formed: the meta group and shards start in the background
// as the map arrives (/readyz tells when this node can serve).
func (n *Node) startCluster(ctx, runCtx context.Context, id identity) error {
	c := &cluster{n: n, self: placement.NodeID(n.cfg.NodeID), identity: id, groups: make(map[int]*localShard), fenceKick: make(chan struct{}, 1), rejoinKick: make(chan struct{}, 1), hints: make(map[int]string),
		handedOff: make(map[int]time.Time), leftovers: make(map[int]*leftover)}
	n.cluster = c
	n.rejoins = id.ClusterID
	onDisk, err := n.store.Groups()
	if err != nil {
		return fmt.Errorf("listing the groups on disk: %w", err)
	}
	c.noteLeftovers(onDisk)
	// Before the gRPC server: Member answers from the meta FSM.
	c.metaFSM = placement.NewFSM()
	c.advGRPC = advertised(n.grpcLn.Addr(), n.cfg.Advertise)
	// Every gRPC server and client of the node is built from n.peerTLS,
	// so none of them can be left plaintext when TLS is on.
	c.elect = newElector(c.self, c.electedGroups, c.aliveIDs, func(msg string, args ...any) { n.log.Info(msg, args...) })
	c.trans = raftstore.NewTransport(raftstore.TransportConfig{LocalAddr: raft.ServerAddress(c.advGRPC), Faults: n.faults,
		DialOptions: raftDialOptions(n.peerTLS), PeerLost: c.peerLost, HeartbeatWindow: raftstore.QuietHeartbeatWindow, NoPipelines: n.noPipelines})
	// No grpc.MaxConcurrentStreams, on purpose: gRPC's client queues the
	// streams over the cap instead of failing them, and a peer legitimately
	// opens a Raft pipeline per group it leads here (up to 4,096) and a
	// stream per tunnelled WebSocket, without bound (docs/security.md).
	c.grpcSrv = grpc.NewServer(append(n.peerTLS.grpcServerOptions(n.log), keepaliveServerOptions(n.serverKeepalive)...)...)
	c.trans.Register(c.grpcSrv)
	c.fwdSrv = &forwardServer{m: n.manager, status: c.groupStatus, member: c.member}
	proto.RegisterForwardServer(c.grpcSrv, c.fwdSrv)
	n.manager.forwarder = newForwarder(forwarderDialOptions(n.peerTLS)...)
	n.manager.forwarder.faults, n.manager.forwarder.local = n.faults, raft.ServerAddress(c.advGRPC)
	n.manager.forwarder.heard = func(addr string) { c.trans.MarkHeard(raft.ServerAddress(addr)) }
	n.manager.forwarder.unreachable = func(addr string) { c.trans.MarkUnreachable(raft.ServerAddress(addr)) }
	n.manager.forwarder.dialer = n.forwardDialer
	n.manager.forwarder.metrics = n.metrics
	n.manager.router = c

	gossipHost, gossipPort, err := splitPort(n.cfg.GossipAddr)
	if err != nil {
		return err
	}
	mcfg := placement.DefaultMembershipConfig(c.self)
	mcfg.BindAddr, mcfg.BindPort = gossipHost, gossipPort
	if n.cfg.Advertise != "" {
		mcfg.AdvertiseAddr = n.cfg.Advertise
	}
	mcfg.SecretKey = n.cfg.GossipKey
	mcfg.DeadNodeReclaimTime = deadNodeReclaim(n.cfg.DeadNodeGrace)
	mcfg.Meta = placement.NodeMeta{GRPCAddr: c.advGRPC, HTTPAddr: advertised(n.appLn.Addr(), n.cfg.Advertise), AdminAddr: advertised(n.adminLn.Addr(), n.cfg.Advertise),
		DataID: id.DataID, ClusterID: id.ClusterID, Shards: n.cfg.Shards, IDKey: durable.KeyFingerprint(n.cfg.IDKey),
		BootstrapExpect: n.cfg.BootstrapExpect, Replicas: n.cfg.Replicas}
	c.gossipMeta = mcfg.Meta
	mcfg.Logger = n.log
	if n.faults != nil {
		self := raft.ServerAddress(net.JoinHostPort(gossipHost, strconv.Itoa(gossipPort)))
		n.faults.Alias(self, raft.ServerAddress(c.advGRPC))
		mcfg.Cut = func(peer string) bool { return n.faults.Drops(self, raft.ServerAddress(peer)) }
	}
	if c.members, err = placement.Start(mcfg); err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	// Served only now: the Member RPC reads gossip (c.members), and a peer
	// asks as soon as it sees this node; until then its calls are refused
	// and retried. A start that fails before this closes the listener
	// (closeListeners).
	go c.grpcSrv.Serve(n.grpcLn)

	// The meta group: every node runs it (the first BootstrapExpect as
	// voters, later ones as non-voters the leader adds), so every node has
	// the map locally.
	hasState, err := n.store.LogStore(metaGroup).LastIndex()
	if err != nil {
		return err
	}
	c.restarted = hasState > 0
	c.notRemovedYet.Store(id.ClusterID != "")
	n.wg.Add(5)
	go func() {
		defer n.wg.Done()
		c.run(runCtx, c.restarted)
	}()
	go func() {
		defer n.wg.Done()
		c.watchRemoval(runCtx, id.ClusterID) // id: c.identity is run's to update
	}()
	go func() {
		defer n.wg.Done()
		c.rejoin(runCtx)
	}()
	go func() {
		defer n.wg.Done()
		c.elect.run(runCtx)
	}()
	go func() {
		defer n.wg.Done()
		c.runFences(runCtx, c.fenceKick)
	}()
	return nil
}

func splitPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	var port int
	if _, err := fmt.Sscanf(p, "%d", &port); err != nil {
		return "", 0, fmt.Errorf("port of %q: %v", addr, err)
	}
	return h, port, nil
}

// run joins the cluster, starts the meta group and then reconciles until ctx ends.
func (c *cluster) run(ctx context.Context, hasMetaState bool) {
	if len(c.n.cfg.Join) > 0 {
		if hasMetaState {
			// A node of a cluster that exists needs no seed to serve: its
			// map names the other nodes, and rejoin reaches them. Waiting
			// for a seed that is down kept such a node from serving, and
			// with it the shards it makes a quorum of.
			c.n.wg.Add(1)
			go func() {
				defer c.n.wg.Done()
				c.joinSeeds(ctx, false)
			}()
		} else if !c.joinSeeds(ctx, true) {
			return
		}
	}
	var bootstrap []raft.Server
	if !hasMetaState {
		var ok bool
		if bootstrap, ok = c.firstStart(ctx); !ok {
			return
		}
		c.firstStartWait.Store(nil)
	}
	var fsm raft.FSM = c.metaFSM
	if c.n.metaFSMWrap != nil {
		fsm = c.n.metaFSMWrap(fsm)
	}
	g, err := c.n.store.StartGroup(raftstore.GroupConfig{
		ID: metaGroup, LocalID: raft.ServerID(c.self), Transport: c.trans.Group(metaGroup),
		Bootstrap: bootstrap, FSM: fsm, Tune: metaTiming,
	})
	if err != nil {
		c.n.log.Error("starting the meta group", "err", err)
		return
	}
	c.mu.Lock()
	c.meta = g
	c.mu.Unlock()
	if hasMetaState {
		// With no map yet, its voters are how it finds gossip
		// (gossipOfMetaVoter): at once, not at the next rejoin tick.
		select {
		case c.rejoinKick <- struct{}{}:
		default:
		}
	}

	t := time.NewTimer(controlInterval)
	defer t.Stop()
	announcedReady := false
	for {
		if !announcedReady {
			if ok, _ := c.ready(); ok {
				announcedReady = true
				c.n.log.Info("node ready: /readyz answers 200", "shards", len(c.metaFSM.Map().ShardMap))
			}
		}
		if g.Raft().State() == raft.Leader {
			c.controlMeta(ctx, g.Raft())
			c.n.admin.resumeRecorded()
			c.heal(g.Raft())
			c.growMeta(ctx, g.Raft())
		} else {
			c.healer.forget()
		}
		settled := c.reconcileShards(ctx)
		moved := c.balanceLeaders(c.metaFSM.Map())
		if settled && !moved {
			t.Reset(controlIdleInterval)
		} else {
			t.Reset(controlInterval)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.metaFSM.Watch():
		}
	}
}

// joinLogInterval spaces joinSeeds' lines about failed tries.
const joinLogInterval = 15 * time.Second

// joinSeeds joins the gossip of the nodes --join names, retrying every
// second (seeds may start after this node) and reports whether it did.
// A node that must join (it has no state: the seeds are how it finds the
// cluster) gives up after joinPatience, failing the node, and shows the
// last failure in /readyz meanwhile; one that need not stops quietly once
// gossip shows it another node, or after joinPatience. Either way a seed
// that says another live node has this node's ID fails the node.
func (c *cluster) joinSeeds(ctx context.Context, must bool) bool {
	log := c.n.log
	deadline := time.Now().Add(joinPatience)
	// One line every joinLogInterval, not one a try (120 over the
	// patience; found by QA); /readyz shows the last failure meanwhile.
	retries := loglimit.New(joinLogInterval, 1, time.Now)
	for {
		_, err := c.members.Join(c.n.cfg.Join)
		if err == nil {
			c.joinErr.Store(nil)
			return true
		}
		if errors.Is(err, placement.ErrOtherIDKey) {
			c.refuseFirstStart(must, fmt.Errorf("%w: joining the cluster through %v: %w", ErrIDKeyMismatch, c.n.cfg.Join, err))
			return false
		}
		if errors.Is(err, placement.ErrOtherCluster) {
			if must && c.identity.ClusterID == "" { // must: run's goroutine, which owns c.identity
				// A data dir of no cluster: the flags are at fault, not the dir.
				c.refuseFirstStart(must, fmt.Errorf("%w: joining the cluster through %v: %w (give this node the cluster's --shards, or --join a node of its own cluster)",
					ErrClusterMismatch, c.n.cfg.Join, err))
				return false
			}
			c.refuseFirstStart(must, fmt.Errorf("%w: joining the cluster through %v: %w (give this node the cluster's --shards and an empty data dir, or --join a node of its own cluster)",
				ErrDataDirMismatch, c.n.cfg.Join, err))
			return false
		}
		if errors.Is(err, placement.ErrDuplicateNodeID) {
			if !must {
				// This node restarted at a new address before gossip
				// declared its old self dead (a crash), or a copy of its
				// data dir runs: rejoin offers the new address again
				// until gossip takes it (unannounced), and duplicateWatch
				// stops the node if the ID stays taken.
				log.Info("gossip: --join refused this node's ID, which gossip still holds alive elsewhere; rejoining until it is declared dead", "join", c.n.cfg.Join, "err", err)
				return false
			}
			c.refuseFirstStart(must, fmt.Errorf("joining the cluster through %v: %w", c.n.cfg.Join, err))
			return false
		}
		if must && time.Now().After(deadline) {
			c.refuseFirstStart(must, fmt.Errorf("joining the cluster through %v: %w%s", c.n.cfg.Join, err, joinHintFor(err)))
			return false
		}
		if !must {
			if len(c.aliveMembers()) > 1 || time.Now().After(deadline) {
				log.Info("gossip: not joined through --join; the cluster's nodes are reached through its map", "join", c.n.cfg.Join, "err", err)
				return false
			}
		} else {
			c.joinErr.Store(&err)
			if ok, held, _ := retries.Allow("join"); ok {
				log.Warn("joining the cluster; retrying every second"+joinHintFor(err), "join", c.n.cfg.Join, "err", err, "gives_up_in", time.Until(deadline).Round(time.Second), "failures_not_logged", held)
			}
		}
		if !sleepCtx(ctx, time.Second) {
			if must && c.n.newDataDir != dataDirHeld {
				// Stopped before it ever met the cluster: nothing holds
				// this node's ID, so the dir goes back as it was, as
				// after the refusal that joinPatience would have brought.
				c.n.undoDataDir.Store(true)
			}
			return false
		}
	}
}

// refuseFirstStart fails the node with err. A node that holds no cluster
// state yet (noState) and started on an absent or empty data dir also has
// Close put that dir back as it was: a refused start changes nothing, and
// the dir is not left bound to this ID or shard count.
func (c *cluster) refuseFirstStart(noState bool, err error) {
	if noState && c.n.newDataDir != dataDirHeld {
		c.n.undoDataDir.Store(true)
		err = fmt.Errorf("%w (%s is left as it was)", err, c.n.cfg.DataDir)
	}
	c.fail(err)
}

// aliveMembers returns the alive gossip members sorted by ID.
func (c *cluster) aliveMembers() []placement.Member {
	var alive []placement.Member
	for _, m := range c.members.Members() {
		if m.Alive {
			alive = append(alive, m)
		}
	}
	sort.Slice(alive, func(i, j int) bool { return alive[i].ID < alive[j].ID })
	return alive
}

// controlMeta runs on the meta leader: it writes the first map, registers
// nodes that gossip knows and the map does not, and adds them to the meta
// group as non-voters so they receive the map.
func (c *cluster) controlMeta(ctx context.Context, r *raft.Raft) {
	m := c.metaFSM.Map()
	alive := c.aliveMembers()
	if m.ClusterID == "" {
		conf := r.GetConfiguration()
		if conf.Error() != nil {
			return
		}
		var nodes []placement.Node
		for _, s := range conf.Configuration().Servers {
			for _, mem := range alive {
				if string(mem.ID) == string(s.ID) {
					nodes = append(nodes, memberNode(mem))
				}
			}
		}
		if c.n.holdFirstMap != nil && c.n.holdFirstMap() {
			return
		}
		// The first map takes this node's replica count, and waits for
		// its bootstrap-expect: a founder restarted with other settings
		// (its own are read again, though it has agreed to the others'
		// by now) must not decide alone.
		if why := c.formationMismatch(conf.Configuration().Servers); why != "" {
			if last := c.formationWarned.Swap(&why); last == nil || *last != why {
				c.n.log.Warn("not writing the first cluster map", "reason", why)
			}
			return
		}
		// Every initial voter, however many this node's bootstrap-expect
		// says: one restarted with another that cannot gossip with the
		// others (another gossip key) compared itself with no one.
		if len(nodes) < max(len(conf.Configuration().Servers), c.n.cfg.BootstrapExpect) {
			return // wait until gossip shows every initial voter
		}
		initial := placement.InitialMap(newRandomID(), nodes, c.n.cfg.Shards, c.n.cfg.Replicas)
		c.applyMeta(r, placement.Command{Bootstrap: &placement.BootstrapCmd{Map: initial}})
		return
	}
	conf := r.GetConfiguration()
	if conf.Error() != nil {
		return
	}
	if nd, ok := m.Nodes[c.self]; ok && nd.State == placement.NodeRemoved {
		// This node was removed while it leads the meta group: it hands
		// the leadership to another voter, promoting a spare first if it
		// is the only voter, and the new leader takes it out of the group.
		// Waiting for its operator's SIGTERM left a lone voter's cluster
		// without a meta leader for good.
		servers := conf.Configuration().Servers
		if !slices.ContainsFunc(servers, func(s raft.Server) bool { return s.Suffrage == raft.Voter && s.ID != raft.ServerID(c.self) }) {
			c.promoteSpareMetaVoter(r, servers, c.aliveIDs())
			return
		}
		// To a voter that answers (handOverTarget): raft's own pick may be
		// a dead one.
		alive, applied := c.aliveIDs(), r.AppliedIndex()
		target, ok := handOverTarget(servers, raft.ServerID(c.self), func(id raft.ServerID) bool {
			nd, known := m.Nodes[placement.NodeID(id)]
			return known && nd.State != placement.NodeRemoved && alive[nd.ID] && c.caughtUp(ctx, nd, metaGroup, applied)
		})
		if !ok {
			c.n.log.Debug("this node was removed, but no other meta voter is alive and caught up to take the leadership")
			return
		}
		c.n.log.Info("this node was removed: handing the meta leadership over", "to", target.ID)
		if err := r.LeadershipTransferToServer(target.ID, target.Address).Error(); err != nil {
			c.n.log.Warn("handing the meta leadership over", "err", err)
		}
		return
	}
	inRaft := map[raft.ServerID]raft.ServerAddress{}
	for _, s := range conf.Configuration().Servers {
		inRaft[s.ID] = s.Address
		// A removed node leaves the meta group too, so that it counts
		// towards no quorum. Never this node: it hands the leadership
		// over first (a removed node is stopped by its operator).
		// A removed voter leaves only if the voters left that gossip sees
		// alive make a quorum without it (removalKeepsLiveQuorum): with
		// another voter dead and no spare, taking it out of three left two
		// voters of which one answers, and the meta group could commit
		// nothing — not even that removal. It stays a voter until the dead
		// one is back or replaced.
		if nd, ok := m.Nodes[placement.NodeID(s.ID)]; ok && nd.State == placement.NodeRemoved && s.ID != raft.ServerID(c.self) {
			if s.Suffrage == raft.Voter {
				servers := conf.Configuration().Servers
				alive := c.aliveIDs()
				if c.promoteSpareMetaVoter(r, servers, alive) {
					cf := r.GetConfiguration()
					if cf.Error() != nil {
						return
					}
					servers = cf.Configuration().Servers
				}
				if !removalKeepsLiveQuorum(servers, s.ID, answering(alive, servers, c.trans.PeerReachable)) {
					c.n.log.Debug("keeping a removed node as a meta voter: the voters alive without it are not a quorum", "node", s.ID)
					continue
				}
			}
			c.n.log.Info("taking a removed node out of the meta group", "node", s.ID)
			r.RemoveServer(s.ID, 0, membershipTimeout)
			return
		}
	}
	mapMeta := placement.NodeMeta{ClusterID: m.ClusterID, Shards: m.Shards, IDKey: c.gossipMeta.IDKey}
	for _, mem := range alive {
		if ok, _ := mapMeta.Compatible(mem.Meta); !ok {
			continue // gossip refuses it too; it fails on its own (joinSeeds)
		}
		node := memberNode(mem)
		cur, known := m.Nodes[node.ID]
		if known && cur.State == placement.NodeRemoved {
			continue // removed for good: not re-registered, not given the map
		}
		if known && cur.DataID != "" && node.DataID != "" && node.DataID != cur.DataID {
			// Back with another data dir: it refuses to start
			// (firststart.go); meanwhile it is not given the map.
			continue
		}
		if !known || cur.GRPCAddr != node.GRPCAddr || cur.HTTPAddr != node.HTTPAddr || cur.AdminAddr != node.AdminAddr || cur.GossipAddr != node.GossipAddr ||
			cur.DataID == "" && node.DataID != "" {
			if known {
				node.State = cur.State
			} else {
				c.n.log.Info("registering a new node in the cluster map", "node", node.ID, "grpc", node.GRPCAddr)
			}
			c.applyMeta(r, placement.Command{UpsertNode: &placement.UpsertNodeCmd{Node: node}})
		}
		// Added as a non-voter if new; one back at another address gets
		// it (AddNonvoter changes no member's suffrage, only its address),
		// or the group would dial the old one for good.
		if addr, in := inRaft[raft.ServerID(mem.ID)]; !in || addr != raft.ServerAddress(mem.Meta.GRPCAddr) {
			if in {
				c.n.log.Info("a meta member is back at another address", "node", mem.ID, "was", addr, "now", mem.Meta.GRPCAddr)
			} else {
				c.n.log.Info("adding a node to the meta group as a non-voter, to receive the map", "node", mem.ID)
			}
			r.AddNonvoter(raft.ServerID(mem.ID), raft.ServerAddress(mem.Meta.GRPCAddr), 0, 5*time.Second)
		}
	}
}

func memberNode(m placement.Member) placement.Node {
	return placement.Node{ID: m.ID, GRPCAddr: m.Meta.GRPCAddr, HTTPAddr: m.Meta.HTTPAddr, AdminAddr: m.Meta.AdminAddr, GossipAddr: m.Addr, State: placement.NodeActive,
		DataID: m.Meta.DataID}
}

func (c *cluster) applyMeta(r *raft.Raft, cmd placement.Command) {
	b, err := placement.EncodeCommand(cmd)
	if err != nil {
		c.n.log.Error("encoding a meta command", "err", err)
		return
	}
	f := r.Apply(b, 5*time.Second)
	if err := f.Error(); err != nil {
		c.n.log.Warn("meta command not applied", "err", err)
		return
	}
	raftstore.PublishCommits(r)
	if err, ok := f.Response().(error); ok && err != nil {
		c.n.log.Warn("meta command rejected", "err", err)
	}
}

// newRandomID makes a cluster or data dir ID: 16 random hex digits.
func newRandomID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// reconcileShards starts the shard groups the map gives this node.
func (c *cluster) reconcileShards(ctx context.Context) (settled bool) {
	m := c.metaFSM.Map()
	if m.ClusterID == "" {
		return false
	}
	if err := c.checkClusterID(m); err != nil {
		c.fail(err)
		return false
	}
	if m.Shards != c.n.cfg.Shards {
		// Routing by another count would put objects in other shards
		// than the cluster does: two live instances of one object.
		c.fail(fmt.Errorf("%w: the cluster has %d shards, this node was started with %d; start it with --shards %d and an empty data dir",
			ErrDataDirMismatch, m.Shards, c.n.cfg.Shards, m.Shards))
		return false
	}
	c.rememberCluster(m)
	settled = true
	for _, s := range m.ShardMap {
		i := int(s.ID)
		c.mu.Lock()
		ls, running := c.groups[i]
		c.mu.Unlock()
		if running && ls.group.Raft().State() == raft.Leader {
			settled = c.reconcileConfig(ctx, ls, s, m) && settled
		}
		if !slices.Contains(s.Replicas, c.self) {
			switch {
			case running:
				settled = false
				c.stopIfRemoved(ctx, i, ls, m, s)
			case s.Version != placement.InitialShardVersion && c.takeLeftoverFromStart(i):
				// The data of a replica this node ran before it
				// restarted: the group may still count it as a voter
				// (its removal waits for the replica replacing it,
				// or for a quorum without it), and a voter that does
				// not run can leave the group without a live quorum
				// for good. It runs again, and stops as one that
				// never stopped would (stopIfRemoved).
				settled = false
				if err := c.startShard(ctx, m, s); err != nil {
					c.n.log.Error("starting a shard this node held before it restarted", "shard", i, "err", err)
				}
			default:
				c.reclaim(ctx, m, s)
			}
			continue
		}
		if running {
			continue
		}
		settled = false
		if err := c.startShard(ctx, m, s); err != nil {
			c.n.log.Error("starting a shard", "shard", i, "err", err)
		}
	}
	return settled
}

// rememberCluster records the cluster ID in the data dir the first time the
// map is seen, and keeps the map for routing.
func (c *cluster) rememberCluster(m placement.Map) {
	c.mu.Lock()
	c.mapSeen = m
	c.mu.Unlock()
	if c.identity.ClusterID == "" {
		c.identity.ClusterID = m.ClusterID
		if err := writeIdentity(c.n.cfg.DataDir, c.identity); err != nil {
			c.n.log.Warn("recording the cluster ID in the data dir", "err", err)
		}
		// Gossip it, so that a node of another cluster is refused at
		// its join (placement.NodeMeta.Compatible).
		c.gossipMeta.ClusterID = m.ClusterID
		meta := c.gossipMeta
		go func() {
			if err := c.members.UpdateMeta(meta, 5*time.Second); err != nil {
				c.n.log.Debug("gossiping the cluster ID", "err", err)
			}
		}()
	}
}

// startShard starts this node's replica of s. The first replicas of the
// first map bootstrap the group together; a replica added later starts
// empty and waits for the leader to contact it.
func (c *cluster) startShard(ctx context.Context, m placement.Map, s placement.Shard) error {
	i := int(s.ID)
	gid := groupOf(i)
	if c.n.beforeJoiningShard != nil && s.Version != placement.InitialShardVersion {
		c.n.beforeJoiningShard(i)
	}
	var bootstrap []raft.Server
	if s.Version == placement.InitialShardVersion {
		for _, id := range s.Replicas {
			node, ok := m.Nodes[id]
			if !ok {
				return fmt.Errorf("replica %s of shard %d is not in the map", id, i)
			}
			bootstrap = append(bootstrap, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(node.GRPCAddr)})
		}
	}
	g, err := c.n.store.StartGroup(raftstore.GroupConfig{
		ID: gid, LocalID: raft.ServerID(c.self), Transport: c.trans.Group(gid), Bootstrap: bootstrap,
		Tune: raftstore.QuietTiming,
	})
	if err != nil {
		return err
	}
	sh := newShard(gid, g, c.n.cfg.MaxInflightPerShard, c.n.metrics)
	if c.n.applyWrap != nil {
		sh.raft = c.n.applyWrap(sh.raft)
	}
	sctx, cancel := context.WithCancel(ctx)
	sh.run(sctx, &c.n.wg)
	sh.watchLeadership(sctx, &c.n.wg, func() { c.n.manager.dropShard(sh) })
	newAlarmScheduler(c.n.manager, sh, c.n.store, c.n.alarms).run(sctx, &c.n.wg)
	c.mu.Lock()
	c.groups[i] = &localShard{group: g, shard: sh, stop: cancel}
	delete(c.leftovers, i) // its data is in use again
	c.mu.Unlock()
	return nil
}

// lostAvoidance is how long routing passes over a node the transport
// reported lost, unless it is heard again sooner: long enough for its
// shards' failover (about a second) and for gossip to declare it dead if
// it stays silent (a probe round, then memberlist's suspicion timeout of
// 4 s at its LAN timing), after which gone passes over it instead; short
// enough that a node heard only through the requests forwarded to it (it
// leads nothing this node follows) is not shunned for long once back.
const lostAvoidance = 10 * time.Second

// route implements router: the local shard if this node leads it, else
// the leader as best known, passing over nodes lately lost (lately).
func (c *cluster) route(i int) (*shard, peer, error) {
	c.mu.Lock()
	ls := c.groups[i]
	hint := c.hints[i]
	m := c.mapSeen
	c.mu.Unlock()
	if m.ClusterID == "" {
		return nil, peer{}, errNoMap
	}
	leader := ""
	if ls != nil {
		r := ls.group.Raft()
		if r.State() == raft.Leader {
			if c.stopping.Load() {
				// A leadership this node won after handOff (a peer's
				// leader spreading can move one here meanwhile) would
				// fail its commits when the groups shut down: re-route
				// instead, before anything runs.
				return nil, peer{}, errStopping
			}
			if !ls.shard.isFenced() {
				return ls.shard, peer{}, nil
			}
			// Fenced: cut off from a quorum of its voters, this node
			// serves nothing while raft's lease keeps it leader, and
			// the other replicas may have elected a leader already.
			// Route as a follower would (below), so that a forwarded
			// request is refused at once and its sender tries
			// elsewhere, instead of waiting here for shardWait.
		} else if _, id := r.LeaderWithID(); id != "" {
			leader = string(id)
		}
	}
	avoid := func(id string) bool { return c.passOver(m, placement.NodeID(id)) }
	if leader == "" || leader == string(c.self) || avoid(leader) {
		leader = hint
	}
	if leader == "" || leader == string(c.self) || avoid(leader) {
		// No better guess: try a replica, but none lately lost or gone.
		// When that leaves none, this node is cut off from the shard
		// (or the shard is down): a request sent into a connection
		// nothing answers on would end as of unknown outcome, where
		// refusing it here says that it did not run.
		leader = ""
		var passed []string
		if i < len(m.ShardMap) {
			for _, id := range m.ShardMap[i].Replicas {
				if id == c.self {
					continue
				}
				if !avoid(string(id)) {
					leader = string(id)
					break
				}
				passed = append(passed, string(id))
			}
		}
		if leader == "" && len(passed) > 0 {
			return nil, peer{}, fmt.Errorf("%w: shard %d has no live leader this node can reach: its other replicas (%s) were lately lost or are silent", errNotReady, i, strings.Join(passed, ", "))
		}
	}
	node, ok := m.Nodes[placement.NodeID(leader)]
	if !ok {
		return nil, peer{}, fmt.Errorf("%w: shard %d has no known leader", errNotReady, i)
	}
	return nil, peer{id: leader, addr: node.GRPCAddr}, nil
}

// passOver reports whether routing sends nothing to node id of map m:
// it was lately lost, or it is gone.
func (c *cluster) passOver(m placement.Map, id placement.NodeID) bool {
	return c.lately(m, id) || c.gone(m, id)
}

// gone reports whether neither the Raft transport nor gossip hears node id
// of map m (a node cut off by a partition that drops packets, or down).
// Unlike lately, this lasts as long as the silence does; gossip's view
// alone would not do, as it can lag a partition by seconds, nor the
// transport's alone, which never hears a node that leads no group this
// one follows.
func (c *cluster) gone(m placement.Map, id placement.NodeID) bool {
	nd, ok := m.Nodes[id]
	if !ok || c.trans.PeerAlive(raft.ServerAddress(nd.GRPCAddr)) {
		return false
	}
	return c.members != nil && !c.members.Alive(id)
}

// quorumLost implements quorumReporter from the map, gossip and the Raft
// transport: a replica gossip still counts alive that routing passes over
// (lately lost, or gone) cannot be reached from here either. Gossip lags
// a partition by seconds.
func (c *cluster) quorumLost(i int) string {
	c.mu.Lock()
	m := c.mapSeen
	c.mu.Unlock()
	if i < 0 || i >= len(m.ShardMap) {
		return ""
	}
	alive := c.aliveIDs()
	for _, id := range m.ShardMap[i].Replicas {
		if id != c.self && alive[id] && c.passOver(m, id) {
			delete(alive, id)
		}
	}
	return lostQuorum(m.ShardMap[i], alive)
}

// lostQuorum says which of s's replicas are down (not alive in gossip:
// from a node cut off from the others, those are its peers)
// when they leave too few for a quorum, and "" otherwise.
func lostQuorum(s placement.Shard, alive map[placement.NodeID]bool) string {
	var down []string
	for _, id := range s.Replicas {
		if !alive[id] {
			down = append(down, string(id))
		}
	}
	if len(s.Replicas) == 0 || len(s.Replicas)-len(down) > len(s.Replicas)/2 {
		return ""
	}
	return fmt.Sprintf("it has lost its quorum: %d of its %d replicas are down or cannot be reached from this node (%s)", len(down), len(s.Replicas), strings.Join(down, ", "))
}

// lately reports whether routing should pass over node id of map m: the
// transport reported it lost less than lostAvoidance ago and has not
// heard it since (Transport.LostWithin).
func (c *cluster) lately(m placement.Map, id placement.NodeID) bool {
	nd, ok := m.Nodes[id]
	return ok && c.trans.LostWithin(raft.ServerAddress(nd.GRPCAddr), lostAvoidance)
}

// observe implements router.
func (c *cluster) observe(i int, leaderHint string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// A hint naming a node lately lost comes from a replica that has not
	// seen the failover yet: rotate instead. (c.mu, then the transport's
	// liveness lock, a leaf.)
	m := c.mapSeen
	lately := func(id placement.NodeID) bool { return c.lately(m, id) }
	if leaderHint != "" && leaderHint != string(c.self) && !lately(placement.NodeID(leaderHint)) {
		c.hints[i] = leaderHint
		return
	}
	// No hint: rotate to the next replica on the next attempt, passing
	// over those lately lost unless every other is.
	if i >= len(m.ShardMap) {
		return
	}
	reps := m.ShardMap[i].Replicas
	cur := slices.Index(reps, placement.NodeID(c.hints[i]))
	next := ""
	for k := 1; k <= len(reps); k++ {
		id := reps[(cur+k+len(reps))%len(reps)]
		if id == c.self {
			continue
		}
		if next == "" {
			next = string(id)
		}
		if !lately(id) {
			next = string(id)
			break
		}
	}
	if next != "" {
		c.hints[i] = next
	}
}

// groupStatus answers GroupStatus for a group on this node.
func (c *cluster) groupStatus(req *proto.ForwardGroupStatusRequest) (*proto.ForwardGroupStatusResponse, error) {
	groupID := req.GroupId
	if c.stopping.Load() {
		// A node on its way out must not be chosen to take leadership over.
		return &proto.ForwardGroupStatusResponse{}, nil
	}
	var g *raftstore.Group
	c.mu.Lock()
	if groupID == uint64(metaGroup) {
		g = c.meta
	} else if ls, ok := c.groups[int(groupID)-1]; ok {
		g = ls.group
	}
	c.mu.Unlock()
	if g == nil {
		return &proto.ForwardGroupStatusResponse{}, nil
	}
	r := g.Raft()
	// The term and state come first: configCommitted needs this node to
	// have led, in one term, from before the configuration is read.
	term, state := r.CurrentTerm(), r.State()
	applied := r.AppliedIndex()
	st := withGroupConfig(r, &proto.ForwardGroupStatusResponse{Running: true, AppliedIndex: applied, LastIndex: r.LastIndex(), State: state.String(), ShardsLed: uint32(c.shardsLed())})
	if req.ConfirmConfig && state == raft.Leader {
		st.ConfigCommitted = configCommitted(r, term)
	}
	return st, nil
}

// shardsLed counts the shard groups this node leads now.
func (c *cluster) shardsLed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, ls := range c.groups {
		if ls.group.Raft().State() == raft.Leader {
			n++
		}
	}
	return n
}

// shardReplicas counts the shard groups running on this node.
func (c *cluster) shardReplicas() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.groups)
}

// leaderChangeGrace is how long a shard of a node that has been ready may
// be without a live leader before the node reports itself not ready. A
// leader change — a planned transfer (milliseconds, requests held and
// re-routed meanwhile) or a failover (under a second) — is not a reason
// for a load balancer to take every node of the cluster out; a shard
// whose election does not succeed, or a replica cut off from its leader,
// is.
const leaderChangeGrace = 2 * time.Second

// ready reports whether this node can serve: it has the map, and every
// shard has a leader somewhere that this node knows of (once the node has
// been ready, a shard may be without one for leaderChangeGrace).
func (c *cluster) ready() (ok bool, why string) {
	ok, why = c.readyNow(time.Now())
	if ok {
		c.beenReady.Store(true)
	}
	return ok, why
}

func (c *cluster) readyNow(now time.Time) (bool, string) {
	if p := c.removed.Load(); p != nil {
		if c.removedHere.Load() {
			return false, *p + c.removedAdvice()
		}
		return false, *p
	}
	if p := c.duplicateID.Load(); p != nil {
		return false, fmt.Sprintf("gossip refuses this node: %s (it stops if this lasts %s)", strings.Join(strings.Fields((*p).Error()), " "), c.n.duplicatePatience)
	}
	c.mu.Lock()
	m := c.mapSeen
	c.mu.Unlock()
	if m.ClusterID == "" {
		if p := c.joinErr.Load(); p != nil {
			// memberlist's errors span lines; a reason is one.
			return false, fmt.Sprintf("cannot join the cluster through %v: %s%s", c.n.cfg.Join, strings.Join(strings.Fields((*p).Error()), " "), joinHintFor(*p))
		}
		if p := c.firstStartWait.Load(); p != nil {
			return false, "not started yet: " + *p
		}
		if why := c.formationMismatch(c.metaServers()); why != "" {
			return false, "the cluster cannot form: " + why
		}
		return false, c.noMapYet()
	}
	for i := range m.ShardMap {
		if _, _, err := c.route(i); err != nil {
			return false, err.Error()
		}
		c.mu.Lock()
		ls := c.groups[i]
		c.mu.Unlock()
		// A replica the map no longer gives this node may never hear of its
		// removal; only replicas it is meant to hold speak for readiness.
		// Raft's own leader name outlives a dead leader by the quiet
		// timing's 30-60 s; the node's liveness view does not.
		if ls != nil && slices.Contains(m.ShardMap[i].Replicas, c.self) {
			if ls.shard.isFenced() {
				return false, fmt.Sprintf("shard %d: this node leads it but cannot reach a quorum of its replicas", i)
			}
			if _, alive := ls.group.LiveLeader(); !alive && !c.changingLeader(ls.group.ID(), now) {
				return false, fmt.Sprintf("shard %d has no live leader", i)
			}
		}
	}
	// Last: what else keeps the node from serving says more.
	if c.notRemovedYet.Load() {
		return false, "asking the other nodes whether this node was removed from the cluster while it was away"
	}
	return true, ""
}

// changingLeader reports whether a shard group of a node that has been
// ready has been without a live leader for less than leaderChangeGrace, as
// far as the elector has seen: it checks every electIdle, and at once when
// a peer is lost, so a leaderless spell is noticed within a second.
func (c *cluster) changingLeader(id raftstore.GroupID, now time.Time) bool {
	if !c.beenReady.Load() {
		return false
	}
	since, seen := c.elect.leaderlessSince(id)
	return !seen || now.Sub(since) < leaderChangeGrace
}

// deadNodeReclaim is how long after gossip declares a node dead a process
// at another address may take its ID (memberlist refuses it until then as
// a conflicting address): well inside grace (Config.DeadNodeGrace), so that
// a node restarted at a new address after a crash is back in gossip before
// the meta leader re-creates its replicas elsewhere. With the two equal, as
// they once were, the heal always won and the node came back empty.
func deadNodeReclaim(grace time.Duration) time.Duration {
	const most = 10 * time.Second
	if grace <= 0 { // no healing to race
		return most
	}
	return max(min(most, grace/3), time.Second)
}

// formationMismatch says how an alive node among founders (the meta
// group's configuration; with none, every node alive) was started with
// other formation settings than this one, "" if none was
// (formation.differs) or a node alive says it has a cluster (a node
// joining it uses neither setting).
func (c *cluster) formationMismatch(founders []raft.Server) string {
	own := formation{expect: c.n.cfg.BootstrapExpect, replicas: c.n.cfg.Replicas}
	alive := c.aliveMembers()
	for _, m := range alive {
		if m.Meta.ClusterID != "" {
			return "" // a cluster exists: a node joining it uses neither setting
		}
	}
	for _, m := range alive {
		if m.ID == c.self || len(founders) > 0 && !slices.ContainsFunc(founders, func(s raft.Server) bool { return string(s.ID) == string(m.ID) }) {
			continue
		}
		if why := own.differs(m); why != "" {
			return fmt.Sprintf("node %s %s: %s", m.ID, why, sameFormationAdvice)
		}
	}
	return ""
}

// metaServers is the meta group's configuration as this node's replica
// knows it, nil if it has none.
func (c *cluster) metaServers() []raft.Server {
	r := c.metaRaft()
	if r == nil {
		return nil
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	return f.Configuration().Servers
}

// noMapYet says why a node has no cluster map. A restarted node without
// a meta snapshot gets its map from the meta leader's first append, and
// the leader reaches it at the address its group knows; at a new address
// only gossip tells the leader, which the node reaches through --join, or
// through the meta voters its Raft log names (gossipOfMetaVoter).
func (c *cluster) noMapYet() string {
	if !c.restarted {
		return "waiting for the cluster to form (no cluster map yet)"
	}
	why := "no cluster map yet: waiting for the meta group's leader to reach this node"
	if len(c.n.cfg.Join) == 0 {
		why += " (if this node now runs at another address and none of the meta voters its Raft log names answers where it was, give --join)"
	}
	return why
}

// handOffQuiesce bounds how long a shard waits for its proposed commits
// before its leadership is handed over.
const handOffQuiesce = 500 * time.Millisecond

// transfer hands a shard's leadership over (to target, or to any voter if
// target is empty) without refusing writes: new requests are re-routed
// while it runs, and the commits already proposed finish first. It
// reports whether it started one: not while one of the shard is under way.
func (c *cluster) transfer(ls *localShard, target raft.Server) (started bool) {
	if !ls.shard.handingOff.CompareAndSwap(false, true) {
		return false // a transfer of this shard is under way
	}
	c.n.wg.Add(1)
	go func() {
		defer c.n.wg.Done()
		if err := c.transferQuiesced(ls, target); err != nil {
			c.n.log.Info("leadership transfer failed", "shard", ls.shard.id.String(), "to", target.ID, "err", err)
			if ls.group.Raft().State() == raft.Leader {
				// A target raft could not bring up to date in time may be
				// a follower whose replication, after failed sends, waits
				// for a new entry or CommitTimeout (30-60 s) to try
				// again (catchUpTrack): this entry is one.
				fenceGroup{ls.group}.Nudge()
			}
		}
	}()
	return true
}

// transferNow is transfer that waits for the outcome, for the admin API.
// A transfer of the shard already under way is raft's
// ErrLeadershipTransferInProgress.
func (c *cluster) transferNow(ls *localShard, target raft.Server) error {
	if !ls.shard.handingOff.CompareAndSwap(false, true) {
		return raft.ErrLeadershipTransferInProgress
	}
	return c.transferQuiesced(ls, target)
}

// transferQuiesced lets the shard's proposed commits finish (new requests
// re-route meanwhile), then transfers its leadership to target, or to
// any caught-up voter if target.ID is empty. The caller has set
// handingOff; it is cleared on return.
func (c *cluster) transferQuiesced(ls *localShard, target raft.Server) error {
	ls.shard.quiesce(handOffQuiesce)
	defer ls.shard.resume()
	losses := ls.shard.losses.Load()
	r := ls.group.Raft()
	var f raft.Future
	if target.ID == "" {
		f = r.LeadershipTransfer()
	} else {
		f = r.LeadershipTransferToServer(target.ID, target.Address)
	}
	err := c.awaitTransfer(ls.group, f, target)
	if err == nil {
		// Raft answers a transfer when its leader loop ends, before the
		// loss reaches LeaderCh: turns let in before followLeadership
		// drops the shard's instances would run on the ended term's
		// instances while the new leader serves the objects.
		ls.shard.awaitLoss(losses, handOffQuiesce)
	}
	return err
}

// defaultTransferGiveUp is how long a shard leader lets a leadership
// transfer run before it ends it (Node.transferGiveUp, awaitTransfer).
// A transfer takes one round of vote requests once the target has the
// leader's log, milliseconds; the bound stays under routeWait, so the
// requests held meanwhile wait it out rather than fail.
const defaultTransferGiveUp = 2 * time.Second

// errTransferEnded: a leadership transfer did not complete in time, and
// its leader ended it with an election of its own (awaitTransfer).
var errTransferEnded = errors.New("leadership transfer did not complete in time: ended with an election at the leader")

// awaitTransfer waits for f, a leadership transfer g's leader started. Raft
// refuses every Apply while a transfer runs, and ends one only when its
// leader steps down or after ElectionTimeout, 30 s with QuietTiming: a
// target that accepts the transfer (TimeoutNow) and then loses the network
// would leave the shard without writes, its requests refused after
// routeWait, for that long. So a transfer still running after
// n.transferGiveUp, to a target the transport cannot reach, is ended by an
// election at this leader (raftstore Group.EndTransfer), which it usually
// wins back at once; awaitTransfer then returns errTransferEnded, unless
// another replica won the leadership meanwhile. A transfer to a target
// that answers is only slow (catching up under load): it is left to
// finish, and ended only if the target stops answering. With no target
// named (raft picks one), any voter out of reach counts as the target.
func (c *cluster) awaitTransfer(g *raftstore.Group, f raft.Future, target raft.Server) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	t := time.NewTimer(c.n.transferGiveUp)
	defer t.Stop()
	stop := c.n.manager.ctx.Done()
	select {
	case err := <-done:
		return err
	case <-t.C:
	case <-stop:
		return errStopping
	}
	deposed := false
	for c.transferTargetAnswers(g, target) {
		if g.HeardNewerTerm() && c.quorumFollowsAnother(g) {
			deposed = true
			break
		}
		select {
		case err := <-done:
			return err
		case <-time.After(transferRecheck):
		case <-stop:
			return errStopping
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaderCheckTimeout)
	err := g.EndTransfer(ctx)
	cancel()
	if err != nil {
		// Raft's own timeout ends the transfer.
		c.n.log.Warn("ending a stalled leadership transfer", "group", g.ID().String(), "err", err)
	}
	// That timeout is 30 s with QuietTiming; a node that stops meanwhile
	// does not wait for it (its Close waits for this goroutine, and the
	// groups' shutdown, which ends the transfer, comes after).
	select {
	case err := <-done:
		if err != nil {
			return err
		}
	case <-stop:
		return errStopping
	}
	if _, id := g.Raft().LeaderWithID(); deposed || id != "" && id != raft.ServerID(c.self) {
		return nil // the transfer's election or another won
	}
	return fmt.Errorf("%w (after %s)", errTransferEnded, c.n.transferGiveUp)
}

// quorumFollowsAnother reports whether a quorum of g's voters, asked
// (LeaderCheck), follow a live leader other than this replica, which leads
// g: that leader was elected in a newer term, so this one is deposed.
//
// A transfer's target wins its election without this leader when the
// others' messages do not reach it (a one-way partition): it hears of the
// new term only in answers to its heartbeats (Group.HeardNewerTerm), and
// raft refuses, while the transfer runs, the barrier that would make it
// step down. Its transfer would run until raft's ElectionTimeout (30 s
// with QuietTiming), its writes refused. awaitTransfer then ends the
// transfer with an election here (Group.EndTransfer), which cannot win
// once a quorum has a newer leader: they voted in that leader's term or
// answer with a newer one. It only takes this replica out of leader state.
func (c *cluster) quorumFollowsAnother(g *raftstore.Group) bool {
	voters, err := g.Voters()
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaderCheckTimeout)
	defer cancel()
	self := raft.ServerAddress(c.advGRPC)
	answers, asked := c.elect.checkVoters(ctx, g, voters)
	n := 0
	for range asked {
		if a := <-answers; a.err == nil && a.alive && a.leader != "" && a.leader != self {
			n++
		}
	}
	return n >= len(voters)/2+1
}

// transferRecheck is how often awaitTransfer looks again at a slow
// transfer's target.
const transferRecheck = 250 * time.Millisecond

// transferTargetAnswers reports whether the transport reaches the target
// of g's transfer: target, or, if unnamed, every other voter of g.
func (c *cluster) transferTargetAnswers(g *raftstore.Group, target raft.Server) bool {
	if target.ID != "" {
		return c.trans.PeerReachable(target.Address)
	}
	cf := g.Raft().GetConfiguration()
	if cf.Error() != nil {
		return false
	}
	for _, s := range cf.Configuration().Servers {
		if s.Suffrage == raft.Voter && s.ID != raft.ServerID(c.self) && !c.trans.PeerReachable(s.Address) {
			return false
		}
	}
	return true
}

// peerLost is the transport's PeerLost: a peer's heartbeat stream broke
// or went silent, so the groups it led may have no live leader now, and
// requests forwarded to it would only wait for gRPC's keepalive.
func (c *cluster) peerLost(addr raft.ServerAddress, why error) {
	if c.stopping.Load() {
		return
	}
	c.elect.peerLost()
	select {
	case c.fenceKick <- struct{}{}:
	default:
	}
	// The raft transport and forwarding share the node's gRPC address.
	c.n.manager.forwarder.peerLost(string(addr))
	// Hints naming it would send every request for its shards to it until
	// a NOT_LEADER answer corrects them, which a frozen node never gives;
	// routing passes over it for a while (route, lately).
	c.mu.Lock()
	for id, nd := range c.mapSeen.Nodes {
		if nd.GRPCAddr == string(addr) {
			maps.DeleteFunc(c.hints, func(_ int, hint string) bool { return hint == string(id) })
		}
	}
	c.mu.Unlock()
	c.n.log.Info("peer lost: its groups' leaders here count as gone; the requests in flight to it failed", "peer", string(addr), "why", why)
}

// electedGroups is every group this node runs, for the elector.
func (c *cluster) electedGroups() []electedGroup {
	c.mu.Lock()
	defer c.mu.Unlock()
	groups := make([]electedGroup, 0, len(c.groups)+1)
	for _, ls := range c.groups {
		groups = append(groups, ls.group)
	}
	if c.meta != nil {
		groups = append(groups, c.meta)
	}
	return groups
}

// errStopping: this node is in a planned stop and serves no shard.
var errStopping = fmt.Errorf("%w: this node is stopping", errNotReady)

// handOff transfers the leadership of every group this node leads to
// another replica before a planned stop, so requests move over in
// milliseconds instead of waiting out an election timeout.
func (c *cluster) handOff(ctx context.Context) {
	c.stopping.Store(true)
	if c.trans != nil {
		c.trans.DeclineLeadership()
	}
	c.mu.Lock()
	var led []*raft.Raft
	var shards []*shard
	for _, ls := range c.groups {
		if r := ls.group.Raft(); r.State() == raft.Leader {
			led = append(led, r)
			shards = append(shards, ls.shard)
		}
	}
	if c.meta != nil && c.meta.Raft().State() == raft.Leader {
		led = append(led, c.meta.Raft())
		shards = append(shards, nil)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for i, r := range led {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sh := shards[i]
			var losses uint64
			if sh != nil {
				sh.quiesce(handOffQuiesce)
				losses = sh.losses.Load()
			}
			// A transfer whose target went silent after accepting it
			// would hold the stop up to raft's ElectionTimeout (30 s):
			// after transferGiveUp the node stops anyway, and the other
			// replicas elect a leader once they see it gone.
			f := r.LeadershipTransfer()
			ended := make(chan error, 1)
			go func() { ended <- f.Error() }()
			select {
			case err := <-ended:
				if err != nil {
					c.n.log.Debug("leadership transfer before stop", "err", err)
				} else if sh != nil {
					// As in transferQuiesced; and Close cancels
					// followLeadership next, which could end before
					// it drops the shard's instances.
					sh.awaitLoss(losses, handOffQuiesce)
				}
			case <-time.After(c.n.transferGiveUp):
				c.n.log.Debug("leadership transfer before stop did not complete", "after", c.n.transferGiveUp)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// close stops the cluster machinery; the caller then shuts the groups down
// and closes the store.
func (c *cluster) close() {
	if c.members != nil {
		c.members.Leave(time.Second)
		c.members.Shutdown()
	}
	c.mu.Lock()
	groups := make([]*raftstore.Group, 0, len(c.groups)+1)
	for _, ls := range c.groups {
		ls.stop()
		groups = append(groups, ls.group)
	}
	if c.meta != nil {
		groups = append(groups, c.meta)
	}
	c.mu.Unlock()
	for _, g := range groups {
		g.Shutdown()
	}
	// The transport first: its streams would hold GracefulStop up.
	if c.trans != nil {
		c.trans.Close()
	}
	if c.grpcSrv != nil {
		// Let forwarded requests in flight finish (they hold answers other
		// nodes wait for), but not for long. Not GracefulStop: it also
		// waits for the peers' long-lived streams to this node, which
		// only the peers end, so it always took its whole bound (2 s of
		// every node's Close).
		c.fwdSrv.waitAnswered(2 * time.Second)
		c.grpcSrv.Stop()
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
