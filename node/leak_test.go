package node

import (
	"net/http"
	"strconv"
	"testing"

	"go.uber.org/goleak"
)

// Close stops every goroutine a node started: its servers, proposers,
// Raft groups, gossip, forwarding streams, WebSocket tunnels and timers. (Goroutines that were
// running before the test, an earlier test's included, are not counted.)
func TestCloseLeavesNoGoroutines(t *testing.T) {
	t.Run("dev", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		n := startNode(t, t.TempDir(), nil)
		for i := range 5 {
			if code, body := get(t, n, "/increment", counterParams("leak")); code != 200 || body != strconv.Itoa(i+1) {
				t.Fatalf("increment %d: %d %q", i+1, code, body)
			}
		}
		closeNode(t, n)
		http.DefaultClient.CloseIdleConnections()
	})
	t.Run("cluster", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		c := newTestCluster(t, 3, 4, &turnRegistry{active: map[string]string{}})
		for i := range 6 { // through every node: some are forwarded
			if code, body, err := c.doRetrying(i%3, "/increment", "leak"); err != nil || code != 200 || body != strconv.Itoa(i+1) {
				t.Fatalf("increment %d: %d %q %v", i+1, code, body, err)
			}
		}
		// A WebSocket tunnelled from another node than its object's
		// leader, left open while the nodes stop.
		li := c.waitLeaderOf(t, groupOf(shardOf(roomID(t, c.nodes[0], "leak").Bytes(), 4)))
		ws := dialRoom(t, c.cfgs[(li+1)%3].HTTPAddr, "leak")
		readText(t, ws)
		sendText(t, ws, "hello")
		readText(t, ws)
		for i := range c.nodes {
			c.stop(i)
		}
		ws.CloseNow()
		http.DefaultClient.CloseIdleConnections()
	})
}
