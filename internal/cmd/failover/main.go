// Command failover measures how a 3-node roost cluster behaves when a node
// goes away. It is a measurement tool, not a test: it starts three real
// `roost node` processes (the binary given by -bin, normally bin/roost from
// `make build`) on 127.0.0.1, each with its own ports and temporary data dir
// and --shards 64 --bootstrap-expect 3 (every node --join's the other two,
// so any one can restart alone), waits until /readyz answers 200 on all of
// them, and then measures, in this order:
//
//   - Idle CPU (-idle, 0 skips it): after 5 s with no load, the utime+stime
//     of the three processes from /proc/<pid>/stat over the -idle window,
//     as a percentage of one core.
//
//   - Unplanned failover (-rounds rounds): one writer per shard increments a
//     counter object whose name lands on that shard (name → IDFromName in
//     the Counter namespace → xxhash of the ID mod the shard count, as
//     node/manager.go shardOf does), always through a node that is not the
//     victim, pausing -interval between writes. After -warmup a random node
//     that leads some shards is SIGKILLed. A shard is counted as failed over
//     if a write that ended after the kill failed (not a 200) or took longer
//     than -stall counted from the kill; its failover time is from the
//     SIGKILL to the end of the first successful write from that write on.
//     The load runs for at least -observe and until every shard has written
//     again; then the victim restarts with the same flags, and the next round
//     waits for /readyz on all nodes, for the shard leaders to be spread
//     again (up to 30 s) and for -settle.
//
//   - Planned leadership moves (-term-rounds rounds, victims n1, n2, n3, …):
//     the same load, but the victim gets SIGTERM, on which a node hands the
//     leadership of its groups to other replicas before it stops. Every write
//     that ends between the SIGTERM and 2 s after the process exited and is
//     not a 200 counts as failed. The load goes on while the node restarts
//     and the leaders are moved back to it, and the failures of that window
//     are reported too.
//
// No HTTP endpoint says which node leads which shard, so before each kill
// the tool asks every node with the GroupStatus RPC of the grpc listener
// (the one reconciliation uses) and reports the failover times of the
// shards the victim led apart from those of other shards that stalled. As
// a control, it also counts the shards whose writes failed or stalled in
// the second half of the warm-up before the kill: on a busy machine that number is not zero,
// and every other number is then suspect too (the load average is printed
// at the start and the end).
//
// Run it with `make bench-failover` (FAILOVER_FLAGS='-rounds 5 -v' passes
// flags) or, after `make build`, with
//
//	go run ./internal/cmd/failover -rounds 20
//
// It needs Linux (/proc) and takes USER_HZ to be 100.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/roostdb/roost/internal/localcluster"
	"github.com/roostdb/roost/proto"
)

var (
	binPath    = flag.String("bin", "bin/roost", "the roost binary to run")
	rounds     = flag.Int("rounds", 20, "SIGKILL failover rounds")
	termRounds = flag.Int("term-rounds", 3, "SIGTERM (planned leadership move) rounds")
	idle       = flag.Duration("idle", 30*time.Second, "idle CPU sampling window; 0 disables")
	shards     = flag.Int("shards", 64, "--shards of the cluster")
	stall      = flag.Duration("stall", 100*time.Millisecond, "a write slower than this after a kill marks its shard as failed over")
	settle     = flag.Duration("settle", 3*time.Second, "pause after a restarted node is ready and leaders are spread")
	interval   = flag.Duration("interval", 20*time.Millisecond, "pause between one writer's writes")
	warmup     = flag.Duration("warmup", 2*time.Second, "load before each kill")
	observe    = flag.Duration("observe", 5*time.Second, "load after each SIGKILL, at least")
	seed       = flag.Uint64("seed", 0, "seed for choosing victims (0: from the clock)")
	keep       = flag.Bool("keep", false, "keep the nodes' data dirs and logs")
	verbose    = flag.Bool("v", false, "per round: the other shards that stalled, the failed writes by answer, the leaders after the restart")
)

func main() {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: failover [flags]\n\nMeasures failover, idle CPU and planned leadership moves of a 3-node roost cluster.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "failover:", err)
		os.Exit(1)
	}
}

// node is one `roost node` process and a gRPC connection to it for
// GroupStatus.
type node struct {
	*localcluster.Node
	status *grpc.ClientConn
}

// leads returns the shards whose Raft group this node leads, asked with
// the GroupStatus RPC (group i+1 is shard i).
func (n *node) leads(ctx context.Context) ([]int, error) {
	cl := proto.NewForwardClient(n.status)
	var led []int
	for i := range *shards {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cl.GroupStatus(cctx, &proto.ForwardGroupStatusRequest{GroupId: uint64(i + 1)})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("GroupStatus of shard %d on %s: %w", i, n.ID, err)
		}
		if st.State == "Leader" {
			led = append(led, i)
		}
	}
	return led, nil
}

type cluster struct {
	nodes []*node
	dir   string
	names []string // names[s] is a counter object on shard s
	rng   *rand.Rand
}

func (c *cluster) start(ctx context.Context) error {
	nodes, err := localcluster.NewNodes(*binPath, c.dir, 3, "--shards", strconv.Itoa(*shards), "--bootstrap-expect", "3")
	if err != nil {
		return err
	}
	// Every node joins the other two, so any of them can restart alone.
	localcluster.JoinEachOther(nodes)
	for _, ln := range nodes {
		n := &node{Node: ln}
		c.nodes = append(c.nodes, n)
		if n.status, err = grpc.NewClient(n.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			return err
		}
	}
	t0 := time.Now()
	for _, n := range c.nodes {
		if err := n.Start(); err != nil {
			return err
		}
	}
	for _, n := range c.nodes {
		if err := n.WaitReady(ctx, 2*time.Minute); err != nil {
			return err
		}
	}
	fmt.Printf("cluster of 3 nodes (--shards %d) ready in %v\n", *shards, time.Since(t0).Round(time.Millisecond))
	return nil
}

func (c *cluster) stopAll() {
	for _, n := range c.nodes {
		n.Close()
		if n.status != nil {
			n.status.Close()
		}
	}
}

// leaderCounts returns, per node, the shards it leads.
func (c *cluster) leaderCounts(ctx context.Context) ([][]int, error) {
	out := make([][]int, len(c.nodes))
	for i, n := range c.nodes {
		led, err := n.leads(ctx)
		if err != nil {
			return nil, err
		}
		out[i] = led
	}
	return out, nil
}

// waitSpread waits (up to d) until every shard has exactly one leader and
// no node leads more than its share; it returns the last counts seen.
func (c *cluster) waitSpread(ctx context.Context, d time.Duration) (string, error) {
	deadline := time.Now().Add(d)
	share := (*shards + len(c.nodes) - 1) / len(c.nodes)
	for {
		led, err := c.leaderCounts(ctx)
		if err != nil {
			return "", err
		}
		total, most := 0, 0
		var desc []string
		for i, l := range led {
			total += len(l)
			most = max(most, len(l))
			desc = append(desc, fmt.Sprintf("%s:%d", c.nodes[i].ID, len(l)))
		}
		s := strings.Join(desc, " ")
		if total == *shards && most <= share {
			return s, nil
		}
		if time.Now().After(deadline) {
			return s + " (not spread)", nil
		}
		if !localcluster.Sleep(ctx, 250*time.Millisecond) {
			return s, ctx.Err()
		}
	}
}

// restart starts n again with the same flags and waits until the cluster
// is ready, its leaders are spread and -settle has passed.
func (c *cluster) restart(ctx context.Context, n *node) (string, error) {
	if err := n.Start(); err != nil {
		return "", err
	}
	for _, m := range c.nodes {
		if err := m.WaitReady(ctx, time.Minute); err != nil {
			return "", err
		}
	}
	spread, err := c.waitSpread(ctx, 30*time.Second)
	if err != nil {
		return "", err
	}
	localcluster.Sleep(ctx, *settle)
	return spread, nil
}

// shardNames finds, for every shard, a counter object name that lands on it.
func shardNames(nshards int) []string {
	names := make([]string, nshards)
	left := nshards
	for i := 0; left > 0; i++ {
		name := fmt.Sprintf("failover-%d", i)
		if s := localcluster.CounterShard(name, nshards); names[s] == "" {
			names[s] = name
			left--
		}
	}
	return names
}

// write is one increment as the writer saw it.
type write struct {
	start, end time.Time
	code       int    // HTTP status; 0 if the request failed
	err        string // the transport error or the body of a non-200
}

func (w write) ok() bool { return w.code == http.StatusOK }

// load runs one writer per shard, each through entries[shard % len(entries)].
type load struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	writes  [][]write
	lastOK  []atomic.Int64 // start (UnixNano) of each shard's latest successful write
	entries []string
}

var writeClient = &http.Client{
	Timeout:   15 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 0, IdleConnTimeout: time.Minute},
}

func startLoad(names []string, entries []*node) *load {
	l := &load{stop: make(chan struct{}), writes: make([][]write, len(names)), lastOK: make([]atomic.Int64, len(names))}
	for _, e := range entries {
		l.entries = append(l.entries, e.ID)
	}
	for s, name := range names {
		addr := entries[s%len(entries)].HTTP
		u := "http://" + addr + "/increment?name=" + url.QueryEscape(name)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				w := write{start: time.Now()}
				resp, err := writeClient.Get(u)
				if err != nil {
					w.err = err.Error()
				} else {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					w.code = resp.StatusCode
					if w.code != http.StatusOK {
						w.err = strings.TrimSpace(string(b))
					}
				}
				w.end = time.Now()
				if w.ok() {
					l.lastOK[s].Store(w.start.UnixNano())
				}
				l.writes[s] = append(l.writes[s], w)
				if *interval > 0 {
					time.Sleep(*interval)
				}
			}
		}()
	}
	return l
}

func (l *load) finish() {
	close(l.stop)
	l.wg.Wait()
}

// allOKSince reports whether every shard had a successful write that
// started at or after t.
func (l *load) allOKSince(t time.Time) bool {
	for i := range l.lastOK {
		if l.lastOK[i].Load() < t.UnixNano() {
			return false
		}
	}
	return true
}

// otherNodes returns the nodes other than v.
func (c *cluster) otherNodes(v *node) []*node {
	var o []*node
	for _, n := range c.nodes {
		if n != v {
			o = append(o, n)
		}
	}
	return o
}

// pickVictim picks a random node among those that lead at least one shard.
func (c *cluster) pickVictim(ctx context.Context) (*node, error) {
	led, err := c.leaderCounts(ctx)
	if err != nil {
		return nil, err
	}
	var cands []*node
	for i, l := range led {
		if len(l) > 0 {
			cands = append(cands, c.nodes[i])
		}
	}
	if len(cands) == 0 {
		return nil, errors.New("no node leads any shard")
	}
	return cands[c.rng.IntN(len(cands))], nil
}

// shardResult is what one shard's writes showed after a kill.
type shardResult struct {
	affected  bool          // a write failed or stalled after the kill
	recovered bool          // a write succeeded after the first such write
	from      time.Duration // kill → when the first failed or stalled write began (0 if before the kill)
	failover  time.Duration // kill → end of the first successful write from then on
	failed    []write       // writes that ended after the kill without a 200
	later     int           // how many of them failed after the shard had recovered
}

// analyse looks at a shard's writes around a kill at t. The first write
// that ends after t and failed, or took longer than -stall counted from
// t, marks the shard; it recovered when a write from then on succeeded.
func analyse(ws []write, t time.Time) shardResult {
	var r shardResult
	first := -1
	for i, w := range ws {
		if !w.end.After(t) {
			continue
		}
		from := w.start
		if from.Before(t) {
			from = t
		}
		bad := !w.ok() || w.end.Sub(from) > *stall
		if !w.ok() {
			r.failed = append(r.failed, w)
		}
		if bad && first < 0 {
			first = i
			r.affected, r.from = true, from.Sub(t)
		}
	}
	if first < 0 {
		return r
	}
	for _, w := range ws[first:] {
		if w.ok() {
			r.recovered, r.failover = true, w.end.Sub(t)
			break
		}
	}
	for _, w := range r.failed {
		if r.recovered && w.end.Sub(t) > r.failover {
			r.later++
		}
	}
	return r
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// dist formats ": p50 …, p99 …, max …" of ds, or "" if it is empty.
func dist(ds []time.Duration) string {
	if len(ds) == 0 {
		return ""
	}
	return fmt.Sprintf(": p50 %s, p99 %s, max %s", ms(pct(ds, 0.5)), ms(pct(ds, 0.99)), ms(pct(ds, 1)))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond)) }

var digits = regexp.MustCompile(`[0-9]+`)

// errorKinds counts failed writes by status and message, numbers blanked
// so that alike messages count together.
func errorKinds(ws []write) string {
	counts := map[string]int{}
	for _, w := range ws {
		if !w.ok() {
			msg := digits.ReplaceAllString(w.err, "N")
			if len(msg) > 160 {
				msg = msg[:160] + "…"
			}
			counts[fmt.Sprintf("%d %s", w.code, msg)]++
		}
	}
	var keys []string
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return counts[keys[i]] > counts[keys[j]] })
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "      %5d × %s\n", counts[k], k)
	}
	return b.String()
}

// owners returns, per shard, the node that leads it ("" if none said so).
func (c *cluster) owners(ctx context.Context) ([]string, error) {
	led, err := c.leaderCounts(ctx)
	if err != nil {
		return nil, err
	}
	own := make([]string, *shards)
	for i, l := range led {
		for _, s := range l {
			own[s] = c.nodes[i].ID
		}
	}
	return own, nil
}

type killStats struct {
	all, led, other []time.Duration // failover times: all stalled shards, those the victim led, the others
	otherFrom       []time.Duration // when the other shards' stalls began
	unrecovered     int
	ledNotStalled   int
	before          int // shards with a slow or failed write in the warm-ups
	later           int // writes that failed after their shard had recovered
	warmWrites      int // writes in the warm-ups, for the rate
	failed          []write
}

func (c *cluster) killRound(ctx context.Context, round int, st *killStats) error {
	victim, err := c.pickVictim(ctx)
	if err != nil {
		return err
	}
	l := startLoad(c.names, c.otherNodes(victim))
	if !localcluster.Sleep(ctx, *warmup) {
		l.finish()
		return ctx.Err()
	}
	own, err := c.owners(ctx)
	if err != nil {
		l.finish()
		return err
	}
	tKill := time.Now()
	victim.Signal(syscall.SIGKILL)
	if err := victim.WaitExit(10 * time.Second); err != nil {
		l.finish()
		return err
	}
	// Wait until every shard wrote successfully again (at least -observe,
	// at most 30 s), then stop the writers.
	deadline := tKill.Add(30 * time.Second)
	for time.Since(tKill) < *observe || (!l.allOKSince(tKill) && time.Now().Before(deadline)) {
		if !localcluster.Sleep(ctx, 20*time.Millisecond) {
			break
		}
	}
	l.finish()

	// The control: shards with a slow or failed write in the second half
	// of the warm-up (the first writes open connections and activate
	// objects), when nothing was wrong.
	var before []int
	half := tKill.Add(-*warmup / 2)
	for s, ws := range l.writes {
		for _, w := range ws {
			if w.end.Before(tKill) && !w.start.Before(half) && (!w.ok() || w.end.Sub(w.start) > *stall) {
				before = append(before, s)
				break
			}
		}
	}
	st.before += len(before)
	for _, ws := range l.writes {
		for _, w := range ws {
			if w.end.Before(tKill) && !w.start.Before(tKill.Add(-*warmup)) {
				st.warmWrites++
			}
		}
	}

	var ledTimes, otherTimes []time.Duration
	var ledNotStalled, unrecovered, relapsed []int
	nlater := 0
	var others []string
	var failed []write
	nled := 0
	for s, ws := range l.writes {
		r := analyse(ws, tKill)
		failed = append(failed, r.failed...)
		byVictim := own[s] == victim.ID
		if byVictim {
			nled++
		}
		switch {
		case !r.affected:
			if byVictim {
				ledNotStalled = append(ledNotStalled, s)
			}
			continue
		case !r.recovered:
			unrecovered = append(unrecovered, s)
			continue
		}
		if r.later > 0 {
			relapsed = append(relapsed, s)
			nlater += r.later
		}
		st.all = append(st.all, r.failover)
		if byVictim {
			ledTimes = append(ledTimes, r.failover)
			continue
		}
		otherTimes = append(otherTimes, r.failover)
		st.otherFrom = append(st.otherFrom, r.from)
		desc := fmt.Sprintf("%d(%s) +%s..+%s", s, own[s], ms(r.from), ms(r.failover))
		if n := len(r.failed); n > 0 {
			desc += fmt.Sprintf(" %d failed, the last at +%s", n, ms(r.failed[n-1].end.Sub(tKill)))
		}
		others = append(others, desc)
	}
	st.led = append(st.led, ledTimes...)
	st.other = append(st.other, otherTimes...)
	st.unrecovered += len(unrecovered)
	st.ledNotStalled += len(ledNotStalled)
	st.failed = append(st.failed, failed...)

	fmt.Printf("round %2d: SIGKILL %s (led %d shards; writes via %s): %d led shards failed over",
		round, victim.ID, nled, strings.Join(l.entries, ","), len(ledTimes))
	if len(ledTimes) > 0 {
		fmt.Printf(" in p50 %s max %s", ms(pct(ledTimes, 0.5)), ms(pct(ledTimes, 1)))
	}
	fmt.Printf("; %d other shards stalled", len(otherTimes))
	if len(otherTimes) > 0 {
		fmt.Printf(" (until p50 %s max %s)", ms(pct(otherTimes, 0.5)), ms(pct(otherTimes, 1)))
	}
	fmt.Printf("; %d failed writes; in the %v before the kill %d shards had a write fail or stall", len(failed), *warmup/2, len(before))
	if nlater > 0 {
		fmt.Printf("; %d writes failed after their shard had recovered (shards %v)", nlater, relapsed)
	}
	st.later += nlater
	if len(ledNotStalled) > 0 {
		fmt.Printf("; led but never stalled: %v", ledNotStalled)
	}
	if len(unrecovered) > 0 {
		fmt.Printf("; NOT RECOVERED within 30 s: %v", unrecovered)
	}
	fmt.Println()
	if *verbose {
		if len(others) > 0 {
			fmt.Printf("    other stalled shards, shard(leader before the kill) stall from..to after the kill: %s\n", strings.Join(others, ", "))
		}
		if len(failed) > 0 {
			fmt.Print(errorKinds(failed))
		}
	}
	spread, err := c.restart(ctx, victim)
	if err != nil {
		return err
	}
	if *verbose {
		fmt.Printf("    restarted %s; leaders %s\n", victim.ID, spread)
	}
	return nil
}

// window counts the writes that ended in (from, to]; where lists, per
// shard with a failed write, the shard, its leader before the signal and
// when its failures ended (relative to from).
func window(l *load, from, to time.Time, own []string, victim string) (total int, failed, failedLed []write, slowest time.Duration, where []string) {
	for s, ws := range l.writes {
		n := 0
		var last time.Time
		for _, w := range ws {
			if !w.end.After(from) || w.end.After(to) {
				continue
			}
			total++
			slowest = max(slowest, w.end.Sub(w.start))
			if !w.ok() {
				n++
				last = w.end
				failed = append(failed, w)
				if own != nil && own[s] == victim {
					failedLed = append(failedLed, w)
				}
			}
		}
		if n > 0 {
			o := ""
			if own != nil {
				o = own[s]
			}
			where = append(where, fmt.Sprintf("%d(%s)×%d@+%s", s, o, n, ms(last.Sub(from))))
		}
	}
	return
}

type termStats struct {
	failed, total             int // writes from SIGTERM to 2 s after the exit
	rejoinFailed, rejoinTotal int // writes while the node restarted and took leaders back
	kinds                     []write
}

// termRound SIGTERMs a node under load and counts the writes that failed,
// then restarts it under the same load and counts those that failed while
// the balancer moved leaders back to it.
func (c *cluster) termRound(ctx context.Context, round int, victim *node, st *termStats) error {
	l := startLoad(c.names, c.otherNodes(victim))
	if !localcluster.Sleep(ctx, *warmup) {
		l.finish()
		return ctx.Err()
	}
	own, err := c.owners(ctx)
	if err != nil {
		l.finish()
		return err
	}
	nled := 0
	for _, o := range own {
		if o == victim.ID {
			nled++
		}
	}
	tTerm := time.Now()
	victim.Signal(syscall.SIGTERM)
	if err := victim.WaitExit(30 * time.Second); err != nil {
		l.finish()
		return err
	}
	tExit := time.Now()
	localcluster.Sleep(ctx, 2*time.Second)
	tRestart := time.Now()
	spread, err := c.restart(ctx, victim)
	l.finish()
	if err != nil {
		return err
	}
	total, failed, failedLed, slowest, where := window(l, tTerm, tRestart, own, victim.ID)
	rtotal, rfailed, _, rslowest, rwhere := window(l, tRestart, time.Now(), nil, "")
	st.failed += len(failed)
	st.total += total
	st.rejoinFailed += len(rfailed)
	st.rejoinTotal += rtotal
	st.kinds = append(st.kinds, failed...)
	fmt.Printf("term %d: SIGTERM %s (led %d shards; writes via %s): exited after %s; %d of %d writes failed (%d on shards it led), slowest %s; "+
		"restart and rebalance: %d of %d failed, slowest %s\n",
		round, victim.ID, nled, strings.Join(l.entries, ","), ms(tExit.Sub(tTerm)), len(failed), total, len(failedLed), ms(slowest),
		len(rfailed), rtotal, ms(rslowest))
	if *verbose {
		if len(failed) > 0 {
			fmt.Printf("    failed writes by shard(leader before the SIGTERM)×count@last failure after the SIGTERM: %s\n", strings.Join(where, " "))
			fmt.Print(errorKinds(failed))
		}
		if len(rfailed) > 0 {
			fmt.Printf("    during restart and rebalance, by shard×count@last failure after the restart: %s\n", strings.Join(rwhere, " "))
			fmt.Print(errorKinds(rfailed))
		}
		fmt.Printf("    restarted %s; leaders %s\n", victim.ID, spread)
	}
	return nil
}

func (c *cluster) idleCPU(ctx context.Context) error {
	if !localcluster.Sleep(ctx, 5*time.Second) {
		return ctx.Err()
	}
	before := make([]float64, len(c.nodes))
	for i, n := range c.nodes {
		t, err := n.CPUSeconds()
		if err != nil {
			return err
		}
		before[i] = t
	}
	t0 := time.Now()
	if !localcluster.Sleep(ctx, *idle) {
		return ctx.Err()
	}
	elapsed := time.Since(t0)
	var total float64
	var per []string
	for i, n := range c.nodes {
		t, err := n.CPUSeconds()
		if err != nil {
			return err
		}
		p := (t - before[i]) / elapsed.Seconds() * 100
		total += p
		per = append(per, fmt.Sprintf("%s %.1f%%", n.ID, p))
	}
	fmt.Printf("idle CPU over %v: %.1f%% of one core (%s)\n", idle.Round(time.Second), total, strings.Join(per, ", "))
	return nil
}

func run(ctx context.Context) error {
	if _, err := os.Stat(*binPath); err != nil {
		return fmt.Errorf("%w (run `make build` first)", err)
	}
	s := *seed
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	dir, err := os.MkdirTemp("", "roost-failover-")
	if err != nil {
		return err
	}
	c := &cluster{dir: dir, names: shardNames(*shards), rng: rand.New(rand.NewPCG(s, 0))}
	ok := false
	defer func() {
		c.stopAll()
		if *keep || !ok {
			fmt.Fprintf(os.Stderr, "data dirs and node logs kept in %s\n", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	fmt.Printf("failover: %s, %d CPUs, load average %s, seed %d, rounds %d, term rounds %d, writer interval %v, stall threshold %v\n",
		*binPath, runtime.NumCPU(), localcluster.Loadavg(), s, *rounds, *termRounds, *interval, *stall)
	if err := c.start(ctx); err != nil {
		return err
	}
	spread, err := c.waitSpread(ctx, 30*time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("leaders: %s\n", spread)
	if *idle > 0 {
		if err := c.idleCPU(ctx); err != nil {
			return err
		}
	}

	var st killStats
	for r := 1; r <= *rounds; r++ {
		if err := c.killRound(ctx, r, &st); err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
	}
	if *rounds > 0 {
		fmt.Printf("SIGKILL failover over %d rounds: %d shard-failovers measured (shards whose writes failed or stalled > %v after the kill)%s\n",
			*rounds, len(st.all), *stall, dist(st.all))
		fmt.Printf("  on shards the victim led before the kill: %d%s\n", len(st.led), dist(st.led))
		fmt.Printf("  on shards another node led: %d%s", len(st.other), dist(st.other))
		if len(st.otherFrom) > 0 {
			fmt.Printf("; their stalls began p50 %s after the kill", ms(pct(st.otherFrom, 0.5)))
		}
		fmt.Println()
		fmt.Printf("  load: %.0f writes/s in the warm-ups\n", float64(st.warmWrites)/(float64(*rounds)*warmup.Seconds()))
		fmt.Printf("  control: shards with a write that failed or took > %v in the %v before a kill: %d (summed over the rounds)\n", *stall, *warmup/2, st.before)
		fmt.Printf("  shards the victim led whose writes never stalled: %d; shards not recovered within 30 s: %d; failed writes after the kills: %d, of which %d after their shard had recovered\n",
			st.ledNotStalled, st.unrecovered, len(st.failed), st.later)
		if len(st.failed) > 0 {
			fmt.Print(errorKinds(st.failed))
		}
	}

	var tst termStats
	for r := 1; r <= *termRounds; r++ {
		if err := c.termRound(ctx, r, c.nodes[(r-1)%len(c.nodes)], &tst); err != nil {
			return fmt.Errorf("term round %d: %w", r, err)
		}
	}
	if *termRounds > 0 {
		fmt.Printf("SIGTERM (planned leadership moves) over %d rounds: %d failed writes (non-200) of %d from the SIGTERM to 2 s after the exit\n",
			*termRounds, tst.failed, tst.total)
		if len(tst.kinds) > 0 {
			fmt.Print(errorKinds(tst.kinds))
		}
		fmt.Printf("  while the node restarted and leaders moved back to it: %d failed of %d\n", tst.rejoinFailed, tst.rejoinTotal)
	}
	fmt.Printf("load average at the end: %s\n", localcluster.Loadavg())
	ok = true
	return nil
}
