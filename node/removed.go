package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
)

// A node removed from the cluster (roost remove) runs on until its
// operator stops it, and one that was down when it was removed may be
// started again with its data dir. Neither belongs to the cluster any
// more: the meta group no longer sends it the map, so what it knows goes
// stale, and its ID is not used again. watchRemoval finds out and says so:
//
//   - A node whose own map marks it removed turns /readyz 503 with that
//     reason, and logs it once (it was running when it was removed, and
//     may still be a voter of the meta group) — unless it was restarted
//     from a cluster's data dir and, in this run, no node of that cluster
//     has yet said it is a member nor has it led the meta group: then it
//     was removed while it was away, and fails as below.
//   - A node that hears nothing from the meta group (no map yet after a
//     restart, or no leader contact for metaSilenceBeforeAsking) asks the
//     other nodes what their maps say of it (the Member RPC, as a node
//     without state does when it first starts); if one marks it removed,
//     the node fails with placement.ErrNodeRemoved, since it would
//     otherwise wait for a map that never comes.

//
// Either way it writes removedMarker in its data dir: started again with
// it, the node refuses at once (checkNotRemoved), before it joins gossip.
// Before, it rejoined gossip for a while and served as ready until it
// found out again, and under a container restart policy it did so over
// and over.

// removedMarker is the data dir file that records the node's removal.
const removedMarker = "removed"

// markRemoved records reason in the data dir (removedMarker).
func (c *cluster) markRemoved(reason string) {
	if err := os.WriteFile(filepath.Join(c.n.cfg.DataDir, removedMarker), []byte(reason+"\n"), 0o644); err != nil {
		c.n.log.Error("recording this node's removal in its data dir", "err", err)
	}
}

// checkNotRemoved fails a start on the data dir of a node that was
// removed from its cluster (markRemoved).
func checkNotRemoved(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, removedMarker))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", filepath.Join(dir, removedMarker), err)
	}
	return fmt.Errorf("%w: %s (recorded in %s); to run a node here again, start it with a new --id and an empty data dir",
		placement.ErrNodeRemoved, strings.TrimSpace(string(b)), filepath.Join(dir, removedMarker))
}

// removalCheckInterval is how often watchRemoval looks; until a restarted
// node has learnt that it was not removed, which its readiness waits for,
// it looks every removalFirstCheckInterval.
const (
	removalCheckInterval      = 5 * time.Second
	removalFirstCheckInterval = 250 * time.Millisecond
)

// metaSilenceBeforeAsking is how long a meta follower goes without contact
// from a leader before it asks the other nodes whether it was removed; an
// idle meta leader contacts its followers every 3-6 s (QuietTiming).
const metaSilenceBeforeAsking = 20 * time.Second

// watchRemoval checks every removalCheckInterval whether this node was
// removed from the cluster, until it finds it was or ctx ends. clusterID
// is the cluster the data dir belongs to ("" if not known yet).
func (c *cluster) watchRemoval(ctx context.Context, clusterID string) {
	for {
		wait := removalCheckInterval
		if c.notRemovedYet.Load() {
			wait = removalFirstCheckInterval
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if c.checkRemoval(ctx, clusterID) {
			return
		}
	}
}

// checkRemoval is one look of watchRemoval; it reports whether the node
// was found removed.
func (c *cluster) checkRemoval(ctx context.Context, clusterID string) bool {
	m := c.metaFSM.Map()
	if nd, ok := m.Nodes[c.self]; ok && nd.State == placement.NodeRemoved {
		if c.notRemovedYet.Load() {
			// Restarted, and no node has said it is a member since: it
			// was removed while it was away, and the meta group's
			// leader has sent it the map that says so.
			c.failRemovedWhileAway(m.ClusterID, "so says the map the meta group sent it")
			return true
		}
		reason := fmt.Sprintf("node %s was removed from cluster %s (roost remove): it holds no replica and its ID is not used again", c.self, m.ClusterID)
		c.removedHere.Store(true)
		c.removed.Store(&reason)
		c.markRemoved(reason)
		c.n.log.Error(reason + c.removedAdvice())
		return true
	}
	if m.ClusterID != "" {
		c.mu.Lock()
		meta := c.meta
		c.mu.Unlock()
		if meta == nil {
			return false
		}
		r := meta.Raft()
		if r.State() == raft.Leader {
			// Its map is the cluster's: the first check above spoke for it.
			c.notRemovedYet.Store(false)
			return false
		}
		if time.Since(r.LastContact()) < metaSilenceBeforeAsking && !c.notRemovedYet.Load() {
			return false
		}
		clusterID = m.ClusterID
	}
	answers := c.askMembers(ctx, c.aliveMembers())
	for id, a := range answers {
		r := a.resp
		if r == nil || !r.Listed || clusterID != "" && r.ClusterId != clusterID {
			continue
		}
		if r.State != placement.NodeRemoved.String() {
			c.notRemovedYet.Store(false) // a node of its cluster lists it as a member
			continue
		}
		c.failRemovedWhileAway(r.ClusterId, "so says "+id.String())
		return true
	}
	return false
}

// failRemovedWhileAway stops the node, which was removed from clusterID
// while it was down: it would otherwise wait for a map that never comes,
// or hold an old one. source says who told it.
func (c *cluster) failRemovedWhileAway(clusterID, source string) {
	what := fmt.Sprintf("node %s was removed from cluster %s while it was away (%s)", c.self, clusterID, source)
	err := fmt.Errorf("%w: %s and its ID is not used again: start it with a new --id and an empty data dir", placement.ErrNodeRemoved, what)
	reason := err.Error()
	c.removed.Store(&reason)
	c.markRemoved(what)
	c.fail(err)
}

// removedAdvice completes the reason a node removed from the map gives:
// stop it, or, while the meta group still counts it as a voter (its
// leader takes it out only once the other voters alive make a quorum
// without it), keep it running until it does not — stopping it then may
// cost the meta group its quorum. A voter taken out is not told (the
// configuration that leaves it out is not sent to it), so its own
// configuration counts only while it leads the group or hears from its
// leader.
func (c *cluster) removedAdvice() string {
	c.mu.Lock()
	meta := c.meta
	c.mu.Unlock()
	if meta == nil {
		return "; stop it"
	}
	r := meta.Raft()
	if r.State() == raft.Leader || time.Since(r.LastContact()) < removedVoterContact {
		if f := r.GetConfiguration(); f.Error() == nil {
			for _, s := range f.Configuration().Servers {
				if s.ID == raft.ServerID(c.self) && s.Suffrage == raft.Voter {
					return "; it is still a voter of the meta group, which takes it out once the other voters alive make a quorum without it: keep it running until 'roost members' no longer shows it as a voter (stopping it now may cost the meta group its quorum), then stop it"
				}
			}
		}
	}
	return "; stop it"
}

// removedVoterContact is how recently a removed node must have heard from
// the meta leader for its own configuration to say whether it is still a
// voter: an idle meta leader contacts its voters every 3-6 s.
const removedVoterContact = 10 * time.Second
