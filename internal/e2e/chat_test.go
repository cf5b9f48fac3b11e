package e2e

import (
	"context"
	"encoding/json"
	"fmt"
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

// TestChatAcrossClusterSIGKILL runs the chat example as three real `chat
// node` processes: members entering at different nodes hear each other
// (the sockets of all but one are tunnelled to the room's leader); after a
// SIGKILL of one node, every member whose socket broke reconnects through
// a live node, finds what was said in the backlog, and the room goes on.
func TestChatAcrossClusterSIGKILL(t *testing.T) {
	bin := buildBinary(t, "github.com/roostdb/roost/examples/chat/cmd/chat")
	var specs []nodeSpec
	var procs []*process
	for i := range 3 {
		var join []string
		if i > 0 {
			join = []string{specs[0].gossip}
		}
		s := newNodeSpec(t, fmt.Sprintf("n%d", i+1), 3, 8, join...)
		s.bin = bin
		specs = append(specs, s)
	}
	for i, s := range specs {
		procs = append(procs, launchNode(t, "chat node "+s.id, specs[i]))
	}
	for _, p := range procs {
		p.waitReady(60 * time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	type member struct {
		name string
		via  int
		conn *websocket.Conn
	}
	join := func(m *member) error {
		c, _, err := websocket.Dial(ctx, "ws://"+specs[m.via].http+"/rooms/hall/ws?user="+m.name, nil)
		if err != nil {
			return err
		}
		m.conn = c
		t.Cleanup(func() { c.CloseNow() })
		return nil
	}
	// waitFor reads m's events until one has text (a message), returning
	// the backlog seen on the way.
	waitFor := func(m *member, text string) error {
		for {
			_, b, err := m.conn.Read(ctx)
			if err != nil {
				return err
			}
			var ev struct {
				Text    string `json:"text"`
				Backlog []struct {
					Text string `json:"text"`
				} `json:"backlog"`
			}
			if err := json.Unmarshal(b, &ev); err != nil {
				return err
			}
			if ev.Text == text {
				return nil
			}
			for _, m := range ev.Backlog {
				if m.Text == text {
					return nil
				}
			}
		}
	}
	members := []*member{{name: "ann", via: 0}, {name: "bob", via: 1}, {name: "cyd", via: 2}}
	for _, m := range members {
		if err := join(m); err != nil {
			t.Fatalf("%s joining via node %d: %v", m.name, m.via+1, err)
		}
	}
	if err := members[0].conn.Write(ctx, websocket.MessageText, []byte("before the kill")); err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if err := waitFor(m, "before the kill"); err != nil {
			t.Fatalf("%s (via node %d) did not hear ann: %v", m.name, m.via+1, err)
		}
	}

	procs[2].stop(syscall.SIGKILL) // its exit status says it was killed
	// Who lost their socket learns it by reading; cyd's (via the dead
	// node) certainly broke. Everyone rejoins through node 1 or 2 and must
	// find the message in the backlog.
	for i, m := range members {
		m.conn.CloseNow()
		m.via = i % 2
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := join(m)
			if err == nil {
				if err = waitFor(m, "before the kill"); err == nil {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s could not rejoin via node %d within 30 s of the kill: %v", m.name, m.via+1, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	if err := members[1].conn.Write(ctx, websocket.MessageText, []byte("after the kill")); err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if err := waitFor(m, "after the kill"); err != nil {
			t.Fatalf("%s did not hear bob after the kill: %v", m.name, err)
		}
	}
}
