package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDiskFull: a node whose disk fills stops — Pebble treats a failed log
// write as fatal, and the process exits — instead of acknowledging writes
// it could not store; the other two go on serving every shard; once space
// is freed the node restarts from its data dir, catches up, and serves,
// as the leader of every shard, everything acknowledged meanwhile. The
// full disk is a 24 MiB tmpfs under n3's data dir, which takes root to
// mount: elsewhere the test says so and skips.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("disk-full test skipped in -short mode")
	}
	const shards = 8
	c, small := startSmallDiskCluster(t, "24m", shards)
	n1, n3 := c.procs[0], c.procs[2]

	value := make([]byte, 4<<20)
	rand.Read(value)
	var acked []string
	for i := 0; i < 16 && len(acked) < 12; i++ {
		key := fmt.Sprintf("b%02d", i)
		code, body := kvAdmin(t, n1.admin, http.MethodPut, key, value)
		switch {
		case code == http.StatusOK:
			acked = append(acked, key)
		default: // the put reached n3 as it failed: its outcome is unknown
			t.Logf("put %s: %d %s", key, code, body)
		}
	}
	if err := n3.waitExit(30 * time.Second); err == nil {
		t.Fatalf("n3 exited cleanly with its disk full; want the fatal log-write error")
	}
	if log := n3.log.String(); !strings.Contains(log, "no space left on device") {
		t.Fatalf("n3 stopped without a full disk in its log:\n%s", lastLines(log, 20))
	}
	t.Logf("n3 stopped on a full disk; %d puts of 4 MiB acknowledged", len(acked))
	readAcked(t, n1, acked, value, "read through n1 with n3 down")

	if out, err := exec.Command("mount", "-o", "remount,size=512m", small).CombinedOutput(); err != nil {
		t.Fatalf("freeing space: %v %s", err, out)
	}
	n3 = c.launch(2)
	n3.waitReady(60 * time.Second)
	leadEveryShard(t, n3, "n3", shards)
	readAcked(t, n3, acked, value, "read through n3, leading every shard after its restart")
}

// TestDiskFullWhileTheLogHasRoom: the disk fills while n3's WAL still
// has room (Pebble reuses its old log files, already allocated), so writes
// go on being logged and acknowledged while every flush of a memtable
// fails. Once the memtables fill, Pebble stalls every write; n3 looked
// healthy — ready, leading, heartbeating — while the shards it led hung
// (found by QA). Now a stall that lasts 10 s with failing flushes stops
// the node, the others take over, and once space is freed it restarts and
// serves everything acknowledged.
func TestDiskFullWhileTheLogHasRoom(t *testing.T) {
	if testing.Short() {
		t.Skip("disk-full test skipped in -short mode")
	}
	const shards = 8
	c, small := startSmallDiskCluster(t, "256m", shards)
	n1, n3 := c.procs[0], c.procs[2]
	leadEveryShard(t, n1, "n3", shards)
	value := make([]byte, 4<<20)
	rand.Read(value)
	var acked []string
	put := func(key string) {
		if code, body := kvAdmin(t, n1.admin, http.MethodPut, key, value); code == http.StatusOK {
			acked = append(acked, key)
		} else { // the put reached n3 as it failed: its outcome is unknown
			t.Logf("put %s: %d %s", key, code, body)
		}
	}
	// Enough to have Pebble recycle log files, then another file takes
	// the rest of the disk.
	for i := range 15 {
		put(fmt.Sprintf("warm%02d", i))
	}
	filler, err := os.Create(filepath.Join(small, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for {
		if _, err := filler.Write(chunk); err != nil {
			break
		}
	}
	filler.Close()
	for i := 0; i < 30 && !n3.hasExited(); i++ {
		put(fmt.Sprintf("full%02d", i))
	}
	if err := n3.waitExit(60 * time.Second); err == nil {
		t.Fatalf("n3 exited cleanly with its disk full; want it stopped with an error")
	}
	if log := n3.log.String(); !strings.Contains(log, "no space left on device") {
		t.Fatalf("n3 stopped without a full disk in its log:\n%s", lastLines(log, 20))
	}
	t.Logf("n3 stopped on a full disk; %d puts of 4 MiB acknowledged; its last lines:\n%s", len(acked), lastLines(n3.log.String(), 3))
	readAcked(t, n1, acked, value, "read through n1 with n3 down")
	// Space freed: the filler gone, and room for the state n3 now has to
	// take in (the puts acknowledged while it was down).
	if err := os.Remove(filepath.Join(small, "filler")); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "remount,size=1g", small).CombinedOutput(); err != nil {
		t.Fatalf("freeing space: %v %s", err, out)
	}
	n3 = c.launch(2)
	n3.waitReady(60 * time.Second)
	leadEveryShard(t, n3, "n3", shards)
	readAcked(t, n3, acked, value, "read through n3, leading every shard after its restart")
}

// readAcked reads every key of acked through p's admin API, each of which
// must hold value.
func readAcked(t *testing.T, p *process, acked []string, value []byte, how string) {
	t.Helper()
	for _, key := range acked {
		if code, got := kvAdmin(t, p.admin, http.MethodGet, key, nil); code != http.StatusOK || !bytes.Equal(got, value) {
			t.Fatalf("acknowledged %s %s: %d, %s", key, how, code, describe(code, got))
		}
	}
}

// startSmallDiskCluster starts three nodes with a KV binding BLOBS, n3's
// data dir on a tmpfs of size (which takes root to mount: elsewhere the
// test is skipped, saying so), and returns the cluster and the tmpfs.
func startSmallDiskCluster(t *testing.T, size string, shards int) (*testCluster, string) {
	t.Helper()
	small := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", small).CombinedOutput(); err != nil {
		t.Skipf("disk-full test skipped: cannot mount a %s tmpfs for a full disk (needs root): %v %s", size, err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", small).Run() })
	config := filepath.Join(t.TempDir(), "roost.toml")
	if err := os.WriteFile(config, []byte("[[kv_namespaces]]\nbinding = \"BLOBS\"\nid = \"blobs\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, procs: make([]*process, 3), runs: make([]int, 3)}
	for i := range 3 {
		var join []string
		if i > 0 {
			join = []string{c.specs[0].gossip}
		}
		spec := newNodeSpec(t, fmt.Sprintf("n%d", i+1), 3, shards, join...)
		spec.config = config
		c.specs = append(c.specs, spec)
	}
	c.specs[2].dataDir = filepath.Join(small, "n3")
	for i := range 3 {
		c.launch(i)
	}
	for _, p := range c.procs {
		p.waitReady(60 * time.Second)
	}
	return c, small
}

// leadEveryShard hands the leadership of every shard to node, through the
// admin API at p, retrying each for up to 30 s.
func leadEveryShard(t *testing.T, p *process, node string, shards int) {
	t.Helper()
	for shard := range shards {
		var out struct{ Error string }
		deadline := time.Now().Add(30 * time.Second)
		for {
			code := adminJSON(t, p.admin, http.MethodPost, fmt.Sprintf("/v1/shards/%d/transfer-leader", shard), map[string]string{"to": node}, &out)
			if code == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("transferring shard %d to %s: %d %s", shard, node, code, out.Error)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// kvAdmin puts value at key of the BLOBS namespace, or gets key's value,
// through the admin API at addr.
func kvAdmin(t *testing.T, addr, method, key string, value []byte) (int, []byte) {
	t.Helper()
	var answer struct {
		Value []byte `json:"value"`
		Error string `json:"error"`
	}
	var body any
	if method == http.MethodPut {
		body = map[string][]byte{"value": value}
	}
	code := adminJSON(t, addr, method, "/v1/kv/BLOBS/values/"+key, body, &answer)
	if code != http.StatusOK {
		return code, []byte(answer.Error)
	}
	return code, answer.Value
}

// adminJSON sends body (nil: none) as JSON and decodes the answer into out.
func adminJSON(t *testing.T, addr, method, path string, body, out any) int {
	t.Helper()
	var r *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	} else {
		r = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, "http://"+addr+path, r)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(out)
	return resp.StatusCode
}

// describe is a KV answer for a failure message: the error's text, or the
// value's length.
func describe(code int, body []byte) string {
	if code != http.StatusOK {
		return string(body)
	}
	return fmt.Sprintf("%d bytes", len(body))
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
