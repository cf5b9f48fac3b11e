package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConnectionFloodLeavesStorageItsFiles holds more idle connections
// open on a node's app port than its open-file limit (512 here) allows,
// then writes values large enough to make Pebble open new files (a
// memtable flush, a new WAL). The app listener refuses what is over its
// share with a 503, so storage keeps its descriptors: every put is
// acknowledged and read back, nothing is logged of files that could not
// be opened, and the app port serves again once the flood lets go.
// Before, the flood took every descriptor: Pebble logged thousands of
// errors a second and the node panicked or answered 500 (found by QA).
func TestConnectionFloodLeavesStorageItsFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("connection-flood test skipped in -short mode")
	}
	const fileLimit, flood = 512, 600
	config := filepath.Join(t.TempDir(), "roost.toml")
	if err := os.WriteFile(config, []byte("[[kv_namespaces]]\nbinding = \"BLOBS\"\nid = \"blobs\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	httpAddr, admin := freeAddr(t), freeAddr(t)
	// The shell sets the limit, soft and hard, for the node alone.
	p := launch(t, "roost dev", "sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, fileLimit),
		roostBinary(t), "dev", "--data-dir", filepath.Join(t.TempDir(), "d"), "--http", httpAddr, "--admin", admin, "--config", config)
	p.http, p.admin = httpAddr, admin
	p.waitReady(30 * time.Second)
	if code, body := kvAdmin(t, admin, http.MethodPut, "warm", []byte("x")); code != http.StatusOK {
		t.Fatalf("first put: %d %s", code, body)
	}

	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for range flood {
		c, err := net.DialTimeout("tcp", httpAddr, 5*time.Second)
		if err != nil {
			t.Fatalf("dialing the app port: %v", err)
		}
		// A whole request: its connection then stays open, idle, for the
		// server's idle timeout (minutes), where half a request is
		// dropped after the header timeout (seconds).
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	answered, refused := 0, 0
	readBy := time.Now().Add(5 * time.Second)
	for _, c := range held {
		c.SetReadDeadline(readBy)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			continue
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			answered++
		case http.StatusServiceUnavailable:
			refused++
		default:
			t.Fatalf("a flood connection read %s", resp.Status)
		}
	}
	t.Logf("of %d connections, %d answered and held open, %d refused with 503", flood, answered, refused)
	if answered+refused != flood || refused == 0 || answered == 0 {
		t.Fatalf("%d of %d connections answered, %d refused: want every one either served or refused, some of each (the app listener's share of %d files)", answered, flood, refused, fileLimit)
	}

	putBigValues(t, admin, "while the app port is flooded")
	checkRefusalsLogged(t, p)

	for _, c := range held {
		c.Close()
	}
	held = nil
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body, err := p.get(t.Context(), "/increment?name=after-the-flood")
		if err == nil && code == http.StatusOK && strings.Contains(body, "count: 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the app port after the flood: %d %q %v", code, body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestGRPCFloodLeavesStorageItsFiles is the test above for a cluster
// node's gRPC port, which peers alone should use but anyone who reaches it
// can hold connections on: under a 512-file limit, 600 idle connections
// there, then four puts of 20 MiB. Before the gRPC listener had a share of
// its own, the flood took every descriptor and the puts found no answer.
func TestGRPCFloodLeavesStorageItsFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("connection-flood test skipped in -short mode")
	}
	const fileLimit, flood = 512, 600
	spec := newNodeSpec(t, "n1", 1, 4)
	spec.config = filepath.Join(t.TempDir(), "roost.toml")
	if err := os.WriteFile(spec.config, []byte("[[kv_namespaces]]\nbinding = \"BLOBS\"\nid = \"blobs\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := launch(t, "roost node", "sh", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, fileLimit), roostBinary(t)},
		append(spec.args(), "--replicas", "1")...)...)
	p.http, p.admin = spec.http, spec.admin
	p.waitReady(60 * time.Second)

	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for range flood {
		c, err := net.DialTimeout("tcp", spec.grpc, 5*time.Second)
		if err != nil {
			t.Fatalf("dialing the gRPC port: %v", err)
		}
		held = append(held, c)
	}
	putBigValues(t, spec.admin, "while the gRPC port is flooded")
	checkRefusalsLogged(t, p)
}

// putBigValues puts four values of 20 MiB through the KV binding BLOBS,
// each read back once acknowledged: enough to make Pebble open new files.
func putBigValues(t *testing.T, admin, while string) {
	t.Helper()
	value := make([]byte, 20<<20)
	for i := range 4 {
		rand.Read(value)
		key := fmt.Sprintf("big%d", i)
		if code, body := kvAdmin(t, admin, http.MethodPut, key, value); code != http.StatusOK {
			t.Fatalf("put %s of 20 MiB %s: %d %s", key, while, code, body)
		}
		if code, got := kvAdmin(t, admin, http.MethodGet, key, nil); code != http.StatusOK || !bytes.Equal(got, value) {
			t.Fatalf("acknowledged %s read back: %d, %s", key, code, describe(code, got))
		}
	}
}

// checkRefusalsLogged fails unless p logged refusing connections and
// never ran out of descriptors.
func checkRefusalsLogged(t *testing.T, p *process) {
	t.Helper()
	if log := p.log.String(); strings.Contains(log, "too many open files") {
		t.Fatalf("the node ran out of file descriptors:\n%s", lastLines(log, 10))
	}
	if !strings.Contains(p.log.String(), "refused a connection") {
		t.Fatalf("the refusals were not logged:\n%s", lastLines(p.log.String(), 10))
	}
}
