package dockertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	t        *testing.T
	root     string   // the module root (where docker-compose.yml is)
	compose  []string // "docker compose" or "docker-compose"
	env      []string // the environment of compose commands
	start    time.Time
	roostCLI string   // the roost binary built for the image, run on the host as the admin CLI
	network  string   // the compose project's Docker network
	phases   []*phase // the fault phases run so far

	mu    sync.Mutex
	nodes map[string]*node // the nodes started and not removed
}

// node is one compose service as the test sees it.
type node struct {
	name      string
	container string // container ID; the same across docker kill / docker start
	app       string // http://127.0.0.1:port of its app listener
	admin     string
	up        bool // load goes only to nodes that are up (ready, and no fault on them)
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
	h.roostCLI = filepath.Join(ctxDir, "bin/roost")
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
	n.app, n.admin = app, admin
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

// setUp marks a node up or down for the load.
func (h *harness) setUp(n *node, up bool) {
	h.mu.Lock()
	n.up = up
	h.mu.Unlock()
}

// setAllUp puts every node back under load.
func (h *harness) setAllUp() {
	for _, n := range h.liveNodes() {
		h.setUp(n, true)
	}
}

// liveNodes returns the nodes started and not removed, by name.
func (h *harness) liveNodes() []*node {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*node
	for _, n := range h.nodes {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *node) int { return strings.Compare(a.name, b.name) })
	return out
}

// forget drops a node the test removed from the cluster and stopped.
func (h *harness) forget(n *node) {
	h.mu.Lock()
	delete(h.nodes, n.name)
	h.mu.Unlock()
}

// randomUpNode returns a copy of a random node that is up, or nil.
func (h *harness) randomUpNode(rng *rand.Rand) *node {
	h.mu.Lock()
	defer h.mu.Unlock()
	var up []node
	for _, n := range h.nodes {
		if n.up {
			up = append(up, *n)
		}
	}
	if len(up) == 0 {
		return nil
	}
	return &up[rng.IntN(len(up))]
}

// readyz returns nil once n's /readyz answers 200, else why not.
func readyz(n *node) error {
	resp, err := client.Get(n.admin + "/readyz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// roostCmd runs the admin CLI on the host against the published admin port
// of the first node that is up (the image has no shell to run it in).
func (h *harness) roostCmd(timeout time.Duration, args ...string) (string, error) {
	for _, n := range h.liveNodes() {
		if n.up {
			return run(timeout, h.root, h.env, h.roostCLI, append(args, "--addr", n.admin)...)
		}
	}
	return "", errors.New("no node is up to run it against")
}

// roost is roostCmd that fails the test on error.
func (h *harness) roost(timeout time.Duration, args ...string) string {
	h.t.Helper()
	out, err := h.roostCmd(timeout, args...)
	if err != nil {
		h.t.Fatalf("roost %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// roostOperation runs a rebalance or drain with --wait, starting it again
// when it fails, until it succeeds or timeout has passed, and returns how
// many times it was started. A new meta leader carries a running
// operation on and --wait follows it, but a --wait can still fail on a
// loaded machine (it gives up after 30 s of unanswered polls); started
// again the operation plans from the current map, so each start takes up
// where the last one stopped (docs/admin-api.md).
func (h *harness) roostOperation(timeout time.Duration, args ...string) int {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for starts := 1; ; starts++ {
		out, err := h.roostCmd(time.Until(deadline), append(args, "--wait")...)
		if err == nil {
			return starts
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("roost %s --wait still failing after %v (%d starts); the last time: %v\n%s", strings.Join(args, " "), timeout, starts, err, out)
		}
		h.logf("roost %s --wait: %v (%s); starting it again", strings.Join(args, " "), err, lastLine(out))
		time.Sleep(time.Second)
	}
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
	h.network = strings.TrimSpace(h.docker(time.Minute, "inspect", "-f", "{{range $net, $_ := .NetworkSettings.Networks}}{{$net}}{{end}}", n1.container))
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
	h.setAllUp()

	// The faults, one phase each, under a counter load through every node
	// but the one at fault. The node leading the most shards is the one
	// whose loss moves the most leaderships.
	victim := h.busiestLeader()
	h.runPhase("network-disconnect", victim.name, func(p *phase) {
		h.setUp(victim, false)
		reconnect := h.dockerWithUndo(
			[]string{"network", "disconnect", h.network, victim.container},
			// --alias: the service name the other nodes dial; a plain
			// connect would not give it back.
			[]string{"network", "connect", "--alias", victim.name, h.network, victim.container})
		p.markInjected()
		time.Sleep(5 * time.Second)
		reconnect()
		p.markHealed()
		h.refreshPorts(victim) // the published ports go with the network
	})

	victim = h.busiestLeader()
	h.runPhase("kill-leader", victim.name, func(p *phase) {
		h.setUp(victim, false)
		h.docker(time.Minute, "kill", victim.container)
		p.markInjected()
		time.Sleep(5 * time.Second)
		h.docker(time.Minute, "start", victim.container)
		p.markHealed()
		h.refreshPorts(victim) // Docker picks new host ports (n1's are fixed)
	})

	victim = h.busiestLeader()
	h.runPhase("pause", victim.name, func(p *phase) {
		h.setUp(victim, false)
		unpause := h.dockerWithUndo([]string{"pause", victim.container}, []string{"unpause", victim.container})
		p.markInjected()
		time.Sleep(5 * time.Second)
		unpause()
		p.markHealed()
	})

	// A one-way partition: the node leading the most shards can call out
	// and no one can call in. It keeps heartbeating its followers, so Raft
	// sees nothing wrong; the others must find out that they cannot reach
	// it, and move its shards (docs/operations.md, "A one-way partition").
	victim = h.busiestLeader()
	if whyNot := h.canCutInbound(victim); whyNot != "" {
		h.logf("phase=one-way-partition skipped: %s", whyNot)
	} else {
		h.runPhase("one-way-partition", victim.name, func(p *phase) {
			h.setUp(victim, false)
			heal, whyNot := h.cutInbound(victim)
			if whyNot != "" {
				t.Fatalf("cutting %s off inbound: %s", victim.name, whyNot)
			}
			p.markInjected()
			time.Sleep(15 * time.Second)
			heal()
			p.markHealed()
		})
	}

	// Profile "scale": a fourth node joins the running cluster and serves
	// (by forwarding) but holds no replica until the rebalance, which is
	// the phase's "fault".
	h.runPhase("add-node-rebalance", "n4", func(p *phase) {
		h.composeRun(3*time.Minute, "up", "-d", "--no-build", "n4")
		n4 := h.startService("n4")
		h.waitReady(2*time.Minute, p.name)
		h.setUp(n4, true)
		if got := h.members()["n4"].Replicas; got != 0 {
			t.Errorf("n4 holds %d replicas before any rebalance, want 0", got)
		}
		p.markInjected()
		starts := h.roostOperation(3*time.Minute, "rebalance")
		p.markHealed()
		got := h.members()["n4"].Replicas
		if got == 0 {
			t.Fatalf("n4 holds no replica after roost rebalance --wait")
		}
		h.logf("roost rebalance --wait (started %d times): n4 now holds %d shard replicas", starts, got)
	})

	// Taking n4 out again, as docs/operations.md says: drain moves its
	// replicas off and leaves it a draining member holding none; remove
	// takes it out of the map; then it is stopped.
	h.runPhase("drain-remove", "n4", func(p *phase) {
		n4 := h.nodes["n4"]
		p.markInjected()
		t0 := time.Now()
		starts := h.roostOperation(3*time.Minute, "drain", "n4")
		tDrained := time.Now()
		// n1 answers from its copy of the map, which may trail the meta
		// leader's by the drain's last step.
		deadline := time.Now().Add(10 * time.Second)
		for {
			m := h.members()["n4"]
			if m.State == "draining" && m.Replicas == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("n4 after roost drain --wait: state %q with %d replicas, want draining with 0", m.State, m.Replicas)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		tSeen := time.Now()
		h.roost(time.Minute, "remove", "n4")
		tRemoved := time.Now()
		h.setUp(n4, false)
		h.docker(time.Minute, "stop", n4.container)
		h.forget(n4)
		p.markHealed()
		h.logf("roost drain n4 --wait (started %d times) %v, n4 seen drained %v later, roost remove n4 %v, docker stop n4 %v",
			starts, tDrained.Sub(t0).Round(100*time.Millisecond), tSeen.Sub(tDrained).Round(100*time.Millisecond),
			tRemoved.Sub(tSeen).Round(100*time.Millisecond), time.Since(tRemoved).Round(100*time.Millisecond))
	})

	h.checkEarlierPhases()
	// The README's counter goes on through every node, restarted ones too.
	for _, n := range h.liveNodes() {
		a = h.increment(n, "A", a)
	}
	h.logf("A counted on to %d through %s", a, strings.Join(names(h.liveNodes()), ", "))
	h.checkAllReady(30*time.Second, "after every phase")
}

// checkAllReady checks that every node's container is running, was never
// restarted by Docker (the test override sets restart: "no", so a node
// that crashed would be exited) and that its /readyz answers 200 within
// timeout; it reports the reason of those that do not.
func (h *harness) checkAllReady(timeout time.Duration, when string) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	live := h.liveNodes()
	for _, n := range live {
		if out := strings.TrimSpace(h.docker(30*time.Second, "inspect", "-f", "{{.State.Status}} {{.RestartCount}}", n.container)); out != "running 0" {
			h.t.Errorf("%s: %s is %q (status, restarts), want running 0", when, n.name, out)
			continue
		}
		for {
			err := readyz(n)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				h.t.Errorf("%s: %s /readyz still answers %q after %v", when, n.name, err, timeout)
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	if !h.t.Failed() {
		h.logf("%s: %s running, never restarted, /readyz 200", when, strings.Join(names(live), ", "))
	}
}

func names(nodes []*node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.name)
	}
	return out
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
