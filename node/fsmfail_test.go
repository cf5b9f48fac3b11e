package node

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/raftstore"
)

// fsmFailedApplier commits the proposals chosen by fail through raft, and
// then answers for them as raft does when this replica's shard FSM has
// failed (raftstore.ErrFSMFailed): the entry is in the committed log, every
// healthy replica applies it, and this one applies it after a restart.
type fsmFailedApplier struct {
	applier
	fail func() bool
}

type fsmFailedFuture struct {
	raft.ApplyFuture
}

func (f fsmFailedFuture) Response() any {
	return fmt.Errorf("%w: group 1: raft index %d: injected storage failure", raftstore.ErrFSMFailed, f.Index())
}

func (a fsmFailedApplier) Apply(cmd []byte, timeout time.Duration) raft.ApplyFuture {
	f := a.applier.Apply(cmd, timeout)
	if a.fail() {
		return fsmFailedFuture{f}
	}
	return f
}

// A commit whose entry raft committed but this node's FSM failed to apply
// has committed: it must not be reported as a commit that certainly left
// nothing in storage (ErrCommitFailed, 503 "safe to retry"), or a client's
// retry applies it twice.
func TestFSMFailureIsNotADefiniteCommitFailure(t *testing.T) {
	var armed atomic.Bool
	n := startNode(t, t.TempDir(), func(_ *Config, n *Node) {
		n.applyWrap = func(a applier) applier {
			return fsmFailedApplier{applier: a, fail: func() bool { return armed.CompareAndSwap(true, false) }}
		}
	})
	defer closeNode(t, n)
	if code, body := get(t, n, "/increment", counterParams("F")); code != 200 || body != "1" {
		t.Fatalf("first increment: %d %q", code, body)
	}
	armed.Store(true)
	code, _ := get(t, n, "/increment", counterParams("F"))
	if code == 200 {
		t.Fatal("the injected FSM failure failed no response")
	}
	_, body := get(t, n, "/", counterParams("F"))
	if code == http.StatusServiceUnavailable && body == "2" {
		t.Fatalf("an increment answered %d (certainly not committed, safe to retry) committed: the count is %s", code, body)
	}
}
