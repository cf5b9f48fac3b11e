package e2e

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestChatExample builds examples/chat/cmd/chat and uses it as a browser
// would: two members of a room over WebSockets hear each other, the room
// keeps what was said across a restart, and the page is served.
func TestChatExample(t *testing.T) {
	bin := buildBinary(t, "github.com/roostdb/roost/examples/chat/cmd/chat")
	dir := t.TempDir()
	p := startDevBinary(t, bin, dir)

	if code, page := p.mustGet("/"); code != 200 || !strings.Contains(page, "new WebSocket(") {
		t.Fatalf("the page: %d, %d bytes", code, len(page))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	join := func(user string) *websocket.Conn {
		t.Helper()
		c, _, err := websocket.Dial(ctx, "ws://"+p.http+"/rooms/lobby/ws?"+url.Values{"user": {user}}.Encode(), nil)
		if err != nil {
			t.Fatalf("%s joining: %v", user, err)
		}
		t.Cleanup(func() { c.CloseNow() })
		return c
	}
	next := func(c *websocket.Conn) map[string]any {
		t.Helper()
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("reading an event: %v", err)
		}
		var ev map[string]any
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatalf("event %q: %v", b, err)
		}
		return ev
	}
	ann := join("ann")
	if ev := next(ann); ev["backlog"] == nil {
		t.Fatalf("first event: %v", ev)
	}
	next(ann) // ann joined
	bob := join("bob")
	next(bob) // backlog
	for _, c := range []*websocket.Conn{ann, bob} {
		if ev := next(c); ev["joined"] != "bob" {
			t.Fatalf("join event: %v", ev)
		}
	}
	if err := ann.Write(ctx, websocket.MessageText, []byte("hello bob")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*websocket.Conn{ann, bob} {
		if ev := next(c); ev["user"] != "ann" || ev["text"] != "hello bob" {
			t.Fatalf("message event: %v", ev)
		}
	}
	if err := bob.Write(ctx, websocket.MessageText, []byte(strings.Repeat("x", 1001))); err != nil {
		t.Fatal(err)
	}
	if ev := next(bob); ev["error"] == nil {
		t.Fatalf("an oversized message: %v", ev)
	}
	bob.Close(websocket.StatusNormalClosure, "")
	if ev := next(ann); ev["quit"] != "bob" {
		t.Fatalf("quit event: %v", ev)
	}

	// A restart closes the socket; what was said is kept.
	if err := p.stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ann.Read(ctx); err == nil {
		t.Fatal("the socket stayed open across the restart")
	}
	p = startDevBinary(t, bin, dir)
	code, body := p.mustGet("/rooms/lobby/messages")
	if code != 200 || !strings.Contains(body, `"text":"hello bob"`) || strings.Contains(body, "xxx") {
		t.Fatalf("history after the restart: %d %s", code, body)
	}
	carl := join("carl")
	ev := next(carl)
	if backlog, _ := ev["backlog"].([]any); len(backlog) != 1 {
		t.Fatalf("carl's backlog: %v", ev)
	}
	if code, _ := p.mustGet("/rooms/lobby/ws?user=dan"); code != 426 {
		t.Fatalf("a plain GET of the socket endpoint: %d, want 426", code)
	}
}
