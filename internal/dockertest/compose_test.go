package dockertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roostdb/roost/internal/testnet"
)

const (
	project = "roosttest"        // compose project: containers, network and volumes are named after it
	image   = "roost:dockertest" // the tag testdata/compose.test.yml runs; never the developer's roost:dev
)

// harness drives the compose project of one test.
type harness struct {
	t       *testing.T
	root    string   // the module root (where docker-compose.yml is)
	compose []string // "docker compose" or "docker-compose"
	env     []string // the environment of compose commands
	start   time.Time

	mu    sync.Mutex
	nodes map[string]*node
}

// node is one compose service as the test sees it.
type node struct {
	name      string
	container string // container ID; the same across docker kill / docker start
	app       string // http://127.0.0.1:port of its app listener
	admin     string
	up        bool // load goes only to nodes that are up
}

func (h *harness) logf(format string, args ...any) {
	h.t.Helper()
	h.t.Logf("[%5.1fs] %s", time.Since(h.start).Seconds(), fmt.Sprintf(format, args...))
}

// run runs a command with a timeout and returns its combined output.
func run(timeout time.Duration, dir string, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%v (timed out after %v)", err, timeout)
	}
	return string(out), err
}

// docker runs the docker CLI and fails the test on error.
func (h *harness) docker(timeout time.Duration, args ...string) string {
	h.t.Helper()
	out, err := run(timeout, h.root, h.env, "docker", args...)
	if err != nil {
		h.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// composeCmd runs compose on the project (both files, every profile
// given) and returns its output and error.
func (h *harness) composeCmd(timeout time.Duration, args ...string) (string, error) {
	full := append([]string{}, h.compose[1:]...)
	full = append(full, "-p", project,
		"-f", filepath.Join(h.root, "docker-compose.yml"),
		"-f", filepath.Join(h.root, "internal", "dockertest", "testdata", "compose.test.yml"),
		"--profile", "scale")
	full = append(full, args...)
	return run(timeout, h.root, h.env, h.compose[0], full...)
}

// composeRun is composeCmd that fails the test on error.
func (h *harness) composeRun(timeout time.Duration, args ...string) string {
	h.t.Helper()
	out, err := h.composeCmd(timeout, args...)
	if err != nil {
		h.t.Fatalf("compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// findCompose returns the compose command line this machine has.
func findCompose() ([]string, bool) {
	if _, err := run(30*time.Second, "", os.Environ(), "docker", "compose", "version"); err == nil {
		return []string{"docker", "compose"}, true
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		if _, err := run(30*time.Second, "", os.Environ(), "docker-compose", "version"); err == nil {
			return []string{"docker-compose"}, true
		}
	}
	return nil, false
}

// freePort returns a port on 127.0.0.1 that is free now, below the
// ephemeral range: n1's published ports must still be free when n1 starts
// again after docker kill (see package testnet).
func freePort(t *testing.T) string {
	t.Helper()
	_, port, err := net.SplitHostPort(testnet.FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// composeEnv is our environment for compose, less the variables that would
// change what it runs (project, files, profiles), plus n1's host ports.
func composeEnv(appPort, adminPort string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES", "COMPOSE_PATH_SEPARATOR",
			"ROOST_COMPOSE_APP_PORT", "ROOST_COMPOSE_ADMIN_PORT":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "ROOST_COMPOSE_APP_PORT="+appPort, "ROOST_COMPOSE_ADMIN_PORT="+adminPort, "COMPOSE_INTERACTIVE_NO_CLI=1")
}

// buildImage builds bin/roost and bin/healthcheck into a scratch build
// context (the developer's bin/ is left alone) and the image from
// deploy/Dockerfile.
func (h *harness) buildImage() {
	h.t.Helper()
	ctxDir := h.t.TempDir()
	env := append(os.Environ(), "CGO_ENABLED=0")
	for _, b := range []struct{ out, pkg string }{
		{"bin/roost", "./cmd/roost"},
		{"bin/healthcheck", "./internal/cmd/healthcheck"},
	} {
		out, err := run(5*time.Minute, h.root, env, "go", "build", "-trimpath", "-o", filepath.Join(ctxDir, b.out), b.pkg)
		if err != nil {
			h.t.Fatalf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	h.logf("built bin/roost and bin/healthcheck (static)")
	h.docker(5*time.Minute, "build", "-q", "-f", filepath.Join(h.root, "deploy", "Dockerfile"), "-t", image, ctxDir)
	h.logf("built image %s", image)
}

// down removes the project: containers, network and volumes.
func (h *harness) down() {
	if out, err := h.composeCmd(3*time.Minute, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
		h.t.Logf("compose down: %v\n%s", err, out)
	}
}

// startService records a running service's container and published ports.
// It asks docker, not compose: docker-compose v1 takes a second or more
// per command.
func (h *harness) startService(name string) *node {
	h.t.Helper()
	id := strings.TrimSpace(h.docker(time.Minute, "ps", "-q",
		"--filter", "label=com.docker.compose.project="+project,
		"--filter", "label=com.docker.compose.service="+name))
	if id == "" || strings.Contains(id, "\n") {
		h.t.Fatalf("the running container of service %s: %q", name, id)
	}
	n := &node{name: name, container: id}
	h.mu.Lock()
	h.nodes[name] = n
	h.mu.Unlock()
	h.refreshPorts(n)
	return n
}

// refreshPorts reads n's published ports again: Docker picks new ones when
// a container with ports published at 127.0.0.1::port starts again.
func (h *harness) refreshPorts(n *node) {
	h.t.Helper()
	port := func(p string) string {
		out := strings.TrimSpace(h.docker(time.Minute, "port", n.container, p+"/tcp"))
		// "127.0.0.1:49153" (one line per binding; we publish one)
		line, _, _ := strings.Cut(out, "\n")
		if _, _, err := net.SplitHostPort(line); err != nil {
			h.t.Fatalf("docker port %s %s: %q", n.name, p, out)
		}
		return "http://" + line
	}
	app, admin := port("8787"), port("8789")
	h.mu.Lock()
	n.app, n.admin, n.up = app, admin, true
	h.mu.Unlock()
}

// waitHealthy waits until Docker reports every named container healthy
// (its /healthcheck of /readyz answered 200).
func (h *harness) waitHealthy(timeout time.Duration, names ...string) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for _, name := range names {
		n := h.nodes[name]
		for {
			out, err := run(30*time.Second, h.root, h.env, "docker", "inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", n.container)
			state := strings.TrimSpace(out)
			if err == nil && state == "running healthy" {
				break
			}
			if err == nil && !strings.HasPrefix(state, "running") {
				h.t.Fatalf("%s is %q, not running", name, state)
			}
			if time.Now().After(deadline) {
				h.t.Fatalf("%s not healthy after %v: %q %v", name, timeout, state, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	h.logf("healthy: %s", strings.Join(names, ", "))
}

var client = &http.Client{Timeout: 5 * time.Second}

// count sends GET base+path?name=name and parses the counter's answer
// "Durable Object '<name>' count: N".
func count(base, path, name string) (int, error) {
	resp, err := client.Get(base + path + "?name=" + url.QueryEscape(name))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return 0, err
	}
	body := strings.TrimSpace(string(b))
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s %s: %s", path, resp.Status, body)
	}
	prefix := fmt.Sprintf("Durable Object '%s' count: ", name)
	rest, ok := strings.CutPrefix(body, prefix)
	if !ok {
		return 0, fmt.Errorf("%s: unexpected answer %q", path, body)
	}
	v, err := strconv.Atoi(rest)
	if err != nil {
		return 0, fmt.Errorf("%s: unexpected answer %q", path, body)
	}
	return v, nil
}

// read returns name's count through n. Reads are retried for up to a
// minute: right after a node (re)joins, shard leaderships move to it one
// by one, and a request that meets a transfer can fail.
func (h *harness) read(n *node, name string) int {
	h.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		v, err := count(n.app, "/", name)
		if err == nil {
			return v
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("GET %s/?name=%s via %s: %v", n.app, name, n.name, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// increment increments name through n, whose count was prev, and returns
// the new count: prev+1 if the first attempt is answered. A failed attempt
// may or may not have counted, so after failures (see read) the answer may
// be up to prev+attempts; anything else fails the test.
func (h *harness) increment(n *node, name string, prev int) int {
	h.t.Helper()
	var errs []string
	for attempt := 1; attempt <= 20; attempt++ {
		v, err := count(n.app, "/increment", name)
		if err != nil {
			errs = append(errs, err.Error())
			time.Sleep(time.Second)
			continue
		}
		if v < prev+1 || v > prev+attempt {
			h.t.Fatalf("increment of %s via %s: count %d, want %d (attempt %d; earlier ones failed: %v)", name, n.name, v, prev+1, attempt, errs)
		}
		if len(errs) > 0 {
			h.t.Logf("increment of %s via %s: count %d after %d failed attempts: %v", name, n.name, v, len(errs), errs)
		}
		return v
	}
	h.t.Fatalf("increment of %s via %s failed 20 times: %v", name, n.name, errs)
	return 0
}

// settle waits until reads of a few dozen objects (spread over the shards)
// succeed through every node in three sweeps in a row: the leader moves
// that follow a node's (re)start are then likely over.
func (h *harness) settle(nodes ...*node) {
	h.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for good := 0; good < 3; {
		ok := true
		for _, n := range nodes {
			for i := range 32 {
				if _, err := count(n.app, "/", fmt.Sprintf("probe-%d", i)); err != nil {
					ok = false
					break
				}
			}
		}
		if ok {
			good++
		} else {
			good = 0
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("reads through every node still failing after 2 minutes")
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// replicas returns how many shard replicas the cluster map gives node id,
// as `roost members -o json` run in via's container says.
func (h *harness) replicas(via *node, id string) int {
	h.t.Helper()
	out := h.docker(time.Minute, "exec", via.container, "/roost", "members", "-o", "json")
	var resp struct {
		Members []struct {
			ID       string `json:"id"`
			Replicas int    `json:"replicas"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		h.t.Fatalf("roost members -o json: %v\n%s", err, out)
	}
	for _, m := range resp.Members {
		if m.ID == id {
			return m.Replicas
		}
	}
	h.t.Fatalf("roost members: no %s in\n%s", id, out)
	return 0
}

// loadKey is what one load worker saw of its own counter.
type loadKey struct {
	name     string
	attempts int
	acked    int // answered 200 with a count
	failed   int // errors and non-200 answers: the increment may or may not have happened
	maxAcked int
	problems []string // acked counts that did not increase

	errors     map[string]int // failure messages (node-specific parts kept), by count
	failedAt   time.Time      // start of the current run of failures
	longestGap time.Duration  // the longest run of failures, first failure to next success
}

// load runs one sequential client per key, each sending increments round
// robin through the nodes that are up, until stop is closed.
type load struct {
	h    *harness
	keys []*loadKey
	stop chan struct{}
	wg   sync.WaitGroup
}

func (h *harness) startLoad(keys int) *load {
	l := &load{h: h, stop: make(chan struct{})}
	for i := range keys {
		k := &loadKey{name: fmt.Sprintf("load-%d", i)}
		l.keys = append(l.keys, k)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.worker(i, k)
		}()
	}
	return l
}

func (l *load) worker(i int, k *loadKey) {
	deadline := time.Now().Add(4 * time.Minute) // bounded even if the test forgets to stop it
	for turn := i; time.Now().Before(deadline); turn++ {
		select {
		case <-l.stop:
			return
		default:
		}
		target := l.pick(turn)
		if target == "" {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		k.attempts++
		v, err := count(target, "/increment", k.name)
		if err != nil {
			k.failed++
			if k.failedAt.IsZero() {
				k.failedAt = time.Now()
			}
			if k.errors == nil {
				k.errors = map[string]int{}
			}
			k.errors[errorKind(err)]++
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !k.failedAt.IsZero() {
			k.longestGap = max(k.longestGap, time.Since(k.failedAt))
			k.failedAt = time.Time{}
		}
		k.acked++
		if v <= k.maxAcked {
			k.problems = append(k.problems, fmt.Sprintf("acked count %d after acked count %d", v, k.maxAcked))
		} else {
			k.maxAcked = v
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// errorKind shortens a failure for the summary: the answer's status and
// message, or the transport error without the URL (ports differ).
func errorKind(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := err.Error()
	if len(msg) > 240 {
		msg = msg[:240] + "…"
	}
	return msg
}

// pick returns the app URL of the turn-th node that is up.
func (l *load) pick(turn int) string {
	h := l.h
	h.mu.Lock()
	defer h.mu.Unlock()
	var up []string
	for _, name := range []string{"n1", "n2", "n3", "n4"} {
		if n := h.nodes[name]; n != nil && n.up {
			up = append(up, n.app)
		}
	}
	if len(up) == 0 {
		return ""
	}
	return up[turn%len(up)]
}

func (l *load) finish() {
	close(l.stop)
	l.wg.Wait()
}

func (l *load) summary() string {
	var acked, failed int
	for _, k := range l.keys {
		acked += k.acked
		failed += k.failed
	}
	return fmt.Sprintf("%d clients, %d increments acknowledged, %d failed or unanswered", len(l.keys), acked, failed)
}

// setUp marks a node up or down for the load.
func (h *harness) setUp(n *node, up bool) {
	h.mu.Lock()
	n.up = up
	h.mu.Unlock()
}

func TestComposeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: builds an image and runs a Docker cluster")
	}
	if out, err := run(30*time.Second, "", os.Environ(), "docker", "info"); err != nil {
		t.Skipf("skipped: no Docker daemon (docker info: %v: %s)", err, firstLine(out))
	}
	compose, ok := findCompose()
	if !ok {
		t.Skip("skipped: no docker compose or docker-compose")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "docker-compose.yml")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	h := &harness{
		t: t, root: root, compose: compose, start: time.Now(),
		env:   composeEnv(freePort(t), freePort(t)),
		nodes: map[string]*node{},
	}
	h.logf("using %s, project %s", strings.Join(compose, " "), project)

	h.buildImage()
	t.Cleanup(func() {
		if _, err := run(time.Minute, root, h.env, "docker", "rmi", image); err != nil {
			t.Logf("docker rmi %s: %v", image, err)
		}
	})

	h.down() // what an interrupted earlier run may have left
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := h.composeCmd(time.Minute, "logs", "--no-color", "--tail", "80")
			t.Logf("compose logs (last lines of each node):\n%s", out)
		}
		h.down()
		h.logf("compose down -v done")
	})
	h.composeRun(3*time.Minute, "up", "-d", "--no-build", "n1", "n2", "n3")
	h.logf("compose up -d: n1, n2, n3")
	for _, name := range []string{"n1", "n2", "n3"} {
		h.startService(name)
	}
	h.waitHealthy(3*time.Minute, "n1", "n2", "n3")
	n1, n2, n3 := h.nodes["n1"], h.nodes["n2"], h.nodes["n3"]
	all := []*node{n1, n2, n3}
	h.settle(all...)
	h.logf("reads through every node succeed")

	// The README's counter, through every node: each forwards to the
	// object's shard leader, wherever that is.
	a := h.increment(n1, "A", 0) // 1, unless an attempt failed (then logged)
	t.Logf("GET %s/increment?name=A: Durable Object 'A' count: %d", n1.app, a)
	a = h.increment(n2, "A", a)
	a = h.increment(n3, "A", a)
	for _, n := range all {
		if got := h.read(n, "A"); got != a {
			t.Fatalf("read of A via %s: count %d, want %d", n.name, got, a)
		}
	}
	// More objects, so that shards led by every node are used.
	for i := range 12 {
		name, v := fmt.Sprintf("obj-%d", i), 0
		for _, n := range all {
			v = h.increment(n, name, v)
		}
	}
	h.logf("every node serves: A counted to %d through n1, n2, n3; 12 more objects through all three", a)

	// SIGKILL a node under load, start it again, then check that no
	// acknowledged increment was lost. n2 first, then n1 (the node the
	// others joined first and the one published in docker-compose.yml).
	l := h.startLoad(6)
	loadStopped := false
	defer func() {
		if !loadStopped {
			l.finish()
		}
	}()
	time.Sleep(3 * time.Second)
	for _, victim := range []*node{n2, n1} {
		h.setUp(victim, false)
		h.docker(time.Minute, "kill", victim.container)
		h.logf("docker kill %s (SIGKILL) under load", victim.name)
		time.Sleep(5 * time.Second)
		h.docker(time.Minute, "start", victim.container)
		h.logf("docker start %s", victim.name)
		h.refreshPorts(victim)
		h.setUp(victim, false) // no load through it until it is healthy
		h.waitHealthy(2*time.Minute, victim.name)
		h.setUp(victim, true)
		time.Sleep(3 * time.Second)
	}
	l.finish()
	loadStopped = true
	h.logf("load stopped: %s", l.summary())

	final := map[string]int{} // each load key's count once the load stopped
	for _, k := range l.keys {
		for _, p := range k.problems {
			t.Errorf("%s: %s", k.name, p)
		}
		if k.acked == 0 {
			t.Errorf("%s: no increment acknowledged in %d attempts", k.name, k.attempts)
			continue
		}
		var counts []string
		first := -1
		for _, n := range all {
			got := h.read(n, k.name)
			counts = append(counts, fmt.Sprintf("%s: %d", n.name, got))
			if got < k.maxAcked {
				t.Errorf("%s via %s: count %d, but count %d was acknowledged: acknowledged increments lost", k.name, n.name, got, k.maxAcked)
			}
			if got > k.attempts {
				t.Errorf("%s via %s: count %d, more than the %d increments sent", k.name, n.name, got, k.attempts)
			}
			if first >= 0 && got != first {
				t.Errorf("%s: counts differ between nodes (%s)", k.name, strings.Join(counts, ", "))
			}
			if first < 0 {
				first = got
			}
		}
		final[k.name] = first
		t.Logf("%s: %d sent, %d acknowledged (highest count %d), %d failed (longest run of failures %v); count now %d",
			k.name, k.attempts, k.acked, k.maxAcked, k.failed, k.longestGap.Round(10*time.Millisecond), first)
		for msg, n := range k.errors {
			t.Logf("    %d× %s", n, msg)
		}
	}
	if t.Failed() {
		return
	}
	h.logf("no acknowledged increment lost: every count >= the highest count acknowledged, the same through every node")

	// The count goes on through the restarted nodes.
	before := h.read(n3, "A")
	if before != a {
		t.Fatalf("A via n3 after the restarts: count %d, want %d", before, a)
	}
	a = h.increment(n2, "A", a)
	a = h.increment(n1, "A", a)
	h.logf("A continues through the restarted nodes: %d, then %d", before, a)

	// Profile "scale": a fourth node joins the running cluster and serves
	// (by forwarding; it holds no replica until a rebalance).
	h.composeRun(3*time.Minute, "up", "-d", "--no-build", "n4")
	n4 := h.startService("n4")
	h.waitHealthy(2*time.Minute, "n4")
	a = h.increment(n4, "A", a)
	h.logf("n4 (profile scale) joined and serves: A count %d", a)

	// Everything so far left every node running and ready. The test
	// override sets restart: "no", so a node that crashed would be exited.
	h.checkAllReady(30*time.Second, "before any rebalance")

	// n4 holds no replica until a rebalance, done with the roost CLI in
	// n1's container (the image has no shell, but exec runs /roost). Only
	// with a binary that has the admin commands.
	if _, err := run(time.Minute, root, h.env, "docker", "exec", n1.container, "/roost", "rebalance", "--help"); err != nil {
		h.logf("this roost has no rebalance command: the rebalance onto n4 is not checked")
		return
	}
	if got := h.replicas(n1, "n4"); got != 0 {
		t.Errorf("n4 holds %d replicas before any rebalance, want 0", got)
	}
	h.docker(4*time.Minute, "exec", n1.container, "/roost", "rebalance", "--wait")
	got := h.replicas(n1, "n4")
	if got == 0 {
		t.Fatalf("n4 holds no replica after roost rebalance --wait")
	}
	h.logf("roost rebalance --wait (exec in n1): n4 now holds %d shard replicas", got)
	for _, n := range []*node{n4, n1, n2, n3} {
		a = h.increment(n, "A", a)
	}
	for _, k := range l.keys {
		for _, n := range []*node{n4, n1} {
			if got := h.read(n, k.name); got != final[k.name] {
				t.Errorf("%s after the rebalance: count %d via %s, was %d", k.name, got, n.name, final[k.name])
			}
		}
	}
	h.logf("after the rebalance: A counted to %d through n4, n1, n2, n3; the load's counts unchanged", a)
	h.checkAllReady(30*time.Second, "after roost rebalance")
}

// checkAllReady checks that every node's container is running and that
// its /readyz answers 200 within timeout; it reports the reason of those
// that do not.
func (h *harness) checkAllReady(timeout time.Duration, when string) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	var names []string
	for _, name := range []string{"n1", "n2", "n3", "n4"} {
		if h.nodes[name] != nil {
			names = append(names, name)
		}
	}
	for _, name := range names {
		n := h.nodes[name]
		if out := strings.TrimSpace(h.docker(30*time.Second, "inspect", "-f", "{{.State.Status}} {{.RestartCount}}", n.container)); out != "running 0" {
			h.t.Errorf("%s: %s is %q (status, restarts), want running 0", when, name, out)
			continue
		}
		var last string
		for {
			resp, err := client.Get(n.admin + "/readyz")
			if err == nil {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					last = ""
					break
				}
				last = fmt.Sprintf("%s %s", resp.Status, strings.TrimSpace(string(b)))
			} else {
				last = err.Error()
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if last != "" {
			h.t.Errorf("%s: %s /readyz still answers %q after %v", when, name, last, timeout)
		}
	}
	if !h.t.Failed() {
		h.logf("%s: %s running, never restarted, /readyz 200", when, strings.Join(names, ", "))
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
