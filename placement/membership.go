package placement

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/roostdb/roost/connlimit"
	"github.com/roostdb/roost/loglimit"
)

// Member is a gossip member as this node last heard of it.
type Member struct {
	ID    NodeID
	Addr  string // gossip address, ip:port
	Meta  NodeMeta
	Alive bool // false once gossip reports it failed or left
}

// EventKind says what an Event reports.
type EventKind uint8

const (
	// EventJoin: a member appeared or came back.
	EventJoin EventKind = iota + 1
	// EventLeave: a member left or was declared dead.
	EventLeave
	// EventUpdate: a member's meta changed.
	EventUpdate
	// EventConflict: another process claims a member's ID at another
	// address (Member is the claimant). See ErrDuplicateNodeID.
	EventConflict
)

func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventUpdate:
		return "update"
	case EventConflict:
		return "conflict"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event is a membership change. Events are hints, never authority: the
// cluster map decides what a node is; gossip only says who seems alive.
type Event struct {
	Kind   EventKind
	Member Member
}

// Membership is this node's view of the gossip cluster (hashicorp
// memberlist).
type Membership struct {
	cfg  MembershipConfig
	log  *slog.Logger
	list *memberlist.Memberlist
	del  *delegate

	mu        sync.Mutex
	members   map[NodeID]Member
	events    chan Event
	closed    bool
	selfDup   error     // set when another process claims this node's ID
	selfDupAt time.Time // when selfDup was last set
	dropped   atomic.Uint64
	rejected  atomic.Uint64 // merges refused (NotifyMerge)
	refusals  []refusal     // the last maxRefusals of them

	leaveOnce sync.Once
	shutOnce  sync.Once
}

// Start starts gossip on cfg's address. It does not contact anyone: call
// Join with the addresses of existing members.
func Start(cfg MembershipConfig) (*Membership, error) {
	if cfg.BindAddr == "" {
		cfg.BindAddr = "0.0.0.0"
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	meta, _ := cfg.Meta.encode()
	m := &Membership{
		cfg:     cfg,
		log:     cfg.Logger,
		members: make(map[NodeID]Member),
		events:  make(chan Event, orDefault(cfg.EventBuffer, 256)),
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	m.log = m.log.With("component", "gossip")

	mc := memberlist.DefaultLANConfig()
	mc.Name = string(cfg.NodeID)
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertisePort = cfg.BindPort
	if cfg.AdvertiseAddr != "" {
		ip, err := resolveIP(cfg.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("%w: advertise address: %v", ErrInvalidConfig, err)
		}
		mc.AdvertiseAddr = ip
		if cfg.AdvertisePort != 0 {
			mc.AdvertisePort = cfg.AdvertisePort
		}
	}
	if len(cfg.SecretKey) > 0 {
		mc.SecretKey = slices.Clone(cfg.SecretKey)
	}
	setDur(&mc.ProbeInterval, cfg.ProbeInterval)
	setDur(&mc.ProbeTimeout, cfg.ProbeTimeout)
	setDur(&mc.GossipInterval, cfg.GossipInterval)
	setDur(&mc.PushPullInterval, cfg.PushPullInterval)
	setDur(&mc.TCPTimeout, cfg.TCPTimeout)
	setDur(&mc.GossipToTheDeadTime, cfg.GossipToTheDeadTime)
	setDur(&mc.DeadNodeReclaimTime, cfg.DeadNodeReclaimTime)
	if cfg.SuspicionMult > 0 {
		mc.SuspicionMult = cfg.SuspicionMult
	}
	mc.Logger = log.New(newLogWriter(m.log), "", 0)
	d := &delegate{m: m, meta: meta, selfMeta: cfg.Meta}
	m.del = d
	mc.Delegate = d
	mc.Events = d
	mc.Merge = d
	mc.Conflict = d
	mc.Alive = d

	// memberlist's own transport, made here rather than by Create so that
	// its streams can be bounded (and cut, in tests).
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: mc.Logger})
	if err != nil {
		return nil, fmt.Errorf("placement: starting gossip on %s: %w", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	if mc.BindPort == 0 {
		mc.BindPort = nt.GetAutoBindPort()
		mc.AdvertisePort = mc.BindPort
	}
	var transport memberlist.NodeAwareTransport = nt
	if cfg.Cut != nil {
		transport = &cutTransport{NetTransport: nt, cut: cfg.Cut}
	}
	mc.Transport = newStreamLimit(transport, cmp.Or(cfg.MaxStreams, defaultMaxStreams), m.log)
	list, err := memberlist.Create(mc)
	if err != nil {
		_ = mc.Transport.Shutdown()
		return nil, fmt.Errorf("placement: starting gossip on %s: %w", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	m.list = list
	return m, nil
}

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

func setDur(dst *time.Duration, v time.Duration) {
	if v > 0 {
		*dst = v
	}
}

// resolveIP returns s if it is an IP, else the first address it resolves
// to (IPv4 preferred): memberlist wants an IP to advertise.
func resolveIP(s string) (string, error) {
	if ip := net.ParseIP(s); ip != nil {
		return s, nil
	}
	ips, err := net.LookupIP(s)
	if err != nil {
		return "", err
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip.String(), nil
		}
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("%q resolves to no address", s)
	}
	return ips[0].String(), nil
}

// ID returns this node's ID.
func (m *Membership) ID() NodeID { return m.cfg.NodeID }

// Addr returns this node's advertised gossip address (ip:port): what
// other nodes Join.
func (m *Membership) Addr() string { return m.list.LocalNode().Address() }

// Join contacts the given gossip addresses (host:port; a missing port
// means 7946) and merges their view of the cluster. It returns how many
// answered. If a live member already uses this node's ID (or the contacted
// side knows another live process under an ID this side knows too) the
// merge is refused and the error wraps ErrDuplicateNodeID; if a member
// belongs to another cluster or has another shard count, it wraps
// ErrOtherCluster.
func (m *Membership) Join(addrs []string) (int, error) {
	if m.isClosed() {
		return 0, ErrShutdown
	}
	// One address at a time: memberlist reports a seed's failure only
	// when no seed answered, and a merge this node refused (NotifyMerge)
	// must be told apart from the merges it refuses meanwhile to nodes
	// that join through it, which are theirs to fail: memberlist's error
	// for a seed holds the text of the refusal it met.
	before := m.rejected.Load()
	n := 0
	var errs []error
	var refused error
	for _, addr := range addrs {
		k, err := m.list.Join([]string{addr})
		n += k
		if err == nil {
			continue
		}
		if rej := m.refusalIn(before, err); rej != nil {
			refused = rej
		}
		errs = append(errs, err)
	}
	if refused != nil {
		return n, refused
	}
	if n == 0 && len(errs) > 0 {
		return n, fmt.Errorf("placement: joining %v: %w", addrs, seedErrors(errs))
	}
	return n, nil
}

// seedErrors are the errors of the seeds a join tried, on one line:
// memberlist's error for a seed is a multierror, whose text spreads over
// several ("1 error occurred:\n\t* ..."), and a start's error is one line.
type seedErrors []error

func (e seedErrors) Error() string {
	msgs := make([]string, 0, len(e))
	for _, err := range e {
		var multi interface{ WrappedErrors() []error }
		if errors.As(err, &multi) {
			for _, inner := range multi.WrappedErrors() {
				msgs = append(msgs, strings.Join(strings.Fields(inner.Error()), " "))
			}
			continue
		}
		msgs = append(msgs, strings.Join(strings.Fields(err.Error()), " "))
	}
	return strings.Join(msgs, "; ")
}

func (e seedErrors) Unwrap() []error { return e }

// maxRefusals is how many of the last refused merges refusalIn looks at.
const maxRefusals = 16

// refusalIn returns the merge refused since the refused count was before
// whose error err, memberlist's for one seed, carries; nil if none.
func (m *Membership) refusalIn(before uint64, err error) error {
	msg := err.Error()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.refusals {
		if r.seq > before && strings.Contains(msg, r.err.Error()) {
			return r.err
		}
	}
	return nil
}

// refusedLocked records a merge NotifyMerge refuses. Callers hold m.mu.
func (m *Membership) refusedLocked(err error) {
	seq := m.rejected.Add(1)
	m.refusals = append(m.refusals, refusal{seq: seq, err: err})
	if len(m.refusals) > maxRefusals {
		m.refusals = m.refusals[len(m.refusals)-maxRefusals:]
	}
}

// refusal is a merge NotifyMerge refused; seq is the refused count after it.
type refusal struct {
	seq uint64
	err error
}

// Members returns every member this node has heard of, itself included,
// sorted by ID. Members that failed or left stay listed with Alive false
// until they come back.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	out := make([]Member, 0, len(m.members))
	for _, mem := range m.members {
		out = append(out, mem)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// Alive reports whether gossip counts member id alive: this node itself,
// or a member heard of that has not failed or left.
func (m *Membership) Alive(id NodeID) bool {
	if id == m.cfg.NodeID {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.members[id].Alive
}

// Events returns the membership events. The channel is closed by Shutdown.
// When it is full, events are dropped: reconcile from Members, not from
// the event stream.
func (m *Membership) Events() <-chan Event { return m.events }

// DroppedEvents returns how many events were dropped because the Events
// channel was full.
func (m *Membership) DroppedEvents() uint64 { return m.dropped.Load() }

// Conflict returns an error wrapping ErrDuplicateNodeID, describing the
// last time gossip showed another live process using this node's ID (in a
// merge either side started, or in an alive message), and when that was;
// else the zero time and nil. Join reports a conflict found while it runs
// by itself.
func (m *Membership) Conflict() (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.selfDupAt, m.selfDup
}

// UpdateMeta changes the meta this node gossips and waits up to timeout
// for the change to go out.
func (m *Membership) UpdateMeta(meta NodeMeta, timeout time.Duration) error {
	if err := meta.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	b, err := meta.encode()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	if m.isClosed() {
		return ErrShutdown
	}
	m.del.setMeta(meta, b)
	return m.list.UpdateNode(timeout)
}

// Leave tells the cluster this node is leaving and waits up to timeout for
// the message to spread. Call Shutdown afterwards. Only the first call
// does anything.
func (m *Membership) Leave(timeout time.Duration) error {
	if m.isClosed() {
		return ErrShutdown
	}
	var err error
	m.leaveOnce.Do(func() { err = m.list.Leave(timeout) })
	return err
}

// Shutdown stops gossip without telling anyone (others will detect the
// failure) and closes the Events channel. It is idempotent.
func (m *Membership) Shutdown() error {
	var err error
	m.shutOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		// Hold leaveOnce so a Leave cannot start on a shut-down list.
		m.leaveOnce.Do(func() {})
		err = m.list.Shutdown()
		m.mu.Lock()
		close(m.events)
		m.mu.Unlock()
	})
	return err
}

func (m *Membership) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// emit queues an event without blocking memberlist. Callers hold m.mu.
func (m *Membership) emitLocked(ev Event) {
	if m.closed {
		return
	}
	select {
	case m.events <- ev:
	default:
		m.dropped.Add(1)
	}
}

// memberOf converts a memberlist node (already checked by NotifyAlive).
func memberOf(n *memberlist.Node) Member {
	meta, _ := decodeNodeMeta(n.Meta)
	return Member{ID: NodeID(n.Name), Addr: n.Address(), Meta: meta, Alive: true}
}

// logWriter feeds memberlist's log lines ("[WARN] memberlist: ...") to slog
// at the matching level, at most logBurst of them every logWindow.
// Memberlist logs every packet it cannot decode, at ERROR: garbage sent to
// the gossip port would otherwise fill the log as fast as it comes. The
// lines dropped are counted in a warning with the next line logged.
type logWriter struct {
	l   *slog.Logger
	now func() time.Time

	mu          sync.Mutex
	windowStart time.Time
	inWindow    int // lines logged since windowStart
	dropped     int // lines dropped since windowStart
}

// At most logBurst memberlist lines are logged every logWindow.
const (
	logBurst  = 50
	logWindow = 10 * time.Second
)

func newLogWriter(l *slog.Logger) *logWriter { return &logWriter{l: l, now: time.Now} }

// admit says whether a line may be logged now, and how many lines the
// window before dropped (to report, once).
func (w *logWriter) admit() (ok bool, droppedBefore int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if now := w.now(); now.Sub(w.windowStart) >= logWindow {
		droppedBefore = w.dropped
		w.windowStart, w.inWindow, w.dropped = now, 0, 0
	}
	if w.inWindow >= logBurst {
		w.dropped++
		return false, droppedBefore
	}
	w.inWindow++
	return true, droppedBefore
}

func (w *logWriter) Write(p []byte) (int, error) {
	ok, dropped := w.admit()
	if dropped > 0 {
		w.l.Warn(fmt.Sprintf("%d gossip log lines dropped: more than %d came in %s (garbage on the gossip port?)", dropped, logBurst, logWindow))
	}
	if !ok {
		return len(p), nil
	}
	s := string(p)
	level := slog.LevelInfo
	for _, lv := range []struct {
		prefix string
		level  slog.Level
	}{{"[DEBUG] ", slog.LevelDebug}, {"[INFO] ", slog.LevelInfo}, {"[WARN] ", slog.LevelWarn}, {"[ERR] ", slog.LevelError}, {"[ERROR] ", slog.LevelError}} {
		if len(s) >= len(lv.prefix) && s[:len(lv.prefix)] == lv.prefix {
			level, s = lv.level, s[len(lv.prefix):]
			break
		}
	}
	if len(s) >= len("memberlist: ") && s[:len("memberlist: ")] == "memberlist: " {
		s = s[len("memberlist: "):]
	}
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	if strings.Contains(s, "use of closed network connection") {
		// Memberlist's probes racing its own shutdown: not a fault.
		level = slog.LevelDebug
	}
	w.l.Log(context.Background(), level, s)
	return len(p), nil
}

// cutTransport is memberlist's own transport with what it sends to a
// member that MembershipConfig.Cut names lost: a packet silently, a
// connection refused.
type cutTransport struct {
	*memberlist.NetTransport
	cut func(peer string) bool
}

var _ memberlist.NodeAwareTransport = (*cutTransport)(nil)

func (t *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.cut(addr) {
		return time.Now(), nil
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *cutTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, addr.Addr)
}

func (t *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.cut(addr) {
		return nil, fmt.Errorf("placement: gossip to %s is cut", addr)
	}
	return t.NetTransport.DialTimeout(addr, timeout)
}

func (t *cutTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(addr.Addr, timeout)
}

// defaultMaxStreams is MembershipConfig.MaxStreams's default.
const defaultMaxStreams = 128

// streamLimit is a transport whose incoming streams (gossip TCP
// connections) are handled at most max at a time: one over it is closed
// before memberlist reads it. It logs its refusals at most once every 10 s.
type streamLimit struct {
	memberlist.NodeAwareTransport
	conns   *connlimit.Limit
	streams chan net.Conn
	done    chan struct{} // closed when Shutdown begins
	stop    sync.Once
	// innerDone is closed once the inner transport has shut down: until
	// then run takes and closes what it still hands on (drain).
	innerDone chan struct{}
	innerStop sync.Once
	log       *slog.Logger
	limit     *loglimit.Limiter
}

var _ memberlist.NodeAwareTransport = (*streamLimit)(nil)

func newStreamLimit(inner memberlist.NodeAwareTransport, max int, log *slog.Logger) *streamLimit {
	t := &streamLimit{NodeAwareTransport: inner, conns: connlimit.New(max), streams: make(chan net.Conn), done: make(chan struct{}),
		innerDone: make(chan struct{}), log: log, limit: loglimit.New(10*time.Second, 1, time.Now)}
	go t.run()
	return t
}

// run hands the inner transport's streams on, counted, until Shutdown.
func (t *streamLimit) run() {
	defer t.drain()
	for {
		var c net.Conn
		select {
		case c = <-t.NodeAwareTransport.StreamCh():
		case <-t.done:
			return
		}
		taken, ok := t.conns.Take(c)
		if !ok {
			_ = c.Close()
			if ok, held, _ := t.limit.Allow("streams"); ok {
				t.log.Warn("gossip: refused a TCP connection: the most are being handled", "remote", c.RemoteAddr().String(), "max_streams", t.conns.Max(), "not_logged", held)
			}
			continue
		}
		select {
		case t.streams <- taken:
		case <-t.done:
			_ = taken.Close()
			return
		}
	}
}

func (t *streamLimit) StreamCh() <-chan net.Conn { return t.streams }

// drain closes the streams the inner transport still hands on while it
// shuts down. memberlist's NetTransport waits in Shutdown for its accept
// loop, which may be blocked handing on a connection it accepted just
// then: with no one reading, a node's Close hung for good (seen in a CI
// run under load).
func (t *streamLimit) drain() {
	for {
		select {
		case c := <-t.NodeAwareTransport.StreamCh():
			_ = c.Close()
		case <-t.innerDone:
			return
		}
	}
}

func (t *streamLimit) Shutdown() error {
	t.stop.Do(func() { close(t.done) })
	err := t.NodeAwareTransport.Shutdown()
	t.innerStop.Do(func() { close(t.innerDone) })
	return err
}
