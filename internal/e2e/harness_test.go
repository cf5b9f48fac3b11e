package e2e

import (
	"context"
	"io"
	"net"
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

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// devProcess is one `roost dev` process.
type devProcess struct {
	t           *testing.T
	cmd         *exec.Cmd
	dataDir     string
	http, admin string
	log         *strings.Builder
	exited      chan struct{}
	exitErr     error
}

func startDev(t *testing.T, dataDir string) *devProcess {
	t.Helper()
	return startDevBinary(t, roostBinary(t), dataDir)
}

// startDevBinary runs `<bin> dev` (any binary built on cli.Run) and waits
// until it is ready.
func startDevBinary(t *testing.T, bin, dataDir string) *devProcess {
	t.Helper()
	p := &devProcess{t: t, dataDir: dataDir, http: freeAddr(t), admin: freeAddr(t), log: &strings.Builder{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "dev", "--data-dir", dataDir, "--http", p.http, "--admin", p.admin, "--config", "")
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	var logMu sync.Mutex
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := pr.Read(b)
			logMu.Lock()
			p.log.Write(b[:n])
			logMu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		pw.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			logMu.Lock()
			t.Logf("roost dev output:\n%s", p.log.String())
			logMu.Unlock()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + p.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("roost dev exited during startup: %v\n%s", p.exitErr, p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("roost dev not ready after 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// signal sends sig and waits for the process to exit.
func (p *devProcess) stop(sig syscall.Signal) error {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.exited:
		return p.exitErr
	case <-time.After(30 * time.Second):
		p.t.Fatalf("roost dev did not exit within 30s of %v", sig)
		return nil
	}
}

var client = &http.Client{Timeout: 10 * time.Second}

// get returns the status and body of GET path on the app listener.
func (p *devProcess) get(ctx context.Context, pathAndQuery string) (int, string, error) {
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

func (p *devProcess) mustGet(pathAndQuery string) (int, string) {
	p.t.Helper()
	code, body, err := p.get(context.Background(), pathAndQuery)
	if err != nil {
		p.t.Fatalf("GET %s: %v", pathAndQuery, err)
	}
	return code, body
}

func nameQuery(name string) string { return "?name=" + url.QueryEscape(name) }
