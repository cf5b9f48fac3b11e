package node

import (
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakChildEnv marks the process TestCloseLeavesNoGoroutines runs itself in.
const leakChildEnv = "ROOST_TEST_LEAK_CHILD"

// Close stops every goroutine a node started: its servers, proposers,
// Raft groups, gossip, forwarding streams, WebSocket tunnels and timers. (Goroutines that were
// running before the test, an earlier test's included, are not counted.)
func TestCloseLeavesNoGoroutines(t *testing.T) {
	t.Parallel()
	if os.Getenv(leakChildEnv) == "" {
		// Alone in a process of its own: a goroutine an earlier test
		// left (a straggler by design, a client still redialing a
		// stopped node) can start new ones while this test runs, which
		// goleak.IgnoreCurrent cannot tell from the nodes' own.
		cmd := exec.Command(os.Args[0], "-test.run=^TestCloseLeavesNoGoroutines$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), leakChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestCloseLeavesNoGoroutines") {
			t.Fatalf("the test, run alone: %v\n%s", err, out)
		}
		return
	}
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
		// memberlist's Shutdown does not wait for a probe in flight; it
		// ends by itself at the probe's timeout (500 ms, scaled up on a
		// busy machine). Close used to outlast it by waiting 2 s for the
		// peers' streams.
		for deadline := time.Now().Add(10 * time.Second); len(goroutinesIn("memberlist.(*Memberlist).probeNode")) > 0 && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
	})
}
