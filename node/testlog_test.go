package node

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/roostdb/roost/raftstore"
)

// logTail keeps the last lines a test cluster's nodes logged, so that a
// cluster test that fails can say what the nodes saw (quietLogger keeps
// nothing, and logging everything would bury the failures of -v runs):
// newTestCluster logs them when its test failed.
type logTail struct {
	mu    sync.Mutex
	lines []string
	next  int // where the next line goes once lines is full
	max   int
}

func newLogTail(max int) *logTail { return &logTail{max: max} }

// Write takes one or more whole lines, as slog's text handler writes them.
func (l *logTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for line := range strings.SplitSeq(string(bytes.TrimRight(p, "\n")), "\n") {
		if len(l.lines) < l.max {
			l.lines = append(l.lines, line)
			continue
		}
		l.lines[l.next] = line
		l.next = (l.next + 1) % l.max
	}
	return len(p), nil
}

// String is the kept lines, oldest first.
func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(append(append([]string(nil), l.lines[l.next:]...), l.lines[:l.next]...), "\n")
}

// logger is a logger for the node id, writing to l from Info up.
func (l *logTail) logger(id string) *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", id)
}

// shardStatus describes every running node's replica of shard idx.
func (c *testCluster) shardStatus(idx int) string {
	return c.eachNode(func(nd *Node) string {
		nd.cluster.mu.Lock()
		ls := nd.cluster.groups[idx]
		nd.cluster.mu.Unlock()
		if ls == nil {
			return "no replica"
		}
		return fmt.Sprintf("%s fenced=%v", groupStatus(nd, ls.group), ls.shard.isFenced())
	})
}

// metaStatus describes every running node's replica of the meta group and
// the map it holds.
func (c *testCluster) metaStatus() string {
	return c.eachNode(func(nd *Node) string {
		nd.cluster.mu.Lock()
		g := nd.cluster.meta
		nd.cluster.mu.Unlock()
		m := nd.cluster.metaFSM.Map()
		if g == nil {
			return fmt.Sprintf("no meta group running; map of cluster %q", m.ClusterID)
		}
		return fmt.Sprintf("%s map of cluster %q at version %d with %d nodes", groupStatus(nd, g), m.ClusterID, m.Version, len(m.Nodes))
	})
}

// eachNode is a line "node N: describe(node)" for each node, or "stopped".
func (c *testCluster) eachNode(describe func(nd *Node) string) string {
	var b strings.Builder
	for i, nd := range c.nodes {
		if nd == nil {
			fmt.Fprintf(&b, "node %d: stopped\n", i+1)
			continue
		}
		fmt.Fprintf(&b, "node %d: %s\n", i+1, describe(nd))
	}
	return b.String()
}

// groupStatus describes node nd's replica g of a Raft group.
func groupStatus(nd *Node, g *raftstore.Group) string {
	leader, alive := g.LiveLeader()
	st := g.Raft().Stats()
	return fmt.Sprintf("state=%s term=%s leader=%s alive=%v leaderPeerAlive=%v last_contact=%s last_log=%s commit=%s applied=%s config=%s",
		st["state"], st["term"], leader, alive, leader != "" && nd.cluster.trans.PeerAlive(leader), st["last_contact"],
		st["last_log_index"], st["commit_index"], st["applied_index"], st["latest_configuration"])
}
