package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWritingObjectsExample builds the binary of docs/writing-objects.md
// (examples/guestbook/cmd/guestbook) and uses it as the doc shows.
func TestWritingObjectsExample(t *testing.T) {
	bin := buildBinary(t, "github.com/roostdb/roost/examples/guestbook/cmd/guestbook")
	dir := t.TempDir()
	p := startDevBinary(t, bin, dir)
	sign := func(book, text string) string {
		resp, err := http.Post("http://"+p.http+"/sign?book="+book, "text/plain", strings.NewReader(text))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := sign("hall", "hello"); got != "entry 1\n" {
		t.Fatalf("first signature: %q", got)
	}
	if got := sign("hall", "second visit"); got != "entry 2\n" {
		t.Fatalf("second signature: %q", got)
	}
	if got := sign("other", "elsewhere"); got != "entry 1\n" {
		t.Fatalf("another book: %q", got)
	}
	if _, got := p.mustGet("/?book=hall"); got != "00000001: hello\n00000002: second visit\n" {
		t.Fatalf("listing: %q", got)
	}
	if code, _ := p.mustGet("/"); code != 400 {
		t.Fatalf("no book: status %d", code)
	}
}

// TestKVReaderExample builds examples/kvreader/cmd/kvreader (the seed "Use
// KV from Durable Objects") and uses it: objects write to and read from
// the KV namespace its default binding names.
func TestKVReaderExample(t *testing.T) {
	bin := buildBinary(t, "github.com/roostdb/roost/examples/kvreader/cmd/kvreader")
	p := startDevBinary(t, bin, t.TempDir())
	if code, got := p.mustGet("/?roomId=A"); code != 200 || got != "null" {
		t.Fatalf("before some-other-key is put: %d %q", code, got)
	}
	put := func(key, value string) int {
		req, _ := http.NewRequest(http.MethodPut, "http://"+p.http+"/?roomId=A&key="+key, strings.NewReader(value))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put("some-other-key", "hello"); code != http.StatusNoContent {
		t.Fatalf("put: %d", code)
	}
	if code, got := p.mustGet("/?roomId=B"); code != 200 || got != "\"hello\"" {
		t.Fatalf("another room reads what room A put: %d %q", code, got)
	}
	// The bytes JSON.stringify makes: no HTML escapes.
	if code := put("some-other-key", "a<b&c>"); code != http.StatusNoContent {
		t.Fatalf("put: %d", code)
	}
	if code, got := p.mustGet("/?roomId=B"); code != 200 || got != `"a<b&c>"` {
		t.Fatalf("a value with < & >: %d %q", code, got)
	}
	if code := put("", "x"); code != http.StatusBadRequest {
		t.Fatalf("put with an empty key: %d, want 400", code)
	}
	// A value over the example's bound is refused whole, not cut short.
	if code := put("some-other-key", strings.Repeat("v", 64<<10+1)); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("put of a value over 64 KiB: %d, want 413", code)
	}
	if code, got := p.mustGet("/?roomId=B"); code != 200 || got != `"a<b&c>"` {
		t.Fatalf("after a refused put: %d %q", code, got)
	}
	if code, _ := p.mustGet("/"); code != http.StatusBadRequest {
		t.Fatalf("no room: %d, want 400", code)
	}
}

// TestKVCommand drives `roost kv` (here the kvreader binary's, which binds
// YOUR_KV_NAMESPACE) against a running node: what it puts, the objects
// read, and what they put, it reads; bad input is refused with exit 1 and
// a clear message.
func TestKVCommand(t *testing.T) {
	bin := buildBinary(t, "github.com/roostdb/roost/examples/kvreader/cmd/kvreader")
	p := startDevBinary(t, bin, t.TempDir())
	kv := func(args ...string) (string, string, int) {
		cmd := exec.Command(bin, append(append([]string{"kv"}, args...), "--addr", p.admin, "--binding", "YOUR_KV_NAMESPACE")...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return stdout.String(), stderr.String(), code
	}
	if out, errOut, code := kv("put", "some-other-key", "from the CLI", "--metadata", `{"by":"cli"}`); code != 0 || out != "put some-other-key (12 bytes)\n" {
		t.Fatalf("put: %d %q %q", code, out, errOut)
	}
	if code, got := p.mustGet("/?roomId=A"); code != 200 || got != "\"from the CLI\"" {
		t.Fatalf("the object reads what the CLI put: %d %q", code, got)
	}
	if out, errOut, code := kv("get", "some-key"); code != 0 || !strings.Contains(out, "visited at") {
		t.Fatalf("get what the object put: %d %q %q", code, out, errOut)
	}
	out, errOut, code := kv("list")
	if code != 0 || !strings.Contains(out, "some-key") || !strings.Contains(out, `{"room":"A"}`) || !strings.Contains(out, `{"by":"cli"}`) {
		t.Fatalf("list: %d %q %q", code, out, errOut)
	}
	if out, _, code := kv("list", "--limit", "1"); code != 0 || !strings.Contains(out, "more keys: --cursor ") {
		t.Fatalf("list one page: %d %q", code, out)
	}
	// A ttl under KV's minute is a usage error, refused before any request.
	if _, errOut, code := kv("put", "k", "v", "--ttl", "10s"); code != 2 || !strings.Contains(errOut, "--ttl 10s: whole seconds, at least 1m0s") {
		t.Fatalf("put with a short ttl: %d %q", code, errOut)
	}
	// Keys that are path segments of their own reach the node as keys.
	for _, key := range []string{".", ".."} {
		if _, errOut, code := kv("put", key, "v"); code != 1 || !strings.Contains(errOut, "may not be \""+key+"\"") {
			t.Fatalf("put of key %q: %d %q", key, code, errOut)
		}
	}
	// An expiration in the past is the node's to refuse.
	if _, errOut, code := kv("put", "k", "v", "--expiration", "1000"); code != 1 || !strings.Contains(errOut, "less than 1m0s in the future") {
		t.Fatalf("put with a past expiration: %d %q", code, errOut)
	}
	if _, _, code := kv("delete", "some-other-key"); code != 0 {
		t.Fatalf("delete: %d", code)
	}
	if _, errOut, code := kv("get", "some-other-key"); code != 1 || !strings.Contains(errOut, `has no key "some-other-key"`) {
		t.Fatalf("get after delete: %d %q", code, errOut)
	}
	if code, got := p.mustGet("/?roomId=A"); code != 200 || got != "null" {
		t.Fatalf("after the delete: %d %q", code, got)
	}
}

// TestJobQueueExample builds examples/jobqueue/cmd/jobqueue (the seeds'
// alarm example) and uses it: jobs queued with a 1 s delay are processed
// together when the queue's alarm fires, and a job queued afterwards sets a
// new alarm. A backlog larger than one turn may commit is processed in
// batches, every job once.
func TestJobQueueExample(t *testing.T) {
	bin := buildBinary(t, "github.com/roostdb/roost/examples/jobqueue/cmd/jobqueue")
	p := startDevBinary(t, bin, t.TempDir())
	queue := "q"
	enqueue := func(job string) string {
		resp, err := http.Post("http://"+p.http+"/?queue="+queue+"&delay=1s", "text/plain", strings.NewReader(job))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	type state struct {
		Queued int `json:"queued"`
		Done   []struct {
			Job string `json:"job"`
		} `json:"done"`
	}
	waitDone := func(n int) state {
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, body := p.mustGet("/?queue=" + queue)
			var s state
			if err := json.Unmarshal([]byte(body), &s); err != nil {
				t.Fatalf("GET: %q: %v", body, err)
			}
			if len(s.Done) >= n || time.Now().After(deadline) {
				return s
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for _, job := range []string{"resize 1.png", "resize 2.png"} {
		if got := enqueue(job); got != "Job queued!\n" {
			t.Fatalf("enqueue %q: %q", job, got)
		}
	}
	if s := waitDone(2); s.Queued != 0 || len(s.Done) != 2 || s.Done[0].Job != "resize 1.png" || s.Done[1].Job != "resize 2.png" {
		t.Fatalf("after the alarm: %+v", s)
	}
	enqueue("resize 3.png")
	if s := waitDone(3); s.Queued != 0 || len(s.Done) != 3 {
		t.Fatalf("after the second alarm: %+v", s)
	}
	if code, _ := p.mustGet("/"); code != http.StatusBadRequest {
		t.Fatalf("no queue: %d, want 400", code)
	}
	// The Worker passes the object's whole answer on, headers included.
	resp, err := http.Head("http://" + p.http + "/?queue=q")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("HEAD: %d %v, want 405 with the object's headers", resp.StatusCode, resp.Header)
	}

	// 400 jobs of 16 KiB: 6.4 MiB, more than one turn may commit (5 MiB).
	queue = "backlog"
	const backlog = 400
	for i := range backlog {
		job := fmt.Sprintf("%04d", i) + strings.Repeat("x", 16<<10-4)
		if got := enqueue(job); got != "Job queued!\n" {
			t.Fatalf("enqueue %d: %q", i, got)
		}
	}
	s := waitDone(backlog)
	if s.Queued != 0 || len(s.Done) != backlog {
		t.Fatalf("after the backlog's alarms: %d queued, %d done; want 0 and %d", s.Queued, len(s.Done), backlog)
	}
	for i, d := range s.Done {
		if !strings.HasPrefix(d.Job, fmt.Sprintf("%04d", i)) {
			t.Fatalf("done job %d is %.8q…, want each job once, in order", i, d.Job)
		}
	}
}

// TestKVCopy: `roost kv copy` moves a namespace into one of another number
// of objects — values (one of 25 MiB), metadata and expirations — through
// a dev node's admin API, leaves out a key deleted meanwhile (here: none)
// and refuses a copy onto itself.
func TestKVCopy(t *testing.T) {
	bin := roostBinary(t)
	config := filepath.Join(t.TempDir(), "roost.toml")
	if err := os.WriteFile(config, []byte(`[[kv_namespaces]]
binding = "OLD"
id = "sessions"

[[kv_namespaces]]
binding = "NEW"
id = "sessions-4"
objects = 4
`), 0o644); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	httpAddr, admin := freeAddr(t), freeAddr(t)
	p := launch(t, "roost dev", bin, "dev", "--data-dir", dataDir, "--http", httpAddr, "--admin", admin, "--config", config)
	p.dataDir, p.http, p.admin = dataDir, httpAddr, admin
	p.waitReady(30 * time.Second)
	kv := func(stdin []byte, args ...string) (string, string, int) {
		// A 25 MiB value takes ~2.5 s on an idle machine, and took more
		// than the default 10 s in CI beside the Docker fleet's tests.
		cmd := exec.Command(bin, append(append([]string{"kv"}, args...), "--addr", admin, "--timeout", "2m")...)
		var stdout, stderr bytes.Buffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			return stdout.String(), stderr.String(), ee.ExitCode()
		case err != nil:
			t.Fatal(err)
		}
		return stdout.String(), stderr.String(), 0
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 25<<20/16)
	for _, put := range [][]string{
		{"put", "a", "alpha", "--binding", "OLD"},
		{"put", "b", "beta", "--metadata", `{"by":"test"}`, "--binding", "OLD"},
		{"put", "c", "gamma", "--ttl", "1h", "--binding", "OLD"},
		{"put", "big", "--file", "-", "--binding", "OLD"},
	} {
		if out, errOut, code := kv(big, put...); code != 0 {
			t.Fatalf("%v: %d %q %q", put, code, out, errOut)
		}
	}
	out, errOut, code := kv(nil, "copy", "--binding", "OLD", "--to", "NEW")
	if code != 0 || out != "copied 4 keys from OLD to NEW\n" {
		t.Fatalf("copy: %d %q %q", code, out, errOut)
	}
	for key, want := range map[string]string{"a": "alpha", "b": "beta", "c": "gamma"} {
		if got, errOut, code := kv(nil, "get", key, "--binding", "NEW"); code != 0 || got != want {
			t.Fatalf("NEW %s: %d %q %q", key, code, got, errOut)
		}
	}
	if got, errOut, code := kv(nil, "get", "big", "--binding", "NEW"); code != 0 || !bytes.Equal([]byte(got), big) {
		t.Fatalf("NEW big: %d, %d bytes, %q", code, len(got), errOut)
	}
	list, _, _ := kv(nil, "list", "--binding", "NEW")
	if !strings.Contains(list, `{"by":"test"}`) || strings.Count(list, "\n") != 5 {
		t.Fatalf("NEW lists:\n%s", list)
	}
	var exp string
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "c" {
			exp = f[1]
		}
	}
	if at, err := time.Parse(time.RFC3339, exp); err != nil || time.Until(at) < 50*time.Minute {
		t.Fatalf("c's expiration after the copy: %q %v", exp, err)
	}
	if _, errOut, code := kv(nil, "copy", "--binding", "OLD", "--to", "OLD"); code != 2 || !strings.Contains(errOut, "nothing to copy") {
		t.Fatalf("copy onto itself: %d %q", code, errOut)
	}
	if _, errOut, code := kv(nil, "copy", "--binding", "OLD", "--to", "NOPE"); code != 1 || !strings.Contains(errOut, `--to NOPE: unknown binding`) {
		t.Fatalf("copy to an unknown binding: %d %q", code, errOut)
	}
}
