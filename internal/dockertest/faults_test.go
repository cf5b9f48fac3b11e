package dockertest

import (
	"fmt"
	"math/rand/v2"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/roostdb/roost/internal/adminapi"
	"github.com/roostdb/roost/internal/linearize"
)

// counterLoad is the load of one phase: workers that increment (two calls
// in three) and read a handful of counters of their own, each call through
// a random node that is up, every call recorded for the linearizability
// check. Each phase has its own counters, so that its history stands alone
// and a failed check names the phase.
type counterLoad struct {
	h     *harness
	names []string
	rec   *linearize.Recorder
	cc    *linearize.HTTPCounter
	start time.Time

	stopCh   chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	mu       sync.Mutex
	end      time.Time // when the load stopped
	calls    []finishedCall
	troubles map[string]int // answers other than 200, by outcome, node and message
}

// finishedCall is what the phase statistics need of one call.
type finishedCall struct {
	name       string
	kind       linearize.Kind
	out        linearize.Outcome
	start, end time.Time
}

const (
	loadWorkers = 6
	loadNames   = 8
	// requestTimeout bounds each load request: one held by a paused or
	// disconnected node ends as unknown after it.
	requestTimeout = 3 * time.Second
)

func (h *harness) startCounterLoad(phase string) *counterLoad {
	rec := linearize.NewRecorder()
	l := &counterLoad{
		h: h, rec: rec, cc: linearize.NewHTTPCounter(rec, requestTimeout), start: time.Now(),
		stopCh: make(chan struct{}), troubles: map[string]int{},
	}
	for i := range loadNames {
		l.names = append(l.names, fmt.Sprintf("%s-%d", phase, i))
	}
	for w := range loadWorkers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.work(w)
		}()
	}
	h.t.Cleanup(l.stop) // before compose down, which runs later (cleanups run last first)
	return l
}

func (l *counterLoad) work(worker int) {
	rng := rand.New(rand.NewPCG(uint64(worker), uint64(l.start.UnixNano())))
	for {
		select {
		case <-l.stopCh:
			return
		default:
		}
		n := l.h.randomUpNode(rng)
		if n == nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		name := l.names[rng.IntN(len(l.names))]
		kind := linearize.Increment
		if rng.IntN(3) == 0 {
			kind = linearize.Read
		}
		start := time.Now()
		out, _, detail := l.cc.Do(worker, n.app, kind, name)
		l.mu.Lock()
		l.calls = append(l.calls, finishedCall{name: name, kind: kind, out: out, start: start, end: time.Now()})
		if out != linearize.OutcomeOk {
			l.troubles[fmt.Sprintf("%v via %s: %s", out, n.name, hostAddr.ReplaceAllString(detail, "<addr>"))]++
		}
		l.mu.Unlock()
		if out == linearize.OutcomeOk {
			time.Sleep(10 * time.Millisecond)
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// hostAddr blanks published addresses in error messages, so that alike
// failures through a node are counted together across its restarts.
var hostAddr = regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)

func (l *counterLoad) stop() {
	l.stopOnce.Do(func() {
		close(l.stopCh)
		l.wg.Wait()
		l.mu.Lock()
		l.end = time.Now()
		l.mu.Unlock()
		l.cc.CloseIdleConnections()
	})
}

// outcomes counts the calls so far by outcome.
func (l *counterLoad) outcomes() (total int, by [linearize.NumOutcomes]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.calls {
		by[c.out]++
	}
	return len(l.calls), by
}

// writesBack returns how long after since every counter had an
// acknowledged increment that was sent at or after since, and false if
// some counter has had none yet.
func (l *counterLoad) writesBack(since time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	first := map[string]time.Time{}
	for _, c := range l.calls {
		if c.kind != linearize.Increment || c.out != linearize.OutcomeOk || c.start.Before(since) {
			continue
		}
		if f, ok := first[c.name]; !ok || c.end.Before(f) {
			first[c.name] = c.end
		}
	}
	var last time.Duration
	for _, name := range l.names {
		f, ok := first[name]
		if !ok {
			return 0, false
		}
		last = max(last, f.Sub(since))
	}
	return last, true
}

// waitWritesBack waits until writesBack(since) holds, up to timeout.
func (l *counterLoad) waitWritesBack(since time.Time, timeout time.Duration) (time.Duration, bool) {
	deadline := time.Now().Add(timeout)
	for {
		if d, ok := l.writesBack(since); ok || time.Now().After(deadline) {
			return d, ok
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// longestGaps returns, over the whole load, the longest time without any
// acknowledged increment and the longest time one counter went without
// one (from the load's start, or to its end, where those are longer).
func (l *counterLoad) longestGaps() (anyName, oneName time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	acks := map[string][]time.Time{}
	var all []time.Time
	for _, c := range l.calls {
		if c.kind == linearize.Increment && c.out == linearize.OutcomeOk {
			acks[c.name] = append(acks[c.name], c.end)
			all = append(all, c.end)
		}
	}
	gap := func(ts []time.Time) time.Duration {
		slices.SortFunc(ts, time.Time.Compare)
		var longest time.Duration
		prev := l.start
		for _, at := range append(ts, l.end) {
			longest = max(longest, at.Sub(prev))
			prev = at
		}
		return longest
	}
	anyName = gap(all)
	for _, name := range l.names {
		oneName = max(oneName, gap(acks[name]))
	}
	return anyName, oneName
}

// topTroubles lists the n most frequent failures, most frequent first.
func (l *counterLoad) topTroubles(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	kinds := make([]string, 0, len(l.troubles))
	for what := range l.troubles {
		kinds = append(kinds, what)
	}
	sort.Slice(kinds, func(a, b int) bool {
		ca, cb := l.troubles[kinds[a]], l.troubles[kinds[b]]
		return ca > cb || ca == cb && kinds[a] < kinds[b]
	})
	var out []string
	for i, what := range kinds {
		if i == n {
			out = append(out, fmt.Sprintf("… and %d other kinds of failure", len(kinds)-n))
			break
		}
		out = append(out, fmt.Sprintf("%5d× %s", l.troubles[what], what))
	}
	return out
}

// readBack reads every counter of the load through node n, recorded in
// the load's history (as client id), retrying failures for up to 30 s.
func (l *counterLoad) readBack(n *node, id int) map[string]int {
	l.h.t.Helper()
	counts := map[string]int{}
	for _, name := range l.names {
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, v, detail := l.cc.Do(id, n.app, linearize.Read, name)
			if out == linearize.OutcomeOk {
				counts[name] = v
				break
			}
			if time.Now().After(deadline) {
				l.h.t.Fatalf("cannot read %s through %s: %v %s", name, n.name, out, detail)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	l.cc.CloseIdleConnections()
	return counts
}

// phase is one fault injected during a counter load of its own.
type phase struct {
	name   string
	victim string // the node the fault is about
	load   *counterLoad
	// injected and healed bound the fault: for an operation (rebalance,
	// drain), its start and end.
	injected, healed time.Time
}

// markInjected and markHealed are called by the fault at those moments.
func (p *phase) markInjected() { p.injected = time.Now() }
func (p *phase) markHealed()   { p.healed = time.Now() }

// runPhase starts a counter load, lets it run, injects and heals the fault
// (fault calls p.markInjected and p.markHealed), waits until every node's
// /readyz answers 200 and every counter has been incremented again, then
// stops the load and checks its history: linearizable, no acknowledged
// increment lost, the same counts through every node. It logs one line of
// figures; timings are reported, never asserted (the machine is shared).
func (h *harness) runPhase(name, victim string, fault func(p *phase)) *phase {
	h.t.Helper()
	p := &phase{name: name, victim: victim, load: h.startCounterLoad(name)}
	h.phases = append(h.phases, p)
	time.Sleep(2 * time.Second) // the fault-free baseline of the load
	h.logf("phase=%s: fault on %s", name, victim)
	fault(p)
	if p.injected.IsZero() || p.healed.IsZero() {
		h.t.Fatalf("phase=%s: the fault did not mark when it was injected and healed", name)
	}

	readyAfter := h.waitReady(2*time.Minute, p.name)
	h.setAllUp()
	writesBack, ok := p.load.waitWritesBack(p.injected, time.Minute)
	if !ok {
		h.t.Errorf("phase=%s: some counter had no acknowledged increment in the minute after the fault", name)
	}
	writesBackAfterHeal, ok := p.load.waitWritesBack(p.healed, time.Minute)
	if !ok {
		h.t.Errorf("phase=%s: some counter had no acknowledged increment in the minute after the heal", name)
	}
	time.Sleep(2 * time.Second) // load through the healed cluster, every node included
	p.load.stop()

	total, by := p.load.outcomes()
	longestGap, longestNameGap := p.load.longestGaps()
	for _, line := range p.load.topTroubles(6) {
		h.t.Logf("    %s", line)
	}
	if by[linearize.OutcomeOk] == 0 {
		h.t.Errorf("phase=%s: no call was acknowledged", name)
	}
	if by[linearize.OutcomeBadBody] > 0 {
		h.t.Errorf("phase=%s: %d answers 200 that are not a count", name, by[linearize.OutcomeBadBody])
	}
	final := h.readBackEverywhere(p)
	lost := linearize.Losses(p.load.rec, final)
	for _, loss := range lost {
		h.t.Errorf("phase=%s: %v", name, loss)
	}
	history := linearize.Check(p.load.rec, time.Minute)
	if !history.Ok {
		h.t.Errorf("phase=%s: history %v", name, history)
	}
	verdict := "linearizable"
	if !history.Ok {
		verdict = "NOT-linearizable"
	}
	round := func(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }
	h.logf("phase=%s node=%s ops=%d ok=%d failed=%d unknown=%d longest_gap=%v longest_name_gap=%v fault=%v writes_back=%v writes_back_after_heal=%v ready_after_heal=%v history=%s lost=%d",
		name, victim, total, by[linearize.OutcomeOk], by[linearize.OutcomeFailed], by[linearize.OutcomeUnknown]+by[linearize.OutcomeBadBody],
		round(longestGap), round(longestNameGap), round(p.healed.Sub(p.injected)), round(writesBack), round(writesBackAfterHeal), round(readyAfter),
		verdict, len(lost))
	return p
}

// readBackEverywhere reads the phase's counters through every node, checks
// that all agree and returns the counts.
func (h *harness) readBackEverywhere(p *phase) map[string]int {
	h.t.Helper()
	var final map[string]int
	var first string
	for i, n := range h.liveNodes() {
		got := p.load.readBack(n, 1000+i)
		if final == nil {
			final, first = got, n.name
			continue
		}
		for _, name := range p.load.names {
			if got[name] != final[name] {
				h.t.Errorf("phase=%s: %s reads %d through %s but %d through %s", p.name, name, got[name], n.name, final[name], first)
			}
		}
	}
	return final
}

// checkEarlierPhases reads every phase's counters once more: the faults
// that came after a phase must not have lost its acknowledged increments.
func (h *harness) checkEarlierPhases() {
	h.t.Helper()
	via := h.liveNodes()[0]
	for _, p := range h.phases {
		final := p.load.readBack(via, 2000)
		for _, loss := range linearize.Losses(p.load.rec, final) {
			h.t.Errorf("phase=%s, read back after every phase: %v", p.name, loss)
		}
	}
	if !h.t.Failed() {
		h.logf("the counters of every phase, read back through %s at the end: no acknowledged increment lost", via.name)
	}
}

// waitReady waits until every node's /readyz answers 200 and returns how
// long that took after the phase's heal.
func (h *harness) waitReady(timeout time.Duration, phase string) time.Duration {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	start := time.Now()
	for {
		var notReady []string
		for _, n := range h.liveNodes() {
			if err := readyz(n); err != nil {
				notReady = append(notReady, fmt.Sprintf("%s: %v", n.name, err))
			}
		}
		if len(notReady) == 0 {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("phase=%s: not ready %v after the heal: %s", phase, timeout, strings.Join(notReady, "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// members runs `roost members -o json` (the CLI built for the image, run
// on the host against a live node's published admin port).
func (h *harness) members() map[string]adminapi.Member {
	h.t.Helper()
	out := h.roost(time.Minute, "members", "-o", "json")
	ms, err := adminapi.DecodeMembers([]byte(out))
	if err != nil {
		h.t.Fatalf("roost members -o json: %v\n%s", err, out)
	}
	byID := map[string]adminapi.Member{}
	for _, m := range ms {
		byID[m.ID] = m
	}
	return byID
}

// busiestLeader returns the live node that leads the most shards.
func (h *harness) busiestLeader() *node {
	h.t.Helper()
	ms := h.members()
	var best *node
	var counts []string
	for _, n := range h.liveNodes() {
		counts = append(counts, fmt.Sprintf("%s %d", n.name, ms[n.name].Leaders))
		if best == nil || ms[n.name].Leaders > ms[best.name].Leaders {
			best = n
		}
	}
	h.logf("shards led: %s", strings.Join(counts, ", "))
	return best
}

// dockerWithUndo runs `docker do...` and returns a function that runs
// `docker undo...`; that also runs at cleanup if the test stops before:
// compose down cannot remove a paused container, nor a node left off the
// network the test's later steps need.
func (h *harness) dockerWithUndo(do, undo []string) func() {
	h.t.Helper()
	h.docker(time.Minute, do...)
	var once sync.Once
	h.t.Cleanup(func() {
		once.Do(func() {
			if out, err := run(time.Minute, h.root, h.env, "docker", undo...); err != nil {
				h.t.Logf("cleanup: docker %s: %v\n%s", strings.Join(undo, " "), err, out)
			}
		})
	})
	return func() {
		h.t.Helper()
		once.Do(func() { h.docker(time.Minute, undo...) })
	}
}

// inboundCut is the iptables rule of a one-way partition, put in a node's
// own network namespace: it drops every packet of a connection another
// host opened (the connection's first packet and all that follow it on
// its side), and none of those the node opened itself, whose answers come
// in the other direction — a firewall that lets a node call out and no
// one call in. Loopback is left alone.
var inboundCut = []string{"INPUT", "!", "-i", "lo", "-m", "conntrack", "--ctdir", "ORIGINAL", "-j", "DROP"}

// canCutInbound says why cutInbound cannot work on n on this machine, or
// "" if it can: it needs nsenter and iptables, and the right to list n's
// rules in its network namespace.
func (h *harness) canCutInbound(n *node) (whyNot string) {
	h.t.Helper()
	for _, tool := range []string{"nsenter", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("%s not found", tool)
		}
	}
	if out, err := h.inNetns(n, "iptables", "-S", "INPUT"); err != nil {
		return fmt.Sprintf("iptables in %s's network namespace: %v: %s", n.name, err, firstLine(out))
	}
	return ""
}

// inNetns runs a command in n's container's network namespace.
func (h *harness) inNetns(n *node, name string, args ...string) (string, error) {
	h.t.Helper()
	out, err := run(time.Minute, h.root, h.env, "docker", "inspect", "-f", "{{.State.Pid}}", n.container)
	if err != nil {
		return out, fmt.Errorf("docker inspect: %w", err)
	}
	pid := strings.TrimSpace(out)
	return run(time.Minute, h.root, h.env, "nsenter", append([]string{"-t", pid, "-n", name}, args...)...)
}

// cutInbound puts inboundCut in n's container's network namespace
// (nsenter and the host's iptables) and returns the function that takes
// it out again, which also runs at cleanup; or why it could not.
func (h *harness) cutInbound(n *node) (heal func(), whyNot string) {
	h.t.Helper()
	iptables := func(op string) (string, error) {
		return h.inNetns(n, "iptables", append([]string{op}, inboundCut...)...)
	}
	if out, err := iptables("-I"); err != nil {
		return nil, fmt.Sprintf("iptables -I %s in %s's network namespace: %v: %s", strings.Join(inboundCut, " "), n.name, err, firstLine(out))
	}
	var once sync.Once
	undo := func() (string, error) {
		var out string
		var err error
		once.Do(func() { out, err = iptables("-D") })
		return out, err
	}
	h.t.Cleanup(func() { _, _ = undo() }) // the container may be gone by then
	return func() {
		h.t.Helper()
		if out, err := undo(); err != nil {
			h.t.Fatalf("taking the one-way partition of %s out: %v\n%s", n.name, err, out)
		}
	}, ""
}
