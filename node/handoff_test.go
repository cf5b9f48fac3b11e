package node

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestPlannedTransferFailsNoRequest: a planned leadership hand-over waits
// for the turns already running on the shard and their commits, and
// re-routes the requests that had not begun a turn, so slow turns caught
// by a transfer still succeed and no request fails. Without the turn count
// (shard.turns) the transfer starts while turns sleep, and their commits
// are refused: 503 "leadership transfer in progress" or "not the leader".
func TestPlannedTransferFailsNoRequest(t *testing.T) {
	reg := &turnRegistry{active: map[string]string{}}
	c := newTestCluster(t, 3, 1, reg)
	const clients = 12
	stop := make(chan struct{})
	var (
		mu       sync.Mutex
		acked    = map[string]int{}
		failures []string
		wg       sync.WaitGroup
	)
	for cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("held-%d", cl)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				u := "http://" + c.cfgs[(cl+i)%len(c.cfgs)].HTTPAddr + "/increment?" +
					url.Values{"ns": {"COUNTER"}, "name": {name}, "hold": {"30ms"}}.Encode()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				code, body, err := getBody(ctx, u)
				cancel()
				mu.Lock()
				if err != nil || code != 200 {
					failures = append(failures, fmt.Sprintf("%s: %d %q %v", name, code, body, err))
				} else {
					acked[name]++
				}
				mu.Unlock()
			}
		}()
	}
	for range 4 {
		time.Sleep(200 * time.Millisecond) // turns are in flight
		li := c.leaderOf(groupOf(0))
		if li < 0 {
			t.Fatal("shard 0 has no leader")
		}
		nd := c.nodes[li]
		nd.cluster.mu.Lock()
		ls := nd.cluster.groups[0]
		nd.cluster.mu.Unlock()
		for {
			err := nd.cluster.transferNow(ls, raft.Server{})
			if err == nil {
				break
			}
			if !errors.Is(err, raft.ErrLeadershipTransferInProgress) { // the leader balancer's may be under way
				t.Fatalf("transfer from %s: %v", c.cfgs[li].NodeID, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d requests failed across planned transfers, first: %s", len(failures), failures[0])
	}
	var names []string
	for name := range acked {
		names = append(names, name)
	}
	for name, v := range c.finalValues(names) {
		if v != acked[name] {
			t.Errorf("%s: %d increments acknowledged, counter is %d", name, acked[name], v)
		}
	}
	t.Logf("acknowledged %v", acked)
}
