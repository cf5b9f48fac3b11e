// Package localcluster runs real `roost node` processes on 127.0.0.1 for
// the measurement tools under internal/cmd (failover, rebalance): each node
// with free ports, its own data dir and a log file, started, signalled and
// waited for as a user would. It also says which shard a counter object
// lands on, so the tools can tell the shards' writes apart.
package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/roostdb/roost/durable"
)

// userHZ is the unit of utime and stime in /proc/<pid>/stat on Linux.
const userHZ = 100

// Node is one `roost node` process and how to start it again.
type Node struct {
	ID, Dir                   string
	HTTP, Admin, GRPC, Gossip string
	Join                      []string // gossip addresses given to --join
	Log                       *os.File // stdout and stderr of every run

	bin    string
	flags  []string
	cmd    *exec.Cmd
	exited chan struct{}
}

// NewNodes prepares count nodes n1…n<count> of the binary bin under dir
// (data dir dir/<id>, log dir/<id>.log) with distinct free addresses;
// flags are added to every node's command line (e.g. --shards 64). No
// node joins another: set Join before Start.
func NewNodes(bin, dir string, count int, flags ...string) ([]*Node, error) {
	// All addresses at once, so that no two nodes get the same port.
	addrs, err := freeAddrs(4 * count)
	if err != nil {
		return nil, err
	}
	nodes := make([]*Node, count)
	for i := range nodes {
		a := addrs[4*i:]
		id := fmt.Sprintf("n%d", i+1)
		n := &Node{ID: id, Dir: filepath.Join(dir, id), HTTP: a[0], Admin: a[1], GRPC: a[2], Gossip: a[3], bin: bin, flags: flags}
		if err := os.MkdirAll(n.Dir, 0o755); err != nil {
			return nil, err
		}
		if n.Log, err = os.Create(filepath.Join(dir, id+".log")); err != nil {
			return nil, err
		}
		nodes[i] = n
	}
	return nodes, nil
}

// JoinEachOther makes every node --join all the others, so any one of
// them can start or restart alone.
func JoinEachOther(nodes []*Node) {
	for _, n := range nodes {
		n.Join = nil
		for _, o := range nodes {
			if o != n {
				n.Join = append(n.Join, o.Gossip)
			}
		}
	}
}

func (n *Node) args() []string {
	a := []string{"node", "--id", n.ID, "--data-dir", n.Dir, "--config", "",
		"--http", n.HTTP, "--admin", n.Admin, "--grpc", n.GRPC, "--gossip", n.Gossip}
	a = append(a, n.flags...)
	if len(n.Join) > 0 {
		a = append(a, "--join", strings.Join(n.Join, ","))
	}
	return a
}

// Start starts the process; its output goes to n.Log after a line that
// says when and how it was started.
func (n *Node) Start() error {
	cmd := exec.Command(n.bin, n.args()...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ROOST_") { // they would override the flags
			cmd.Env = append(cmd.Env, kv)
		}
	}
	fmt.Fprintf(n.Log, "==== %s start %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = n.Log, n.Log
	if err := cmd.Start(); err != nil {
		return err
	}
	n.cmd, n.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(n.exited)
	return nil
}

// Running reports whether the process started last is still running.
func (n *Node) Running() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// Signal sends sig to the running process.
func (n *Node) Signal(sig syscall.Signal) error { return n.cmd.Process.Signal(sig) }

// WaitExit waits up to d for the process to exit.
func (n *Node) WaitExit(d time.Duration) error {
	select {
	case <-n.exited:
		return nil
	case <-time.After(d):
		return fmt.Errorf("node %s still running %v after the signal", n.ID, d)
	}
}

// Close kills the process if it runs and closes the log.
func (n *Node) Close() {
	if n.Running() {
		n.Signal(syscall.SIGKILL)
		n.WaitExit(10 * time.Second)
	}
	n.Log.Close()
}

var adminClient = &http.Client{Timeout: 2 * time.Second}

// WaitReady polls /readyz until it answers 200, for at most d.
func (n *Node) WaitReady(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	last := "no answer"
	for {
		resp, err := adminClient.Get("http://" + n.Admin + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		if !n.Running() {
			return fmt.Errorf("node %s exited while starting (log: %s)", n.ID, n.Log.Name())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s not ready after %v; last /readyz: %s", n.ID, d, last)
		}
		if !Sleep(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// CPUSeconds returns the CPU time (utime+stime from /proc/<pid>/stat) the
// running process has used.
func (n *Node) CPUSeconds() (float64, error) {
	pid := n.cmd.Process.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	// The command name (field 2) is in parentheses and may hold spaces;
	// fields 3 onwards follow the last ')'. utime and stime are 14 and 15.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(u+st) / userHZ, nil
}

// freeAddrs returns k distinct loopback addresses that were free for both
// TCP and UDP (gossip uses both on its port).
func freeAddrs(k int) ([]string, error) {
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	var addrs []string
	for len(addrs) < k {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		held = append(held, l)
		u, err := net.ListenPacket("udp", l.Addr().String())
		if err != nil {
			continue // UDP port taken: try another
		}
		held = append(held, u)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

// counterNamespace is the key the stock binary's Counter namespace derives
// object IDs from (examples/counter registers the class as "Counter").
var counterNamespace = durable.DeriveNamespaceKey("Counter", "")

// CounterShard returns the shard the counter object called name lands on:
// the node maps name → IDFromName in the Counter namespace → xxhash of the
// ID's bytes mod the shard count (node/manager.go shardOf).
func CounterShard(name string, shards int) int {
	b := durable.IDFromName(counterNamespace, name).Bytes()
	return int(xxhash.Sum64(b[:]) % uint64(shards))
}

// Loadavg is the first three fields of /proc/loadavg: other work on the
// machine skews every measurement.
func Loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// Sleep waits d or until ctx ends; it reports whether d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
