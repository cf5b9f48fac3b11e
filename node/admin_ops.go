package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
)

// Operations: a rebalance or a drain carries out the planner's moves on
// the meta leader, at most max_concurrent shards at a time. Each move
// goes one safe step at a time (placement.Move.Steps): the step is written
// to the map, then the operation waits until the shard's group has
// converged to it (a leader, every replica a voter, the dropped replica
// gone) before the next step. One operation runs at a time, on the meta
// leader. A rebalance or drain is also recorded in the meta group
// (placement.BeginOperationCmd) until it ends: when its node loses the meta
// leadership or stops, the operation fails there, and the new meta leader
// carries it on under the same ID (resumeRecorded), planning afresh from
// the map. A heal is not recorded: a new meta leader starts one itself once
// it has seen a node dead for the grace.

// defaultMaxConcurrent is how many shards an operation moves at once
// unless the caller says otherwise.
const defaultMaxConcurrent = 4

// maxMaxConcurrent bounds max_concurrent.
const maxMaxConcurrent = 64

// keptOperations is how many finished operations the meta leader remembers.
const keptOperations = 16

// convergeTimeout bounds the wait for one step's convergence.
const convergeTimeout = 2 * time.Minute

// quorumLossGrace is how long a step waits on a shard that has lost its
// live quorum (its nodes died after the step began) before it leaves the
// shard to the end of the operation, and how long an operation with only
// such shards left waits for their nodes before it fails: long enough for
// a node that restarts.
const quorumLossGrace = 10 * time.Second

// convergePoll is how often a step's convergence is checked.
const convergePoll = 200 * time.Millisecond

// maxReplans bounds how often in a row an operation re-plans because the
// map changed under it before it gives up.
const maxReplans = 50

// errLostMetaLeadership and errNodeStopping end an operation that another
// meta leader carries on if it is recorded (the CLI's --wait recognises
// the first's text; endOp tells the second by the node's context).
var (
	errLostMetaLeadership = errors.New("lost the meta leadership")
	errNodeStopping       = errors.New("the node is shutting down")
)

// operation is a rebalance, drain or heal under way (or finished).
type operation struct {
	id      string
	kind    string
	node    placement.NodeID // the node a drain empties
	started time.Time
	maxConc int
	// since is when this node began counting done moves (started, or when
	// it carried the operation on): the ETA's clock.
	since time.Time
	// planned is how many moves the operation had when it started
	// (placement.Operation.Planned); doneBefore, how many of them the meta
	// leaders before this one made, as this one counts them when it carries
	// the operation on: progress goes on from there rather than from 0.
	// Both are set before the operation is launched, and only read after.
	planned, doneBefore int
	// recorded: the meta group records the operation (rebalance, drain),
	// and its end must clear the record. Set before the operation is
	// launched, and only read after.
	recorded bool

	mu       sync.Mutex
	state    string
	total    int
	done     int
	finished time.Time
	err      string
	// waiting: the shards whose current step has not converged yet, with
	// since when and why not (shardView.converged).
	waiting map[placement.ShardID]stepWait
}

type stepWait struct {
	since  time.Time
	reason string
}

// opJSON is an operation as the API shows it.
type opJSON struct {
	ID         string    `json:"id"`
	Kind       string    `json:"kind"`
	Node       string    `json:"node,omitempty"` // a drain's node
	State      string    `json:"state"`
	Total      int       `json:"total"`
	Done       int       `json:"done"`
	Started    time.Time `json:"started"`
	ETASeconds *int      `json:"eta_seconds"` // null until a move has finished
	Error      string    `json:"error"`
	// Waiting lists, longest first, the shards whose current step has not
	// converged yet and why; empty once the operation has ended.
	Waiting []opWaitJSON `json:"waiting"`
}

type opWaitJSON struct {
	Shard   placement.ShardID `json:"shard"`
	Seconds int               `json:"seconds"`
	Reason  string            `json:"reason"`
}

// endedOpJSON is the meta group's record of an ended operation as the API
// shows it.
func endedOpJSON(e placement.EndedOperation) *opJSON {
	zero := 0
	return &opJSON{ID: e.ID, Kind: e.Kind, Node: string(e.Node), State: e.State, Total: max(e.Total, e.Done), Done: e.Done, Started: e.Started,
		ETASeconds: &zero, Error: e.Error, Waiting: []opWaitJSON{}}
}

func (op *operation) json() *opJSON {
	op.mu.Lock()
	defer op.mu.Unlock()
	j := &opJSON{ID: op.id, Kind: op.kind, Node: string(op.node), State: op.state, Total: op.total, Done: op.done, Started: op.started, Error: op.err, Waiting: []opWaitJSON{}}
	if op.state == "running" {
		for sid, w := range op.waiting {
			j.Waiting = append(j.Waiting, opWaitJSON{Shard: sid, Seconds: int(time.Since(w.since).Seconds()), Reason: w.reason})
		}
		slices.SortFunc(j.Waiting, func(a, b opWaitJSON) int {
			return cmp.Or(cmp.Compare(b.Seconds, a.Seconds), cmp.Compare(a.Shard, b.Shard))
		})
	}
	switch {
	case op.state != "running":
		zero := 0
		j.ETASeconds = &zero
	case op.done > op.doneBefore:
		perMove := time.Since(op.since).Seconds() / float64(op.done-op.doneBefore)
		eta := int(math.Ceil(perMove * float64(max(op.total-op.done, 0))))
		j.ETASeconds = &eta
	}
	return j
}

// waitingOn records that shard sid's step, waited for since since, has
// not converged because of reason.
func (op *operation) waitingOn(sid placement.ShardID, since time.Time, reason string) {
	op.mu.Lock()
	defer op.mu.Unlock()
	if op.waiting == nil {
		op.waiting = map[placement.ShardID]stepWait{}
	}
	op.waiting[sid] = stepWait{since: since, reason: reason}
}

// doneWaiting records that shard sid's step is no longer waited for.
func (op *operation) doneWaiting(sid placement.ShardID) {
	op.mu.Lock()
	defer op.mu.Unlock()
	delete(op.waiting, sid)
}

// progress records the moves this node has planned (those it made
// included) and made, to which it adds those made before it carried the
// operation on.
func (op *operation) progress(total, done int) {
	op.mu.Lock()
	defer op.mu.Unlock()
	op.total, op.done = op.doneBefore+total, op.doneBefore+done
}

func (op *operation) finish(err error) {
	op.mu.Lock()
	defer op.mu.Unlock()
	op.finished = time.Now()
	if err != nil {
		op.state, op.err = "failed", err.Error()
		return
	}
	op.state = "done"
	op.total = op.done
}

// current returns the running operation, or nil.
func (a *admin) current() *opJSON {
	a.mu.Lock()
	op := a.running
	a.mu.Unlock()
	if op == nil {
		return nil
	}
	return op.json()
}

// operationID names the seq-th operation of kind that meta leader started
// at: unique across meta leaders, whose counts each start at 1 (without the
// node, two leaders starting an operation in the same second gave both one
// ID, and `roost operation ID` could show the other).
func operationID(kind, metaLeader string, at time.Time, seq int) string {
	return fmt.Sprintf("%s-%s-%s-%d", kind, at.UTC().Format("20060102t150405"), metaLeader, seq)
}

// startOp registers a new operation of planned moves, or refuses with 409
// while one runs.
func (a *admin) startOp(kind string, node placement.NodeID, maxConc, planned int) (*operation, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	op := &operation{id: operationID(kind, a.n.cfg.NodeID, now, a.seq+1), kind: kind, node: node, started: now, since: now, maxConc: maxConc, state: "running",
		planned: planned, total: planned}
	if err := a.registerLocked(op); err != nil {
		return nil, err // a refused operation takes no number
	}
	a.seq++
	return op, nil
}

// registerLocked makes op the running operation, or refuses with 409 while
// another runs. a.mu is held.
func (a *admin) registerLocked(op *operation) error {
	if cur := a.running; cur != nil {
		j := cur.json()
		return errorf(http.StatusConflict, "operation %s (%s, %d of %d moves done) is running; one operation runs at a time: wait for it (roost operation %s --wait), then retry", j.ID, j.Kind, j.Done, j.Total, j.ID)
	}
	a.running = op
	if _, known := a.ops[op.id]; known { // a resumed operation replaces its failed self
		a.order = slices.DeleteFunc(a.order, func(id string) bool { return id == op.id })
	}
	a.ops[op.id] = op
	a.order = append(a.order, op.id)
	if len(a.order) > keptOperations {
		delete(a.ops, a.order[0])
		a.order = a.order[1:]
	}
	return nil
}

// record writes op to the meta group, so that a new meta leader carries it
// on; on failure op ends with the error.
func (a *admin) record(op *operation) error {
	rec := placement.Operation{ID: op.id, Kind: op.kind, Node: op.node, MaxConcurrent: op.maxConc, Started: op.started.UTC().Round(0), Planned: op.planned}
	if _, err := a.proposeMeta(placement.Command{BeginOperation: &placement.BeginOperationCmd{Operation: rec}}); err != nil {
		if errors.Is(err, errMetaOutcomeUnknown) {
			// A new meta leader may commit the record, and then carries
			// the operation on: the caller must not take it for refused.
			err = &apiError{code: http.StatusServiceUnavailable, operation: op.id, err: err,
				msg: fmt.Sprintf("the meta leader lost its leadership while recording %s %s (it moved, or the leader lost touch with a quorum of the meta voters: see roost status): it may have been recorded, and then the next meta leader carries it on; 'roost operation %s --wait' follows it (if the cluster does not know it, it was not recorded: start it again)", op.kind, op.id, op.id)}
		}
		a.endOp(op, err)
		return err
	}
	op.recorded = true
	return nil
}

// resumeRecorded starts, on the meta leader, the operation the meta group
// records if this node is not running it: its previous meta leader lost the
// leadership or stopped before it ended. It runs under the recorded ID,
// kind and concurrency, and plans its remaining moves from the map. While
// another operation runs here (a heal), it waits for the next call.
func (a *admin) resumeRecorded() {
	c := a.n.cluster
	rf := c.metaRaft()
	if rf == nil || rf.State() != raft.Leader {
		return
	}
	a.resumeMu.Lock()
	defer a.resumeMu.Unlock()
	if _, ok := c.metaFSM.Operation(); !ok || a.current() != nil {
		return
	}
	// What this replica has applied may lag what the old leader
	// committed (an EndOperation, say): catch up first.
	if err := rf.Barrier(metaLeaderGrace).Error(); err != nil {
		return
	}
	rec, ok := c.metaFSM.Operation()
	if !ok {
		return
	}
	op := &operation{id: rec.ID, kind: rec.Kind, node: rec.Node, started: rec.Started, since: time.Now(), maxConc: rec.MaxConcurrent, state: "running", recorded: true}
	a.mu.Lock()
	err := a.registerLocked(op)
	a.mu.Unlock()
	if err != nil {
		return
	}
	a.n.log.Info("admin: carrying on an operation a previous meta leader started", "op", op.id, "kind", op.kind)
	// A drain is recorded before its node is made draining: if the meta
	// leader that started it stopped, or lost the leadership, in between,
	// the node is still active, and the planner would move nothing off it.
	if op.kind == placement.OperationDrain {
		if nd, ok := c.metaFSM.Map().Nodes[op.node]; ok && nd.State == placement.NodeActive {
			if _, err := a.proposeMeta(placement.Command{SetNodeState: &placement.SetNodeStateCmd{ID: op.node, State: placement.NodeDraining}}); err != nil {
				if rf.State() != raft.Leader {
					err = fmt.Errorf("this node (%s) %w while marking %s draining: %v", c.self, errLostMetaLeadership, op.node, err)
				}
				a.endOp(op, err)
				return
			}
		}
	}
	plan := a.planOf(op)
	left := len(plan(c.metaFSM.Map()))
	op.planned, op.doneBefore = rec.Planned, max(rec.Planned-left, 0)
	op.progress(left, 0)
	a.launch(op, plan)
}

// planOf returns the planner of a recorded operation's kind.
func (a *admin) planOf(op *operation) planFunc {
	c := a.n.cluster
	plan := placement.Plan
	if op.kind == placement.OperationDrain {
		// The drained node's replicas go to nodes that are alive: planned
		// as if the dead were draining too, a replica is not sent to a dead
		// node (runOp would not make that move, and the drain would end
		// with the replica still there). But where the dead alone leave a
		// replica nowhere to go, the move planned with them as they are
		// (onto a dead node) is kept instead of a bare removal: runOp sets
		// it apart, waits for the node and ends naming it, rather than
		// leave the shard one replica short while a node is only briefly
		// down. Only with fewer active nodes, dead or alive, than it has
		// replicas does a shard lose one.
		drained := op.node
		plan = func(m placement.Map) []placement.Move {
			moves := drainMoves(deadAsDraining(m, c.usableIDs(m)), m, drained)
			var asIs []placement.Move
			for i, mv := range moves {
				if mv.Add != "" {
					continue
				}
				if asIs == nil {
					asIs = drainMoves(m, m, drained)
				}
				if j := slices.IndexFunc(asIs, func(o placement.Move) bool { return o.Shard == mv.Shard && o.Add != "" }); j >= 0 {
					moves[i] = asIs[j]
				}
			}
			return moves
		}
	}
	return plan
}

// drainMoves is the planner's moves that take the drained node's replicas
// off, planned on view (m with some nodes' states changed). The drained
// node is planned as removed, so that its replica is the first one the
// planner takes off a shard and is paired with the replica the shard
// gains: planned as draining, like the dead, the planner may pair the new
// replica with the dead node's and leave the drained one to a bare
// removal, which left the shard with its dead replica and one live one.
func drainMoves(view, m placement.Map, drained placement.NodeID) []placement.Move {
	if nd, ok := view.Nodes[drained]; ok && m.Nodes[drained].State == placement.NodeDraining {
		view.Nodes = maps.Clone(view.Nodes)
		nd.State = placement.NodeRemoved
		view.Nodes[drained] = nd
	}
	return slices.DeleteFunc(placement.Plan(view), func(mv placement.Move) bool { return mv.Remove != drained })
}

// endOp records the end of the running operation, and clears the meta
// group's record of it unless another meta leader is to carry it on.
func (a *admin) endOp(op *operation, err error) {
	// A stopping node's moves fail with their cancelled context, whatever
	// the error says.
	stopping := a.n.manager.ctx.Err() != nil
	carriedOn := stopping || errors.Is(err, errLostMetaLeadership)
	if err != nil && !carriedOn && op.kind == "drain" {
		// Said here because nothing else would: the failed drain left the
		// node draining, and new replicas avoid it.
		err = fmt.Errorf("%w; %[2]s stays draining: drain it again, or make it active again with 'roost activate %[2]s'", err, op.node)
	}
	if op.recorded && !carriedOn {
		// If this fails (the leadership just moved), the new meta leader
		// carries the operation on: it plans from the map, so a finished
		// one ends at once.
		j := op.json()
		end := &placement.EndOperationCmd{ID: op.id, OperationOutcome: placement.OperationOutcome{State: placement.OperationDone, Done: j.Done, Total: max(j.Total, j.Done), Finished: time.Now().UTC()}}
		if err != nil {
			end.State, end.Error = placement.OperationFailed, truncate(err.Error(), placement.MaxOperationErrorLen)
		}
		if _, perr := a.proposeMeta(placement.Command{EndOperation: end}); perr != nil {
			a.n.log.Warn("admin: clearing the record of an operation", "op", op.id, "err", perr)
		}
	}
	op.finish(err)
	a.mu.Lock()
	if a.running == op {
		a.running = nil
	}
	a.mu.Unlock()
	j := op.json()
	if err != nil {
		a.n.log.Warn("admin: operation failed", "op", op.id, "done", j.Done, "total", j.Total, "err", err)
	} else {
		a.n.log.Info("admin: operation done", "op", op.id, "moves", j.Done, "took", op.finished.Sub(op.started).Round(time.Millisecond))
	}
}

// opRequest is the body of POST /v1/rebalance and /v1/nodes/{id}/drain.
type opRequest struct {
	DryRun        bool `json:"dry_run"`
	MaxConcurrent *int `json:"max_concurrent"` // nil: defaultMaxConcurrent
}

// maxConcurrent is the checked max_concurrent of req.
func (req *opRequest) maxConcurrent() (int, error) {
	if req.MaxConcurrent == nil {
		return defaultMaxConcurrent, nil
	}
	if n := *req.MaxConcurrent; n < 1 || n > maxMaxConcurrent {
		return 0, errorf(http.StatusBadRequest, "max_concurrent must be between 1 and %d, got %d (leave it out for %d)", maxMaxConcurrent, n, defaultMaxConcurrent)
	}
	return *req.MaxConcurrent, nil
}

// moveJSON is one planned move in a dry run.
type moveJSON struct {
	Shard  placement.ShardID `json:"shard"`
	Add    string            `json:"add"`
	Remove string            `json:"remove"`
}

func (a *admin) rebalance(w http.ResponseWriter, r *http.Request) error {
	// The request is checked before it waits for or goes to the meta
	// leader: a malformed one is the caller's mistake however the meta
	// group fares (not a 503 to retry).
	var req opRequest
	if err := decodeBody(r, &req, true); err != nil {
		return err
	}
	maxConc, err := req.maxConcurrent()
	if err != nil {
		return err
	}
	if here, err := a.onMetaLeader(w, r); !here {
		return err
	}
	m, err := a.clusterMap()
	if err != nil {
		return err
	}
	if req.DryRun {
		moves := []moveJSON{}
		for _, mv := range placement.Plan(m) {
			moves = append(moves, moveJSON{Shard: mv.Shard, Add: string(mv.Add), Remove: string(mv.Remove)})
		}
		writeJSON(w, http.StatusOK, map[string]any{"moves": moves})
		return nil
	}
	a.resumeRecorded()
	op, err := a.startOp(placement.OperationRebalance, "", maxConc, len(placement.Plan(m)))
	if err != nil {
		return err
	}
	plan := a.planOf(op)
	if err := a.record(op); err != nil {
		return err
	}
	op.progress(op.planned, 0)
	a.launch(op, plan)
	writeJSON(w, http.StatusAccepted, map[string]any{"operation": op.json()})
	return nil
}

// nodeOnMetaLeader is, on the meta leader, the map and its node id (a
// known node, or an error); elsewhere it forwards the call there and
// reports here false (onMetaLeader).
func (a *admin) nodeOnMetaLeader(w http.ResponseWriter, r *http.Request, id placement.NodeID) (placement.Map, placement.Node, bool, error) {
	if here, err := a.onMetaLeader(w, r); !here {
		return placement.Map{}, placement.Node{}, false, err
	}
	m, err := a.clusterMap()
	if err != nil {
		return m, placement.Node{}, false, err
	}
	nd, err := knownNode(m, "node", id)
	return m, nd, err == nil, err
}

func (a *admin) drain(w http.ResponseWriter, r *http.Request) error {
	id, err := parseNode("node", r.PathValue("id"))
	if err != nil {
		return err
	}
	var req opRequest
	if err := decodeBody(r, &req, true); err != nil {
		return err
	}
	if req.DryRun {
		return errorf(http.StatusBadRequest, "drain has no dry run; POST /v1/rebalance with dry_run after draining shows the plan")
	}
	maxConc, err := req.maxConcurrent()
	if err != nil {
		return err
	}
	m, nd, here, err := a.nodeOnMetaLeader(w, r, id)
	if !here {
		return err
	}
	if nd.State == placement.NodeRemoved {
		return errorf(http.StatusConflict, "%s has been removed; there is nothing to drain", id)
	}
	// A drain sends replicas only to nodes gossip sees alive (planOf): with
	// none, it could move nothing, and would only leave the node draining
	// for good.
	alive := a.n.cluster.aliveIDs()
	var others, down []placement.NodeID
	for _, o := range m.NodesIn(placement.NodeActive) {
		switch {
		case o == id:
		case alive[o]:
			others = append(others, o)
		default:
			down = append(down, o)
		}
	}
	if held := m.ShardsOf(id); len(held) > 0 && len(others) == 0 {
		if len(down) > 0 {
			return errorf(http.StatusConflict, "%s holds replicas of %s and no other active node is alive to take them (%s down); drain it once one is back", id, shardCount(len(held)), joinIDs(down))
		}
		return errorf(http.StatusConflict, "%s holds replicas of %s and no other node is active to take them", id, shardCount(len(held)))
	}
	a.resumeRecorded()
	op, err := a.startOp(placement.OperationDrain, id, maxConc, len(m.ShardsOf(id)))
	if err != nil {
		return err
	}
	if err := a.record(op); err != nil {
		return err
	}
	if nd.State != placement.NodeDraining {
		v, err := a.proposeMeta(placement.Command{SetNodeState: &placement.SetNodeStateCmd{ID: id, State: placement.NodeDraining}})
		if err != nil {
			a.endOp(op, err)
			return err
		}
		setMapVersion(w, v)
	}
	op.progress(op.planned, 0)
	a.launch(op, a.planOf(op))
	writeJSON(w, http.StatusAccepted, map[string]any{"operation": op.json()})
	return nil
}

func (a *admin) remove(w http.ResponseWriter, r *http.Request) error {
	id, m, nd, here, err := a.bodilessNodeCall(w, r)
	if !here {
		return err
	}
	if nd.State != placement.NodeRemoved {
		if held := m.ShardsOf(id); len(held) > 0 {
			return errorf(http.StatusConflict, "%s still holds replicas of %s (%s); drain it first (roost drain %s --wait, or POST /v1/nodes/%s/drain and wait for the operation)", id, shardCount(len(held)), shardList(held), id, id)
		}
		v, err := a.proposeMeta(placement.Command{SetNodeState: &placement.SetNodeStateCmd{ID: id, State: placement.NodeRemoved}})
		if err != nil {
			return err
		}
		setMapVersion(w, v)
		a.n.log.Info("admin: node removed from the cluster map", "node", id)
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "state": placement.NodeRemoved.String()})
	return nil
}

// bodilessNodeCall checks a POST /v1/nodes/{id}/… call that takes no
// body and, on the meta leader, returns its node; elsewhere it forwards the
// call there (nodeOnMetaLeader). here is false when the call is answered.
func (a *admin) bodilessNodeCall(w http.ResponseWriter, r *http.Request) (placement.NodeID, placement.Map, placement.Node, bool, error) {
	id, err := parseNode("node", r.PathValue("id"))
	if err != nil {
		return id, placement.Map{}, placement.Node{}, false, err
	}
	if err := decodeBody(r, &struct{}{}, true); err != nil {
		return id, placement.Map{}, placement.Node{}, false, err
	}
	m, nd, here, err := a.nodeOnMetaLeader(w, r, id)
	return id, m, nd, here, err
}

// activate makes a draining node active again: new replicas may be placed
// on it, and a rebalance moves some back. Refused while a drain of it runs
// (a drain that ends would leave it active, half emptied) and for a
// removed node, whose id is not used again.
func (a *admin) activate(w http.ResponseWriter, r *http.Request) error {
	id, _, nd, here, err := a.bodilessNodeCall(w, r)
	if !here {
		return err
	}
	switch nd.State {
	case placement.NodeRemoved:
		return errorf(http.StatusConflict, "%s has been removed; its id is not used again", id)
	case placement.NodeDraining:
		if op, ok := a.n.cluster.metaFSM.Operation(); ok && op.Kind == placement.OperationDrain && op.Node == id {
			return errorf(http.StatusConflict, "the drain of %s (operation %s) is running; activate it once the drain has ended", id, op.ID)
		}
		v, err := a.proposeMeta(placement.Command{SetNodeState: &placement.SetNodeStateCmd{ID: id, State: placement.NodeActive}})
		if err != nil {
			return err
		}
		setMapVersion(w, v)
		a.n.log.Info("admin: draining node made active again", "node", id)
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "state": placement.NodeActive.String()})
	return nil
}

// shardCount is "1 shard" or "N shards".
func shardCount(n int) string {
	if n == 1 {
		return "1 shard"
	}
	return fmt.Sprintf("%d shards", n)
}

func shardList(ids []placement.ShardID) string {
	const show = 8
	var b strings.Builder
	for i, id := range ids {
		if i == show {
			fmt.Fprintf(&b, " and %d more", len(ids)-show)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d", id)
	}
	return b.String()
}

// shownOp is j, this node's account of an operation, as the API shows
// it: once it is not running, how the meta group saw it end (ended, if
// hasEnded) wins, since this node may have lost it with the meta
// leadership before another meta leader finished it.
func shownOp(j *opJSON, ended placement.EndedOperation, hasEnded bool) *opJSON {
	if hasEnded && j.ID == ended.ID && j.State != "running" {
		return endedOpJSON(ended)
	}
	return j
}

// operations answers GET /v1/operations: the operations the meta leader
// knows, newest first — those it ran (the last keptOperations) and the
// last the meta group saw end, which a previous meta leader may have run.
func (a *admin) operations(w http.ResponseWriter, r *http.Request) error {
	if here, err := a.onMetaLeader(w, r); !here {
		return err
	}
	if _, ok := a.n.cluster.metaFSM.Operation(); ok {
		a.resumeRecorded() // a recorded one this meta leader has not yet carried on
	}
	a.mu.Lock()
	ops := make([]*operation, 0, len(a.order))
	for i := len(a.order) - 1; i >= 0; i-- {
		ops = append(ops, a.ops[a.order[i]])
	}
	a.mu.Unlock()
	list := make([]*opJSON, 0, len(ops)+1)
	ended, hasEnded := a.n.cluster.metaFSM.LastEnded()
	for _, op := range ops {
		list = append(list, shownOp(op.json(), ended, hasEnded))
	}
	if hasEnded && !slices.ContainsFunc(list, func(j *opJSON) bool { return j.ID == ended.ID }) {
		j := endedOpJSON(ended)
		at := slices.IndexFunc(list, func(o *opJSON) bool { return o.Started.Before(j.Started) })
		if at < 0 {
			at = len(list)
		}
		list = slices.Insert(list, at, j)
	}
	writeJSON(w, http.StatusOK, map[string]any{"operations": list})
	return nil
}

func (a *admin) operation(w http.ResponseWriter, r *http.Request) error {
	if here, err := a.onMetaLeader(w, r); !here {
		return err
	}
	id := r.PathValue("id")
	j := a.knownOperation(id)
	if j == nil {
		// A meta leader elected a moment ago may not yet have applied what
		// its predecessor recorded (the operation, or its end): catch up
		// before saying the operation is unknown.
		if rf := a.n.cluster.metaRaft(); rf != nil && rf.Barrier(metaLeaderGrace).Error() == nil {
			j = a.knownOperation(id)
		}
	}
	if j != nil {
		writeJSON(w, http.StatusOK, map[string]any{"operation": j})
		return nil
	}
	return errorf(http.StatusBadRequest, "unknown operation %q: the meta leader (%s) has no record of it (it keeps the last %d it ran, and the last that ended; a heal is not carried over from a previous meta leader)", id, a.n.cfg.NodeID, keptOperations)
}

// knownOperation is what this meta leader knows of operation id, nil if
// nothing: one it runs or ran, one the meta group recorded (which it then
// carries on), or the last the meta group saw end.
func (a *admin) knownOperation(id string) *opJSON {
	if rec, ok := a.n.cluster.metaFSM.Operation(); ok && rec.ID == id {
		a.resumeRecorded() // if this meta leader has not yet
	}
	a.mu.Lock()
	op := a.ops[id]
	a.mu.Unlock()
	ended, hasEnded := a.n.cluster.metaFSM.LastEnded()
	switch {
	case op != nil:
		return shownOp(op.json(), ended, hasEnded)
	case hasEnded && ended.ID == id:
		return endedOpJSON(ended)
	}
	return nil
}

// planFunc gives the moves an operation still has to make from map m, in
// the order placement.Plan gives them.
type planFunc func(m placement.Map) []placement.Move

// splitToDead separates from moves those that would add a replica on a
// node gossip does not see alive: it could not catch up, and the move
// would wait out convergeTimeout. An operation makes the others, waits
// for such nodes to come back, and names the moves it could not make when
// it ends (deadTargetsError).
func splitToDead(moves []placement.Move, alive map[placement.NodeID]bool) (toAlive, toDead []placement.Move) {
	for _, mv := range moves {
		if mv.Add != "" && !alive[mv.Add] {
			toDead = append(toDead, mv)
		} else {
			toAlive = append(toAlive, mv)
		}
	}
	return toAlive, toDead
}

// deadTargetsError is how an operation ends that could not make moves
// because the nodes they add replicas on were down.
func deadTargetsError(toDead []placement.Move) error {
	var nodes []placement.NodeID
	var shards []placement.ShardID
	for _, mv := range toDead {
		if !slices.Contains(nodes, mv.Add) {
			nodes = append(nodes, mv.Add)
		}
		shards = append(shards, mv.Shard)
	}
	slices.Sort(nodes)
	slices.Sort(shards)
	back := "they are"
	if len(nodes) == 1 {
		back = "it is"
	}
	return fmt.Errorf("did not make %d move(s) (shards %s): they add replicas on %s, which gossip sees down; start the operation again once %s back",
		len(toDead), shardList(slices.Compact(shards)), joinIDs(nodes), back)
}

// errNoLiveQuorum: a shard's replicas on nodes gossip sees alive are fewer
// than a quorum, so its group can make no configuration change; an
// operation leaves such a shard as it is and names it when it ends.
var errNoLiveQuorum = errors.New("too few of its replicas are alive to change it")

// liveQuorumErr is an errNoLiveQuorum saying why if s has fewer replicas
// on alive nodes than a quorum of its replica set, else nil. Such a
// shard's group cannot elect a leader or commit a change, so a step
// written to the map for it could only wait out convergeTimeout.
func liveQuorumErr(s placement.Shard, alive map[placement.NodeID]bool) error {
	var down []placement.NodeID
	for _, id := range s.Replicas {
		if !alive[id] {
			down = append(down, id)
		}
	}
	up, need := len(s.Replicas)-len(down), placement.Quorum(len(s.Replicas))
	if up >= need {
		return nil
	}
	return fmt.Errorf("shard %d: %w: %d of its replicas [%s] are alive (%s down), and a change needs %d",
		s.ID, errNoLiveQuorum, up, joinIDs(s.Replicas), joinIDs(down), need)
}

// withoutLiveQuorum returns, with liveQuorumErr's reason, the shards of
// moves that lack a live quorum (nil if none does), and those whose next
// move (their first in moves) is a bare removal that would leave them
// without one: the group could not commit the removal, and the shard
// would be left unavailable until the dead nodes came back. (A move that
// adds a replica keeps the live ones it had, plus the new one.)
func withoutLiveQuorum(m placement.Map, moves []placement.Move, alive map[placement.NodeID]bool) map[placement.ShardID]error {
	var held map[placement.ShardID]error
	seen := map[placement.ShardID]bool{}
	for _, mv := range moves {
		if int(mv.Shard) >= len(m.ShardMap) || seen[mv.Shard] {
			continue
		}
		seen[mv.Shard] = true
		s := m.ShardMap[mv.Shard]
		err := liveQuorumErr(s, alive)
		if err == nil && mv.Add == "" && mv.Remove != "" {
			after := s
			after.Replicas = mv.Apply(s.Replicas)
			if aerr := liveQuorumErr(after, alive); aerr != nil {
				err = fmt.Errorf("taking its replica off %s: %w", mv.Remove, aerr)
			}
		}
		if err != nil {
			if held == nil {
				held = map[placement.ShardID]error{}
			}
			held[mv.Shard] = err
		}
	}
	return held
}

// heldError is how an operation ends that left shards without a live
// quorum unchanged.
func heldError(held map[placement.ShardID]error) error {
	ids := slices.Sorted(maps.Keys(held))
	return fmt.Errorf("did not move %d shard(s) (%s): too few of their replicas are alive to change them; start the operation again once their nodes are back; %w",
		len(ids), shardList(ids), held[ids[0]])
}

// joinErrs is first, followed by "; " and then if that is not nil: one
// line, as an operation's error is shown.
func joinErrs(first, then error) error {
	if then == nil {
		return first
	}
	return fmt.Errorf("%w; %w", first, then)
}

// launch runs op in the background, bounded by the node's lifetime.
func (a *admin) launch(op *operation, plan planFunc) {
	ctx := a.n.manager.ctx
	a.n.wg.Add(1)
	go func() {
		defer a.n.wg.Done()
		a.endOp(op, a.runOp(ctx, op, plan))
	}()
}

// errReplan: the shard changed under a move; plan again.
var errReplan = errors.New("the shard changed under the move")

// runOp carries out the moves plan gives, planning again from the map
// after each, until none is left, at most op.maxConc shards at a time.
func (a *admin) runOp(ctx context.Context, op *operation, plan planFunc) error {
	c := a.n.cluster
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		shard placement.ShardID
		err   error
	}
	results := make(chan result)
	inflight := map[placement.ShardID]bool{}
	done, replans := 0, 0
	var failure error
	var heldSince time.Time // since when only shards without a live quorum, or moves onto dead nodes, are left
	for {
		if failure == nil {
			if err := ctx.Err(); err != nil {
				failure = errNodeStopping
			} else if err := a.stillMetaLeader(ctx); err != nil {
				failure = err
			}
		}
		if failure != nil {
			cancel()
			if len(inflight) == 0 {
				return failure
			}
		} else {
			m := c.metaFSM.Map()
			alive := c.usableIDs(m) // alive in gossip, and reachable over Raft
			pending, toDead := splitToDead(plan(m), alive)
			// The moves onto dead nodes count: if they are not made, the
			// operation ends failed showing them (2/9 moves, not 2/2).
			op.progress(done+len(pending)+len(toDead), done)
			// Shards without a live quorum are left as they are: a step
			// for them would be written to the map and never carried out.
			held := withoutLiveQuorum(m, pending, alive)
			pending = slices.DeleteFunc(pending, func(mv placement.Move) bool { return held[mv.Shard] != nil })
			if len(held) == 0 && len(toDead) == 0 || len(pending) > 0 || len(inflight) > 0 {
				heldSince = time.Time{}
			} else if heldSince.IsZero() || time.Since(heldSince) < quorumLossGrace {
				// Only held shards, or moves onto dead nodes, are left:
				// give their nodes the grace to come back (a restart, or
				// gossip that was only slow) before the operation fails
				// for them.
				if heldSince.IsZero() {
					heldSince = time.Now()
				}
				if !sleepCtx(ctx, convergePoll) {
					failure = errNodeStopping
				}
				continue
			}
			if len(pending) == 0 && len(inflight) == 0 {
				var err error
				if len(held) > 0 {
					err = heldError(held)
				}
				if len(toDead) > 0 {
					err = joinErrs(deadTargetsError(toDead), err)
				}
				if op.kind == "drain" {
					left := slices.DeleteFunc(m.ShardsOf(op.node), func(sid placement.ShardID) bool {
						return held[sid] != nil || slices.ContainsFunc(toDead, func(mv placement.Move) bool { return mv.Shard == sid })
					})
					if len(left) > 0 {
						return joinErrs(fmt.Errorf("%s still holds replicas of shards %s, but the planner has no move for them", op.node, shardList(left)), err)
					}
				}
				return err
			}
			seen := map[placement.ShardID]bool{}
			for _, mv := range pending {
				if len(inflight) >= op.maxConc {
					break
				}
				// One move per shard at a time: a shard's later moves
				// assume its earlier ones are done.
				if inflight[mv.Shard] || seen[mv.Shard] {
					continue
				}
				seen[mv.Shard] = true
				inflight[mv.Shard] = true
				go func() {
					results <- result{mv.Shard, a.execMove(ctx, op, mv)}
				}()
			}
		}
		res := <-results
		delete(inflight, res.shard)
		switch {
		case res.err == nil:
			done++
			replans = 0
		case errors.Is(res.err, errNoLiveQuorum):
			// Planned again, the shard is held back, and named at the end.
		case errors.Is(res.err, errReplan):
			if replans++; replans > maxReplans && failure == nil {
				failure = fmt.Errorf("the map kept changing under the operation (%d re-plans in a row); last: %v", replans, res.err)
			}
		case failure == nil:
			failure = res.err
		}
	}
}

// metaLeaderGrace is how long an operation waits for its node to lead
// the meta group again after it stepped down (a stalled leader steps down
// and is often re-elected) before the operation fails.
const metaLeaderGrace = 5 * time.Second

// stillMetaLeader reports nil while this node leads the meta group,
// waiting up to metaLeaderGrace while no other node does.
func (a *admin) stillMetaLeader(ctx context.Context) error {
	c := a.n.cluster
	deadline := time.Now().Add(metaLeaderGrace)
	for {
		rf := c.metaRaft()
		if rf != nil && rf.State() == raft.Leader {
			return nil
		}
		leader := c.metaLeaderID()
		if leader != "" && leader != c.self || time.Now().After(deadline) {
			if leader == "" {
				leader = "no node"
			}
			return fmt.Errorf("this node (%s) %w (now %s)", c.self, errLostMetaLeadership, leader)
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			return errNodeStopping
		}
	}
}

// execMove carries out one move: each step is written to the map, then
// the shard's group must converge to it before the next.
func (a *admin) execMove(ctx context.Context, op *operation, mv placement.Move) error {
	c := a.n.cluster
	m := c.metaFSM.Map()
	s := m.ShardMap[mv.Shard]
	prev := s.Replicas
	for _, next := range mv.Steps(s.Replicas) {
		cur := c.metaFSM.Map().ShardMap[mv.Shard]
		if !slices.Equal(cur.Replicas, prev) {
			return fmt.Errorf("%w: shard %d is now [%s]", errReplan, mv.Shard, joinIDs(cur.Replicas))
		}
		// A node may have died since the move was planned, or while its
		// add step converged: a removal that would leave the shard with
		// fewer live replicas than a quorum is not written (its group
		// would not carry it out: nextConfigStep), and the shard is held.
		if len(next) < len(cur.Replicas) {
			if err := liveQuorumErr(placement.Shard{ID: mv.Shard, Replicas: next}, c.aliveIDs()); err != nil {
				return err
			}
		}
		_, err := a.proposeMeta(placement.Command{SetShardReplicas: &placement.SetShardReplicasCmd{Shard: mv.Shard, Replicas: next, ExpectedVersion: cur.Version}})
		if err != nil {
			var ae *apiError
			if errors.Is(err, placement.ErrStaleVersion) || errors.As(err, &ae) && ae.code == http.StatusServiceUnavailable {
				// Stale: someone else changed the shard. Unavailable: the
				// meta leadership wavered, and the step may or may not
				// have been applied. Either way, plan again from the map.
				return fmt.Errorf("%w: %v", errReplan, err)
			}
			return fmt.Errorf("%s: %w", mv, err)
		}
		if err := a.waitConverged(ctx, op, mv.Shard, next); err != nil {
			return fmt.Errorf("%s: %w", mv, err)
		}
		prev = next
	}
	return nil
}

// waitConverged waits until shard sid's group is configured as replicas:
// a leader, every replica a voter, nothing else.
func (a *admin) waitConverged(ctx context.Context, op *operation, sid placement.ShardID, replicas []placement.NodeID) error {
	c := a.n.cluster
	start := time.Now()
	deadline := start.Add(convergeTimeout)
	var lostSince time.Time // when the shard was first seen without a live quorum
	deadSince := map[placement.NodeID]time.Time{}
	defer op.doneWaiting(sid)
	for {
		m := c.metaFSM.Map()
		s := m.ShardMap[sid]
		if !slices.Equal(s.Replicas, replicas) {
			return fmt.Errorf("%w: shard %d is now [%s]", errReplan, sid, joinIDs(s.Replicas))
		}
		vctx, cancel := context.WithTimeout(ctx, statusFanoutTimeout)
		view := c.shardView(vctx, m, s, nil)
		cancel()
		ok, why := view.converged()
		if ok {
			return nil
		}
		alive := c.aliveIDs()
		if err := a.dropDeadAddition(s, view, alive, deadSince); err != nil {
			return err
		}
		if err := liveQuorumErr(s, alive); err != nil {
			if lostSince.IsZero() {
				lostSince = time.Now()
			} else if time.Since(lostSince) >= quorumLossGrace {
				return err
			}
		} else {
			lostSince = time.Time{}
		}
		op.waitingOn(sid, start, why)
		if time.Now().After(deadline) {
			return fmt.Errorf("shard %d did not converge to [%s] within %s: %s", sid, joinIDs(replicas), convergeTimeout, why)
		}
		if !sleepCtx(ctx, convergePoll) {
			return ctx.Err()
		}
	}
}

// dropDeadAddition gives up on a replica the map adds to shard s that has
// been dead in gossip for quorumLossGrace while not yet a voter: it could
// never catch up to be promoted, and the step would wait convergeTimeout
// and fail the operation (a node that died after the move was planned, or
// one gossip still showed alive when the move was asked for). The map is
// set back without it, and errReplan has the operation plan again with the
// nodes alive. A non-voter counts toward no quorum, so leaving it out
// changes none. deadSince is the caller's record of when each was first
// seen dead.
func (a *admin) dropDeadAddition(s placement.Shard, view shardView, alive map[placement.NodeID]bool, deadSince map[placement.NodeID]time.Time) error {
	if view.Leader == "" {
		return nil // whom the group counts as voters is not known
	}
	for _, id := range s.Replicas {
		if alive[id] || slices.Contains(view.Voters, string(id)) {
			delete(deadSince, id)
			continue
		}
		since, seen := deadSince[id]
		if !seen {
			deadSince[id] = time.Now()
			continue
		}
		if time.Since(since) < quorumLossGrace {
			continue
		}
		rest := slices.DeleteFunc(slices.Clone(s.Replicas), func(r placement.NodeID) bool { return r == id })
		if _, err := a.proposeMeta(placement.Command{SetShardReplicas: &placement.SetShardReplicasCmd{Shard: s.ID, Replicas: rest, ExpectedVersion: s.Version}}); err != nil {
			return fmt.Errorf("%w: giving up on %s, dead before it caught up: %v", errReplan, id, err)
		}
		a.n.log.Warn("admin: a replica being added died before it caught up; planning again without it", "shard", s.ID, "node", id)
		return fmt.Errorf("%w: %s died before it caught up with shard %d", errReplan, id, s.ID)
	}
	return nil
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
