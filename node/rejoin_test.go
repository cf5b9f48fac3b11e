package node

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/roostdb/roost/placement"
)

// TestRestartedSeedRejoinsGossip: the first node joins nobody. Stopped
// gracefully, it leaves gossip, and memberlist gossips no more with a node
// that left; restarted, it contacts nobody either. Without rejoin the two
// sides would never meet again in gossip, though Raft connects them.
func TestRestartedSeedRejoinsGossip(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 3, 4, reg)
	seed := placement.NodeID(c.cfgs[0].NodeID)
	if len(c.cfgs[0].Join) > 0 {
		t.Fatalf("the first node joins %v, want nobody", c.cfgs[0].Join)
	}
	sees := func(i int, id placement.NodeID) bool { return c.nodes[i].cluster.aliveIDs()[id] }
	c.stop(0)
	for deadline := time.Now().Add(30 * time.Second); sees(1, seed) || sees(2, seed); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gossip still shows %s alive after it stopped", seed)
		}
	}
	c.start(0)
	start := time.Now()
	for deadline := start.Add(4 * rejoinInterval); ; time.Sleep(50 * time.Millisecond) {
		if sees(1, seed) && sees(2, seed) && sees(0, placement.NodeID(c.cfgs[1].NodeID)) && sees(0, placement.NodeID(c.cfgs[2].NodeID)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s restarted %s ago: n2 sees it %v, n3 %v; it sees %v", seed, time.Since(start).Round(time.Second), sees(1, seed), sees(2, seed), c.nodes[0].cluster.aliveIDs())
		}
	}
	t.Logf("%s and the others see each other again %s after its restart", seed, time.Since(start).Round(100*time.Millisecond))
	c.waitReady()
}

// TestRestartedNodeServesWithItsSeedDown: a node of a cluster that exists
// restarts while the seed its --join names is down. It does not wait for
// the seed: with the third node it is a quorum of every group, and it
// becomes ready. Before, it kept retrying the seed, never ready, and gave
// up after joinPatience.
func TestRestartedNodeServesWithItsSeedDown(t *testing.T) {
	t.Parallel()
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 3, 4, reg)
	if len(c.cfgs[1].Join) != 1 || c.cfgs[1].Join[0] != c.cfgs[0].GossipAddr {
		t.Fatalf("n2 joins %v, want n1's gossip address", c.cfgs[1].Join)
	}
	c.stop(0)
	c.stop(1)
	c.start(1)
	start := time.Now()
	// Writes through n3 while n2's replicas are not running yet: n3's
	// appends to them fail, and hashicorp/raft would not try again for
	// 30-60 s (QuietTiming's CommitTimeout) had nudgeStalled not woken it.
	names := make([]string, 12)
	var wg sync.WaitGroup
	for k := range names {
		names[k] = fmt.Sprintf("seedless-%d", k)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			c.do(ctx, 2, "/increment", names[k])
		})
	}
	wg.Wait()
	c.waitReadyWithin(joinPatience / 2)
	t.Logf("n2 and n3 ready %s after n2's restart, with n1 down", time.Since(start).Round(100*time.Millisecond))
	select {
	case err := <-c.nodes[1].failed:
		t.Fatalf("n2 failed: %v", err)
	default:
	}
	for _, name := range names {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			code, body, err := c.do(ctx, 2, "/increment", name)
			cancel()
			if err == nil && code == 200 {
				break
			}
			if time.Since(start) > 25*time.Second {
				t.Fatalf("%s after n2's restart, an increment of %s through n3 still fails: %d %q %v", time.Since(start).Round(time.Second), name, code, body, err)
			}
		}
	}
	t.Logf("every object served through n3 %s after n2's restart", time.Since(start).Round(100*time.Millisecond))
}
