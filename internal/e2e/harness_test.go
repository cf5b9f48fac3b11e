package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roostdb/roost/internal/testnet"
)

var (
	buildMu  sync.Mutex
	binaries = map[string]string{} // package → built binary
	binDir   string
)

// buildBinary builds the main package pkg once per test run.
func buildBinary(t *testing.T, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := binaries[pkg]; ok {
		return bin
	}
	if binDir == "" {
		dir, err := os.MkdirTemp("", "roost-e2e-bin")
		if err != nil {
			t.Fatal(err)
		}
		binDir = dir
	}
	bin := filepath.Join(binDir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	binaries[pkg] = bin
	return bin
}

// roostBinary is the stock roost binary.
func roostBinary(t *testing.T) string { return buildBinary(t, "github.com/roostdb/roost/cmd/roost") }

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func freeAddr(t *testing.T) string { return testnet.FreeAddr(t) }

// syncBuffer collects a process's output; the process writes while the
// test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// maxLoggedOutput caps how much of a process's output a failed test logs:
// the end, where the failure usually is.
const maxLoggedOutput = 256 << 10

// process is one process of a binary built on cli.Run (`roost dev`,
// `roost node`, ...), killed when the test ends; its output is logged if the
// test failed.
type process struct {
	t           *testing.T
	name        string // for messages: "roost dev", "node n2", ...
	cmd         *exec.Cmd
	dataDir     string
	http, admin string
	log         *syncBuffer
	started     time.Time
	exited      chan struct{}
	exitErr     error
}

// childEnv is the environment of the processes under test: ours without
// ROOST_* variables, which would override the flags the tests give.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ROOST_") {
			env = append(env, kv)
		}
	}
	return env
}

// launch starts `bin args...` without waiting for anything.
func launch(t *testing.T, name, bin string, args ...string) *process {
	t.Helper()
	p := &process{t: t, name: name, log: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = childEnv()
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			out := p.log.String()
			if len(out) > maxLoggedOutput {
				out = "[...]" + out[len(out)-maxLoggedOutput:]
			}
			t.Logf("%s output (pid %d, started %s, %v):\n%s", p.name, p.cmd.Process.Pid, p.started.Format("15:04:05.000"), p.exitErr, out)
		}
	})
	return p
}

func startDev(t *testing.T, dataDir string) *process {
	t.Helper()
	return startDevBinary(t, roostBinary(t), dataDir)
}

// startDevBinary runs `<bin> dev` (any binary built on cli.Run) and waits
// until it is ready.
func startDevBinary(t *testing.T, bin, dataDir string) *process {
	t.Helper()
	p := launchDev(t, bin, dataDir)
	p.waitReady(30 * time.Second)
	return p
}

// launchDev runs `<bin> dev` without waiting until it is ready.
func launchDev(t *testing.T, bin, dataDir string) *process {
	t.Helper()
	httpAddr, admin := freeAddr(t), freeAddr(t)
	p := launch(t, "roost dev", bin, "dev", "--data-dir", dataDir, "--http", httpAddr, "--admin", admin, "--config", "")
	p.dataDir, p.http, p.admin = dataDir, httpAddr, admin
	return p
}

// nodeSpec is how one `roost node` of a test cluster is started; a node
// restarts with the same spec.
type nodeSpec struct {
	id, dataDir               string
	http, admin, grpc, gossip string
	join                      []string
	bootstrapExpect, shards   int
	bin                       string // the binary to run; "" is roost
	config                    string // roost.toml to read; "" for none
}

// newNodeSpec gives node id its own data dir and free loopback ports.
func newNodeSpec(t *testing.T, id string, bootstrapExpect, shards int, join ...string) nodeSpec {
	t.Helper()
	return nodeSpec{
		id: id, dataDir: t.TempDir(),
		http: freeAddr(t), admin: freeAddr(t), grpc: freeAddr(t), gossip: freeAddr(t),
		join: join, bootstrapExpect: bootstrapExpect, shards: shards,
	}
}

func (s nodeSpec) args() []string {
	args := []string{"node", "--id", s.id, "--data-dir", s.dataDir,
		"--http", s.http, "--admin", s.admin, "--grpc", s.grpc, "--gossip", s.gossip,
		"--bootstrap-expect", fmt.Sprint(s.bootstrapExpect), "--shards", fmt.Sprint(s.shards), "--config", s.config}
	for _, j := range s.join {
		args = append(args, "--join", j)
	}
	return args
}

// launchNode runs `roost node` with spec without waiting: a cluster node
// is ready only once enough nodes have met (see waitReady).
func launchNode(t *testing.T, name string, s nodeSpec) *process {
	t.Helper()
	bin := s.bin
	if bin == "" {
		bin = roostBinary(t)
	}
	p := launch(t, name, bin, s.args()...)
	p.dataDir, p.http, p.admin = s.dataDir, s.http, s.admin
	return p
}

// readyz returns the status and body of GET /readyz on the admin listener.
func (p *process) readyz() (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+p.admin+"/readyz", nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitReady waits until /readyz answers 200, failing the test if the
// process exits first or timeout passes.
func (p *process) waitReady(timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for {
		code, body, err := p.readyz()
		if err == nil && code == 200 {
			return
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%d %s", code, strings.TrimSpace(body))
		}
		select {
		case <-p.exited:
			p.t.Fatalf("%s exited during startup: %v\n%s", p.name, p.exitErr, p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s not ready after %v (last /readyz: %s)", p.name, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitExit waits for the process to exit by itself and returns how it did.
// hasExited reports whether the process has exited.
func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

func (p *process) waitExit(timeout time.Duration) error {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.exitErr
	case <-time.After(timeout):
		p.t.Fatalf("%s still running after %v", p.name, timeout)
		return nil
	}
}

// stop sends sig and waits for the process to exit.
func (p *process) stop(sig syscall.Signal) error {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.exited:
		return p.exitErr
	case <-time.After(30 * time.Second):
		p.t.Fatalf("%s did not exit within 30s of %v", p.name, sig)
		return nil
	}
}

var client = &http.Client{Timeout: 10 * time.Second}

// get returns the status and body of GET path on the app listener.
func (p *process) get(ctx context.Context, pathAndQuery string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+p.http+pathAndQuery, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (p *process) mustGet(pathAndQuery string) (int, string) {
	p.t.Helper()
	code, body, err := p.get(context.Background(), pathAndQuery)
	if err != nil {
		p.t.Fatalf("GET %s: %v", pathAndQuery, err)
	}
	return code, body
}

func nameQuery(name string) string { return "?name=" + url.QueryEscape(name) }
