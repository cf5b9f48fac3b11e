package multiraft

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/roostdb/roost/internal/linearize"
)

// Clients increment and read counters in four groups while the leaders
// are cut off, nodes crash (losing what they had not synced) and restart,
// and leaderships move. Every counter's history must be linearizable, and
// no acknowledged increment lost.
func TestFaultsLinearizable(t *testing.T) {
	if testing.Short() {
		t.Skip("fault run skipped in -short mode")
	}
	c := newCluster(t, 3, func(cfg *Config) { cfg.LogRetention = 16 })
	const groups = 4
	for g := GroupID(1); g <= groups; g++ {
		for id := uint64(1); id <= 3; id++ {
			c.startGroup(id, g, 1, 2, 3)
		}
	}
	rec := linearize.NewRecorder()
	ctx, stop := context.WithCancel(context.Background())
	var clients sync.WaitGroup
	for client := range 6 {
		clients.Go(func() { runClient(ctx, c, rec, client, groups) })
	}

	rng := rand.New(rand.NewPCG(1, 2))
	end := time.Now().Add(4 * time.Second)
	for round := 0; time.Now().Before(end); round++ {
		g := GroupID(rng.IntN(groups) + 1)
		switch round % 3 {
		case 0: // cut the leader off, then heal
			lead := c.leader(g)
			var others []uint64
			for id := uint64(1); id <= 3; id++ {
				if id != lead {
					others = append(others, id)
				}
			}
			c.net.Isolate(lead, others...)
			time.Sleep(300 * time.Millisecond)
			c.net.Heal()
		case 1: // crash a node and bring it back
			victim := uint64(rng.IntN(3) + 1)
			c.crash(victim)
			time.Sleep(150 * time.Millisecond)
			c.start(victim)
			for g := GroupID(1); g <= groups; g++ {
				c.startGroup(victim, g, 1, 2, 3)
			}
		case 2: // move a leadership
			lead := c.leader(g)
			h, _ := c.handle(lead, g)
			to := lead%3 + 1
			if h != nil {
				tctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = h.TransferLeadership(tctx, to) // it may fail under faults; the history decides
				cancel()
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	clients.Wait()
	c.net.Heal()

	final := map[string]int{}
	for g := GroupID(1); g <= groups; g++ {
		for name, v := range c.converged(g) {
			final[fmt.Sprintf("g%d/%s", g, name)] = int(v)
		}
	}
	res := linearize.Check(rec, 60*time.Second)
	t.Log(res)
	if !res.Ok {
		t.Fatalf("not linearizable: %v (visualization: %s)", res.BadKeys, res.Visualization)
	}
	if res.Ops < 100 {
		t.Fatalf("only %d operations completed: the faults starved the clients", res.Ops)
	}
	if losses := linearize.Losses(rec, final); len(losses) > 0 {
		t.Fatalf("acknowledged increments lost or phantom: %v", losses)
	}
}

// runClient increments and reads counters (two a group) through whichever
// node it takes for the leader, recording every call's outcome.
func runClient(ctx context.Context, c *cluster, rec *linearize.Recorder, client, groups int) {
	rng := rand.New(rand.NewPCG(uint64(client), 7))
	guess := uint64(client%3 + 1)
	for ctx.Err() == nil {
		g := GroupID(rng.IntN(groups) + 1)
		name := fmt.Sprintf("k%d", rng.IntN(2))
		key := fmt.Sprintf("g%d/%s", g, name)
		h, sm := c.handle(guess, g)
		if h == nil {
			guess = uint64(rng.IntN(3) + 1)
			continue
		}
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if rng.IntN(5) == 0 {
			call := rec.Begin(client, key, linearize.Op{Kind: linearize.Read})
			if err := h.ReadIndex(cctx); err != nil {
				call.Failed() // a read changes nothing
			} else {
				call.Ok(int(sm.get(name)))
			}
		} else {
			call := rec.Begin(client, key, linearize.Op{Kind: linearize.Increment})
			v, err := h.Propose(cctx, []byte("+"+name))
			switch {
			case err == nil:
				call.Ok(int(v.(uint64)))
			case errors.Is(err, ErrLeadershipLost), errors.Is(err, context.DeadlineExceeded):
				call.Unknown()
			default: // ErrNotLeader, ErrClosed before the hand-off: never proposed
				call.Failed()
			}
		}
		cancel()
		if lead := h.Status().Leader; lead != 0 && lead != guess {
			guess = lead
		} else if h.Status().Role != Leader {
			guess = uint64(rng.IntN(3) + 1)
		}
	}
}
