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
