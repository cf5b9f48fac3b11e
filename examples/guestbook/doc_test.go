package guestbook

import (
	"os"
	"strings"
	"testing"
)

// The handler docs/writing-objects.md shows is this package's, word for
// word, so the doc's code compiles and does what the e2e test checks.
// (It once used a variable it never defined.)
func TestWritingObjectsShowsThisHandler(t *testing.T) {
	doc, err := os.ReadFile("../../docs/writing-objects.md")
	if err != nil {
		t.Fatal(err)
	}
	code, err := os.ReadFile("guestbook.go")
	if err != nil {
		t.Fatal(err)
	}
	const start = "func (b *Book) ServeHTTP("
	i := strings.Index(string(doc), start)
	if i < 0 {
		t.Fatalf("docs/writing-objects.md shows no %s", start)
	}
	shown, _, ok := strings.Cut(string(doc[i:]), "\n}\n")
	if !ok || !strings.Contains(string(code), shown+"\n}\n") {
		t.Fatalf("docs/writing-objects.md shows a handler that is not guestbook.go's:\n%s\n}", shown)
	}
}
