package e2e

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestStockBinaryServesEveryExample: `make run` (roost dev) serves the
// counter at the root, as the seed answers, and each other example under
// /examples/NAME/ (examples/all).
func TestStockBinaryServesEveryExample(t *testing.T) {
	p := startDev(t, t.TempDir())
	for _, tt := range []struct{ path, want string }{
		{"/increment?name=A", "Durable Object 'A' count: 1"},
		{"/examples/nothing?name=A", "Durable Object 'A' count: Not found"}, // not an example: the counter's
		{"/examples/kvreader/?roomId=A", "null"},
		{"/examples/jobqueue/?queue=q", "{\"queued\":0,\"done\":[]}\n"},
	} {
		if code, got := p.mustGet(tt.path); code != 200 || got != tt.want {
			t.Errorf("GET %s: %d %q, want %q", tt.path, code, got, tt.want)
		}
	}
	resp, err := http.Post("http://"+p.http+"/examples/guestbook/sign?book=hall", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "entry 1\n" {
		t.Fatalf("signing the guest book: %q", b)
	}
	if _, got := p.mustGet("/examples/guestbook/?book=hall"); got != "00000001: hello\n" {
		t.Fatalf("the guest book: %q", got)
	}
	if code, page := p.mustGet("/examples/chat/"); code != 200 || !strings.Contains(page, "new WebSocket(") {
		t.Fatalf("the chat page: %d, %d bytes", code, len(page))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+p.http+"/examples/chat/rooms/lobby/ws?user=ann", nil)
	if err != nil {
		t.Fatalf("joining the chat room: %v", err)
	}
	defer c.CloseNow()
	if _, ev, err := c.Read(ctx); err != nil || !strings.Contains(string(ev), `"backlog"`) {
		t.Fatalf("the room's first event: %q, %v", ev, err)
	}
}
