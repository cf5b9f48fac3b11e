package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/roostdb/roost/internal/adminapi"
	"github.com/roostdb/roost/internal/localcluster"
)

func run(ctx context.Context) error {
	if _, err := os.Stat(*binPath); err != nil {
		return fmt.Errorf("%w (run `make build` first)", err)
	}
	dir, err := os.MkdirTemp("", "roost-rebalance-")
	if err != nil {
		return err
	}
	nodes, err := localcluster.NewNodes(*binPath, dir, 4,
		"--shards", strconv.Itoa(*shards), "--replicas", "3", "--bootstrap-expect", "3")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
		if *keep || !ok {
			fmt.Fprintf(os.Stderr, "data dirs and node logs kept in %s\n", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	first, newcomer := nodes[:3], nodes[3]
	localcluster.JoinEachOther(first)
	for _, n := range first {
		newcomer.Join = append(newcomer.Join, n.Gossip)
	}

	r := &report{Binary: *binPath, CPUs: runtime.NumCPU(), LoadavgStart: localcluster.Loadavg(),
		Objects: *objects, Concurrency: *concurrency, MaxConcurrent: *maxConcurrent, Shards: *shards, TargetMs: ms(*target)}
	progress := func(format string, args ...any) {
		if !*jsonOut {
			fmt.Printf(format+"\n", args...)
		}
	}
	progress("rebalance: %s, %d CPUs, load average %s; %d objects, %d workers, --max-concurrent %d",
		r.Binary, r.CPUs, r.LoadavgStart, r.Objects, r.Concurrency, r.MaxConcurrent)

	t0 := time.Now()
	for _, n := range first {
		if err := n.Start(); err != nil {
			return err
		}
	}
	for _, n := range first {
		if err := n.WaitReady(ctx, 2*time.Minute); err != nil {
			return err
		}
	}
	progress("3 nodes (--shards %d --replicas 3) ready in %v", *shards, time.Since(t0).Round(time.Millisecond))

	c := newCounters(*objects)
	t0 = time.Now()
	r.FillUnfilled = c.fill(ctx, first)
	r.FillSeconds = time.Since(t0).Seconds()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	progress("filled %d objects in %.1fs (%d could not be filled)", *objects, r.FillSeconds, r.FillUnfilled)

	t0 = time.Now()
	if err := newcomer.Start(); err != nil {
		return err
	}
	if err := newcomer.WaitReady(ctx, time.Minute); err != nil {
		return err
	}
	if err := waitActive(ctx, first[0].Admin, newcomer.ID, time.Minute); err != nil {
		return err
	}
	progress("%s joined and is active after %v", newcomer.ID, time.Since(t0).Round(time.Millisecond))

	l := c.startLoad(first)
	if !localcluster.Sleep(ctx, *before) {
		l.finish()
		return ctx.Err()
	}
	progress("rebalancing after %v of load…", *before)
	moveStart := c.since()
	// A new meta leader carries the rebalance on and `roost rebalance
	// --wait` follows it; if it still fails (--wait gave up, say), an
	// operator would start it again.
	var rebalanceErr error
	for try := 0; try <= *restarts && ctx.Err() == nil; try++ {
		if rebalanceErr != nil {
			r.Restarts = append(r.Restarts, fmt.Sprintf("+%.1fs %v", (c.since()-moveStart).Seconds(), rebalanceErr))
			progress("roost rebalance failed (%v); starting it again", rebalanceErr)
		}
		if r.Operation, rebalanceErr = rebalance(ctx, c, moveStart, first[0].Admin); rebalanceErr == nil {
			break
		}
	}
	moveEnd := c.since()
	if rebalanceErr == nil {
		localcluster.Sleep(ctx, *after)
	}
	attempts := l.finish()
	loadEnd := c.since()
	r.RebalanceSeconds = (moveEnd - moveStart).Seconds()
	if rebalanceErr != nil {
		r.RebalanceError = rebalanceErr.Error()
	}
	r.Started = c.at(moveStart).Format(time.RFC3339Nano)
	if r.Members, err = members(first[0].Admin); err != nil {
		return err
	}
	r.analyse(c, attempts, moveStart, moveEnd, loadEnd)

	if r.Verification, err = c.verify(ctx, first); err != nil {
		return fmt.Errorf("reading the objects back: %w", err)
	}
	r.LoadavgEnd = localcluster.Loadavg()
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		r.print(os.Stdout)
	}
	switch {
	case rebalanceErr != nil:
		return fmt.Errorf("roost rebalance did not finish: %w", rebalanceErr)
	case r.Verification.Violations > 0:
		return fmt.Errorf("%d objects lost acknowledged increments or counted more than were sent", r.Verification.Violations)
	}
	ok = true
	return nil
}

// operation is the part of the admin API's operation the report uses.
type operation struct {
	Kind  string `json:"kind"`
	State string `json:"state"`
	Total int    `json:"total"`
	Done  int    `json:"done"`
	Error string `json:"error,omitempty"`
}

// rebalance runs `roost rebalance --wait -o json` against admin and returns
// the operation it printed at the end. Its progress lines on stderr are
// shown as they come with -v, stamped with the time since moveStart.
func rebalance(ctx context.Context, c *counters, moveStart time.Duration, admin string) (operation, error) {
	cmd := exec.CommandContext(ctx, *binPath, "rebalance", "--addr", admin, "--wait", "-o", "json",
		"--max-concurrent", strconv.Itoa(*maxConcurrent))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ROOST_") { // ROOST_ADDR or a token would change the call
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout bytes.Buffer
	stderr := &stampedLines{c: c, from: moveStart}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	runErr := cmd.Run()
	var answer struct {
		Operation operation `json:"operation"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &answer); err != nil && runErr == nil {
		runErr = fmt.Errorf("reading its output %q: %w", stdout.String(), err)
	}
	if runErr != nil {
		return answer.Operation, fmt.Errorf("%w: %s", runErr, stderr.last)
	}
	return answer.Operation, nil
}

// stampedLines echoes what a command writes with -v, each line prefixed
// with the time since from, and keeps the last line: the reason it failed.
type stampedLines struct {
	c       *counters
	from    time.Duration
	mu      sync.Mutex
	partial []byte
	last    string
}

func (s *stampedLines) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		s.last = string(s.partial[:i])
		s.partial = s.partial[i+1:]
		if *verbose && !*jsonOut {
			fmt.Printf("  +%6.1fs %s\n", (s.c.since() - s.from).Seconds(), s.last)
		}
	}
}

var adminClient = &http.Client{Timeout: 5 * time.Second}

func members(admin string) ([]adminapi.Member, error) {
	resp, err := adminClient.Get("http://" + admin + "/v1/members")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/members: %d %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	ms, err := adminapi.DecodeMembers(b)
	if err != nil {
		return nil, fmt.Errorf("GET /v1/members: %w", err)
	}
	return ms, nil
}

// waitActive waits until the members admin lists include id as an active,
// live node: only then does the planner place replicas on it.
func waitActive(ctx context.Context, admin, id string, d time.Duration) error {
	deadline := time.Now().Add(d)
	last := "not listed"
	for {
		ms, err := members(admin)
		if err != nil {
			last = err.Error()
		}
		for _, m := range ms {
			if m.ID == id {
				if m.State == "active" && m.Alive {
					return nil
				}
				last = fmt.Sprintf("state %s, alive %v", m.State, m.Alive)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not an active member after %v: %s", id, d, last)
		}
		if !localcluster.Sleep(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
}
