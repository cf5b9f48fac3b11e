package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
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
	if code, got := p.mustGet("/?roomId=A"); code != 200 || got != "null\n" {
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
	if code, got := p.mustGet("/?roomId=B"); code != 200 || got != "\"hello\"\n" {
		t.Fatalf("another room reads what room A put: %d %q", code, got)
	}
	if code := put("", "x"); code != http.StatusBadRequest {
		t.Fatalf("put with an empty key: %d, want 400", code)
	}
	if code, _ := p.mustGet("/"); code != http.StatusBadRequest {
		t.Fatalf("no room: %d, want 400", code)
	}
}
