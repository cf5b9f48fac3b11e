package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
	"github.com/roostdb/roost/proto"
	"github.com/roostdb/roost/raftstore"
)

// withGroupConfig adds the group's leader and configuration, as this
// replica sees them, to a GroupStatus answer.
func withGroupConfig(r *raft.Raft, st *proto.ForwardGroupStatusResponse) *proto.ForwardGroupStatusResponse {
	_, leader := r.LeaderWithID()
	st.Leader = string(leader)
	if cf := r.GetConfiguration(); cf.Error() == nil {
		for _, s := range cf.Configuration().Servers {
			switch s.Suffrage {
			case raft.Voter:
				st.Voters = append(st.Voters, string(s.ID))
			case raft.Nonvoter:
				st.Nonvoters = append(st.Nonvoters, string(s.ID))
			}
		}
	}
	return st
}

// groupStatusOf asks node id how far it has applied group gid (locally
// for this node, over gRPC otherwise); with confirm, a leader also says
// whether the configuration it reports is committed.
func (c *cluster) groupStatusOf(ctx context.Context, m placement.Map, id placement.NodeID, gid raftstore.GroupID, confirm bool) (*proto.ForwardGroupStatusResponse, error) {
	req := &proto.ForwardGroupStatusRequest{GroupId: uint64(gid), ConfirmConfig: confirm}
	if id == c.self {
		return c.groupStatus(req)
	}
	nd, ok := m.Nodes[id]
	if !ok {
		return nil, fmt.Errorf("node %s is not in the map", id)
	}
	return c.askGroupStatus(ctx, nd, req)
}

// askGroupStatus asks another node for its replica's status, within a
// second.
func (c *cluster) askGroupStatus(ctx context.Context, nd placement.Node, req *proto.ForwardGroupStatusRequest) (*proto.ForwardGroupStatusResponse, error) {
	cl, err := c.n.manager.forwarder.client(peer{id: string(nd.ID), addr: nd.GRPCAddr})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return cl.GroupStatus(ctx, req)
}

// shardView is one shard in GET /v1/shards: the map's replica set and the
// group's state as its replicas report it.
type shardView struct {
	ID           int              `json:"id"`
	Version      uint64           `json:"version"`
	Replicas     []string         `json:"replicas"`
	Leader       string           `json:"leader"`
	Voters       []string         `json:"voters"`
	Nonvoters    []string         `json:"nonvoters"`
	AppliedIndex uint64           `json:"applied_index"`
	ReplicaLag   map[string]int64 `json:"replica_lag"` // -1: the replica did not answer

	answered map[placement.NodeID]bool // replicas that run the group and answered
}

// converged reports whether the shard's group is configured exactly as
// the map says: a leader, every replica a voter, nothing else in it. If
// not, it says what is missing.
func (v shardView) converged() (bool, string) {
	if v.Leader == "" {
		return false, "it has no leader"
	}
	want := slices.Sorted(slices.Values(v.Replicas))
	if !slices.Equal(v.Voters, want) || len(v.Nonvoters) > 0 {
		why := fmt.Sprintf("its group has voters [%s]", strings.Join(v.Voters, " "))
		if len(v.Nonvoters) > 0 {
			why += fmt.Sprintf(" and non-voters [%s]", strings.Join(v.Nonvoters, " "))
		}
		return false, why + fmt.Sprintf(", the map wants voters [%s]", strings.Join(want, " "))
	}
	return true, ""
}

// shardViews gathers the status of the given shards from all their
// replicas in parallel (bounded by ctx).
func (c *cluster) shardViews(ctx context.Context, m placement.Map, shards []placement.Shard) []shardView {
	out := make([]shardView, len(shards))
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i, s := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = c.shardView(ctx, m, s, sem)
		}()
	}
	wg.Wait()
	return out
}

// shardView asks every replica of s (and the leader they name, if it is
// not one of them) for the status of s's group.
func (c *cluster) shardView(ctx context.Context, m placement.Map, s placement.Shard, sem chan struct{}) shardView {
	gid := groupOf(int(s.ID))
	v := shardView{ID: int(s.ID), Version: s.Version, Voters: []string{}, Nonvoters: []string{}, ReplicaLag: map[string]int64{},
		answered: map[placement.NodeID]bool{}}
	for _, id := range s.Replicas {
		v.Replicas = append(v.Replicas, string(id))
	}
	answers := map[placement.NodeID]*proto.ForwardGroupStatusResponse{}
	var mu sync.Mutex
	ask := func(ids []placement.NodeID) {
		var wg sync.WaitGroup
		for _, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if sem != nil {
					select {
					case sem <- struct{}{}:
						defer func() { <-sem }()
					case <-ctx.Done():
						return
					}
				}
				st, err := c.groupStatusOf(ctx, m, id, gid, false)
				if err != nil || !st.Running {
					return
				}
				mu.Lock()
				answers[id] = st
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	ask(s.Replicas)
	// The leader: a replica that says it leads, confirmed by the most
	// replicas that name a leader (a deposed leader may not know yet).
	leaderOf := func() placement.NodeID {
		votes := map[placement.NodeID]int{}
		for id, st := range answers {
			if st.State == raft.Leader.String() {
				votes[id] += 2
			}
			if st.Leader != "" {
				votes[placement.NodeID(st.Leader)]++
			}
		}
		var best placement.NodeID
		for id, n := range votes {
			if n > votes[best] || n == votes[best] && id < best {
				best = id
			}
		}
		return best
	}
	leader := leaderOf()
	if _, ok := answers[leader]; leader != "" && !ok {
		if _, inMap := m.Nodes[leader]; inMap {
			ask([]placement.NodeID{leader}) // e.g. a replica the map dropped that still leads
			leader = leaderOf()
		}
	}
	var ref *proto.ForwardGroupStatusResponse
	if st, ok := answers[leader]; ok && st.State == raft.Leader.String() {
		v.Leader, ref = string(leader), st
	}
	if ref == nil { // no confirmed leader: the most advanced replica's view
		for _, id := range slices.Sorted(func(yield func(placement.NodeID) bool) {
			for id := range answers {
				if !yield(id) {
					return
				}
			}
		}) {
			if st := answers[id]; ref == nil || st.AppliedIndex > ref.AppliedIndex {
				ref = st
			}
		}
	}
	members := map[string]bool{}
	for _, id := range v.Replicas {
		members[id] = true
	}
	if ref != nil {
		v.AppliedIndex = ref.AppliedIndex
		// Sorted copies, never nil: the API answers [] for none.
		v.Voters = append([]string{}, ref.Voters...)
		slices.Sort(v.Voters)
		v.Nonvoters = append([]string{}, ref.Nonvoters...)
		slices.Sort(v.Nonvoters)
		for _, id := range ref.Voters {
			members[id] = true
		}
		for _, id := range ref.Nonvoters {
			members[id] = true
		}
		// Members of the configuration the map no longer lists (the
		// replica a move takes off, until it is removed) were not asked
		// yet: without their answers they showed as not answering.
		var unasked []placement.NodeID
		for id := range members {
			if _, asked := answers[placement.NodeID(id)]; !asked && !slices.Contains(s.Replicas, placement.NodeID(id)) && placement.NodeID(id) != leader {
				if _, inMap := m.Nodes[placement.NodeID(id)]; inMap {
					unasked = append(unasked, placement.NodeID(id))
				}
			}
		}
		ask(unasked)
	}
	for id := range members {
		st, ok := answers[placement.NodeID(id)]
		if !ok || ref == nil {
			v.ReplicaLag[id] = -1
			continue
		}
		v.answered[placement.NodeID(id)] = true
		// Log entries, not applied ones: a follower learns the commit
		// index of the last entry only with the next append, so an idle
		// group's followers stay an entry or two behind in applying.
		v.ReplicaLag[id] = max(int64(ref.LastIndex)-int64(st.LastIndex), 0)
	}
	return v
}

func (a *admin) shards(w http.ResponseWriter, r *http.Request) error {
	m, err := a.clusterMap()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), statusFanoutTimeout)
	defer cancel()
	views := a.n.cluster.shardViews(ctx, m, m.ShardMap)
	writeJSON(w, http.StatusOK, map[string]any{"shards": views})
	return nil
}

// moveRequest is the body of POST /v1/shards/{id}/move.
type moveRequest struct {
	To   string `json:"to"`
	From string `json:"from"`
}

func (a *admin) move(w http.ResponseWriter, r *http.Request) error {
	// Checked before the call waits for or goes to the meta leader (see
	// rebalance); what needs the map is checked there.
	if _, err := parseShardNumber(r.PathValue("id")); err != nil {
		return err
	}
	var req moveRequest
	if err := decodeBody(r, &req, false); err != nil {
		return err
	}
	to, err := parseNode("to", req.To)
	if err != nil {
		return err
	}
	var from placement.NodeID
	if req.From != "" {
		if from, err = parseNode("from", req.From); err != nil {
			return err
		}
	}
	if here, err := a.onMetaLeader(w, r); !here {
		return err
	}
	m, err := a.clusterMap()
	if err != nil {
		return err
	}
	sid, err := parseShard(m, r.PathValue("id"))
	if err != nil {
		return err
	}
	if from != "" {
		if _, err := knownNode(m, "from", from); err != nil {
			return err
		}
	}
	toNode, err := knownNode(m, "to", to)
	if err != nil {
		return err
	}
	s := m.ShardMap[sid]
	if toNode.State != placement.NodeActive {
		return errorf(http.StatusConflict, "%s is %s: only active nodes receive new replicas", to, toNode.State)
	}
	if slices.Contains(s.Replicas, to) {
		return errorf(http.StatusConflict, "%s already holds a replica of shard %d (replicas: %s)", to, sid, joinIDs(s.Replicas))
	}
	if from == "" {
		from = plannerDrops(m, s)
	} else if !slices.Contains(s.Replicas, from) {
		return errorf(http.StatusConflict, "%s holds no replica of shard %d (replicas: %s)", from, sid, joinIDs(s.Replicas))
	}
	c := a.n.cluster
	var view shardView
	for deadline := time.Now().Add(leaderGrace); ; {
		ctx, cancel := context.WithTimeout(r.Context(), statusFanoutTimeout)
		view = c.shardView(ctx, m, s, nil)
		cancel()
		if view.Leader != "" || time.Now().After(deadline) {
			break // a shard without a leader is refused below
		}
		if !sleepCtx(r.Context(), 50*time.Millisecond) {
			return r.Context().Err()
		}
	}
	if view.Leader == "" {
		if why := lostQuorum(s, c.aliveIDs()); why != "" {
			return errorf(http.StatusConflict, "shard %d has no leader and cannot elect one: %s; a replica change needs a leader, so retry once they are back", sid, why)
		}
	}
	if err := moveRefusal(view, s.Replicas, from, to, c.usableIDs(m)[to]); err != nil {
		return err
	}
	mv := placement.Move{Shard: sid, Add: to, Remove: from}
	next := mv.Apply(s.Replicas)
	steps := [][]placement.NodeID{next}
	if placement.SafeChange(s.Replicas, next) != nil {
		// A lone replica moves as {A} → {A,B} → {B}. Both steps can go
		// in at once: the shard leader adds and promotes the new replica
		// before it removes the old one.
		steps = mv.Steps(s.Replicas)
	}
	version := s.Version
	var mapVersion uint64
	for _, st := range steps {
		if mapVersion, err = a.proposeMeta(placement.Command{SetShardReplicas: &placement.SetShardReplicasCmd{Shard: sid, Replicas: st, ExpectedVersion: version}}); err != nil {
			return err
		}
		version++
	}
	a.n.log.Info("admin: shard replica moved in the map", "shard", sid, "from", from, "to", to, "version", version)
	setMapVersion(w, mapVersion)
	writeJSON(w, http.StatusAccepted, map[string]any{"shard": sid, "from": from, "to": to, "version": version})
	return nil
}

// plannerDrops picks the replica of s a move should drop when the caller
// names none: one the planner does not want there (a removed or draining
// node's first), else the wanted replica farthest from the shard on the
// ring (the last of the planner's list).
func plannerDrops(m placement.Map, s placement.Shard) placement.NodeID {
	want := placement.Desired(m)[s.ID]
	rank := func(id placement.NodeID) int {
		nd, ok := m.Nodes[id]
		switch {
		case !ok || nd.State == placement.NodeRemoved:
			return 0
		case nd.State == placement.NodeDraining:
			return 1
		case !slices.Contains(want, id):
			return 2
		default:
			return 3 + len(want) - slices.Index(want, id) // farther on the ring first
		}
	}
	best := s.Replicas[0]
	for _, id := range s.Replicas[1:] {
		if rank(id) < rank(best) {
			best = id
		}
	}
	return best
}

// moveRefusal says why moving a replica of a shard from → to is unsafe
// or conflicting now, given the group's state (view), or nil. cur is the
// map's replica set; toAlive whether gossip sees the new node alive.
func moveRefusal(view shardView, cur []placement.NodeID, from, to placement.NodeID, toAlive bool) error {
	sid := view.ID
	if view.Leader == "" {
		return errorf(http.StatusConflict, "shard %d has no leader right now, and a replica change needs one to carry it out; retry once it has elected one", sid)
	}
	if ok, why := view.converged(); !ok {
		return errorf(http.StatusConflict, "shard %d is still converging to its last change (%s); move it again once that has finished", sid, why)
	}
	if !toAlive {
		return errorf(http.StatusConflict, "%s is not alive, or this node cannot reach it over Raft's transport, so a new replica of shard %d there could never catch up", to, sid)
	}
	next := placement.Move{Add: to, Remove: from}.Apply(cur)
	var up, down []string
	for _, id := range cur {
		if id == from {
			continue
		}
		if view.answered[id] {
			up = append(up, string(id))
		} else {
			down = append(down, string(id))
		}
	}
	// The new replica counts once it has caught up; the shard leader
	// removes `from` only then.
	if len(up)+1 < placement.Quorum(len(next)) {
		return errorf(http.StatusConflict, "moving shard %d from %s would leave it without a quorum: of the replicas it keeps, %s do not answer, so %s and the new replica on %s are fewer than the %d of %d a quorum needs",
			sid, from, strings.Join(down, ", "), describeUp(up), to, placement.Quorum(len(next)), len(next))
	}
	return nil
}

func describeUp(up []string) string {
	if len(up) == 0 {
		return "no replica"
	}
	return "only " + strings.Join(up, ", ")
}

func joinIDs(ids []placement.NodeID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = string(id)
	}
	return strings.Join(s, ", ")
}

// transferTargetNotReady is the 409 for a transfer to a replica that
// cannot take the leadership at once, given its status (or the error
// asking for it) and the leader's applied index; nil if it can.
func transferTargetNotReady(to placement.NodeID, shard int, st *proto.ForwardGroupStatusResponse, err error, leaderApplied uint64) error {
	switch {
	case err != nil:
		return errorf(http.StatusConflict, "%s did not answer for its replica of shard %d (%v): it cannot take the leadership now; retry", to, shard, err)
	case !st.Running:
		return errorf(http.StatusConflict, "%s does not run its replica of shard %d yet (starting, or just restarted): it cannot take the leadership now; retry in a few seconds", to, shard)
	case !withinCatchUpLag(st.AppliedIndex, leaderApplied):
		return errorf(http.StatusConflict, "%s's replica of shard %d is %d entries behind the leader's: it cannot take the leadership until it catches up; retry in a few seconds", to, shard, leaderApplied-min(leaderApplied, st.AppliedIndex))
	}
	return nil
}

// transferRequest is the body of POST /v1/shards/{id}/transfer-leader.
type transferRequest struct {
	To string `json:"to"`
}

// transferWait bounds how long a leadership transfer may take to show.
const transferWait = 10 * time.Second

func (a *admin) transferLeader(w http.ResponseWriter, r *http.Request) error {
	c := a.n.cluster
	// Checked before the call waits for or goes to the shard's leader.
	if _, err := parseShardNumber(r.PathValue("id")); err != nil {
		return err
	}
	var req transferRequest
	if err := decodeBody(r, &req, false); err != nil {
		return err
	}
	to, err := parseNode("to", req.To)
	if err != nil {
		return err
	}
	m, err := a.clusterMap()
	if err != nil {
		return err
	}
	sid, err := parseShard(m, r.PathValue("id"))
	if err != nil {
		return err
	}
	// Find the shard's leader (waiting up to leaderGrace through an
	// election): the transfer runs there, so forward the call to it.
	var ls *localShard
	deadline := time.Now().Add(leaderGrace)
	for {
		c.mu.Lock()
		ls = c.groups[int(sid)]
		c.mu.Unlock()
		if ls != nil && ls.group.Raft().State() == raft.Leader {
			break
		}
		ctx, cancel := context.WithTimeout(r.Context(), statusFanoutTimeout)
		view := c.shardView(ctx, m, m.ShardMap[sid], nil)
		cancel()
		if view.Leader != "" && view.Leader != string(c.self) {
			return a.forward(w, r, placement.NodeID(view.Leader), fmt.Sprintf("leader of shard %d", sid))
		}
		if time.Now().After(deadline) {
			if why := c.quorumLost(int(sid)); why != "" {
				return errorf(http.StatusServiceUnavailable, "shard %d has no leader and cannot elect one: %s; retry once they are back", sid, why)
			}
			return errorf(http.StatusServiceUnavailable, "shard %d has no leader right now; retry once it has elected one", sid)
		}
		if !sleepCtx(r.Context(), 50*time.Millisecond) {
			return r.Context().Err()
		}
	}
	if _, err := knownNode(m, "to", to); err != nil {
		return err
	}
	rf := ls.group.Raft()
	if to == c.self {
		writeJSON(w, http.StatusOK, map[string]any{"shard": sid, "leader": to})
		return nil
	}
	cf := rf.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("reading shard %d's configuration: %w", sid, err)
	}
	var target *raft.Server
	var voters []string
	for _, s := range cf.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, string(s.ID))
		}
		if s.ID == raft.ServerID(to) && s.Suffrage == raft.Voter {
			target = &s
		}
	}
	if target == nil {
		return errorf(http.StatusConflict, "%s is not a voter of shard %d (voters: %s): only a voter can lead it", to, sid, strings.Join(voters, ", "))
	}
	if !c.aliveIDs()[to] || !c.trans.PeerReachable(target.Address) {
		// The voters that could take it instead: not the one asked
		// for, nor the leader, nor one that is down too.
		alive := c.aliveIDs()
		others := slices.DeleteFunc(slices.Clone(voters), func(id string) bool {
			return id == string(to) || id == string(c.self) || !alive[placement.NodeID(id)]
		})
		instead := "no other voter of it is up: retry once it is back"
		if len(others) > 0 {
			instead = "pick another voter (" + strings.Join(others, ", ") + ") or retry once it is back"
		}
		return errorf(http.StatusConflict, "%s is down or unreachable from %s, the leader of shard %d: it cannot take the leadership; %s", to, c.self, sid, instead)
	}
	// A replica that is not running yet (its node just restarted) or is
	// far behind would hold the shard's requests while raft catches it up,
	// and the transfer could fail at the end of it: refuse it at once.
	ctx, cancel := context.WithTimeout(r.Context(), statusFanoutTimeout)
	st, err := c.groupStatusOf(ctx, m, to, groupOf(int(sid)), false)
	cancel()
	if err := transferTargetNotReady(to, int(sid), st, err, rf.AppliedIndex()); err != nil {
		return err
	}
	// Watch the leaders this replica learns of: the leader balancer may
	// hand the shard on soon after the target took over, and the transfer
	// has happened even if the target no longer leads when we look.
	seen := make(chan raft.Observation, 16)
	obs := raft.NewObserver(seen, false, func(o *raft.Observation) bool {
		lo, ok := o.Data.(raft.LeaderObservation)
		return ok && lo.LeaderID == target.ID
	})
	rf.RegisterObserver(obs)
	defer rf.DeregisterObserver(obs)
	deadline = time.Now().Add(transferWait)
	for {
		err := c.transferNow(ls, *target)
		if err == nil {
			break
		}
		switch {
		case errors.Is(err, raft.ErrLeadershipTransferInProgress) && time.Now().Before(deadline):
			// Another transfer (the leader balancer's) is under way: wait for it.
			if !sleepCtx(r.Context(), 50*time.Millisecond) {
				return r.Context().Err()
			}
			if rf.State() == raft.Leader {
				continue
			}
			select {
			case <-seen:
				writeJSON(w, http.StatusOK, map[string]any{"shard": sid, "leader": to})
				return nil
			default:
			}
			if _, id := rf.LeaderWithID(); id == target.ID {
				writeJSON(w, http.StatusOK, map[string]any{"shard": sid, "leader": to})
				return nil
			}
			return errorf(http.StatusServiceUnavailable, "shard %d's leadership moved elsewhere while this transfer waited; retry", sid)
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
			return errorf(http.StatusServiceUnavailable, "shard %d's leadership moved while transferring it (%v); retry", sid, err)
		default:
			return errorf(http.StatusServiceUnavailable, "transferring shard %d's leadership to %s: %v", sid, to, err)
		}
	}
	for took := false; !took; {
		if _, id := rf.LeaderWithID(); id == target.ID {
			break
		}
		if time.Now().After(deadline) {
			_, id := rf.LeaderWithID()
			return errorf(http.StatusServiceUnavailable, "shard %d's leadership was handed to %s, but this node sees %q as leader after %s", sid, to, id, transferWait)
		}
		select {
		case <-seen:
			took = true
		case <-time.After(20 * time.Millisecond):
		case <-r.Context().Done():
			return r.Context().Err()
		}
	}
	a.n.log.Info("admin: shard leadership transferred", "shard", sid, "to", to)
	writeJSON(w, http.StatusOK, map[string]any{"shard": sid, "leader": to})
	return nil
}

// objectLocation is GET /v1/objects/{binding}'s answer: which shard an
// object is on, and which nodes hold and lead it.
type objectLocation struct {
	Binding  string   `json:"binding"`
	Class    string   `json:"class"`
	ID       string   `json:"id"`
	Name     string   `json:"name,omitempty"` // when asked by name
	Shard    int      `json:"shard"`
	Replicas []string `json:"replicas"`
	Leader   string   `json:"leader"` // "" while the shard has none its replicas name
}

// locate answers where the object of a binding, given by ?name= or ?id=,
// lives: its ID decides its shard (as for a request), and the shard's
// replicas say who leads it.
func (a *admin) locate(w http.ResponseWriter, r *http.Request) error {
	ns, err := a.n.Env().Namespace(r.PathValue("binding"))
	if err != nil {
		return errorf(http.StatusNotFound, "%v", err)
	}
	q := r.URL.Query()
	name, hexID := q.Get("name"), q.Get("id")
	if (name == "") == (hexID == "") {
		return errorf(http.StatusBadRequest, "give the object's name (?name=) or its ID (?id=), one of the two")
	}
	id := ns.IDFromName(name)
	if hexID != "" {
		if id, err = ns.IDFromString(hexID); err != nil {
			return &apiError{code: http.StatusBadRequest, msg: err.Error(), err: err}
		}
	}
	loc := objectLocation{Binding: ns.Binding(), Class: ns.ClassName(), ID: id.String(), Name: name}
	if a.n.cluster == nil {
		loc.Shard = shardOf(id.Bytes(), a.n.cfg.Shards)
		loc.Replicas, loc.Leader = []string{string(devServerID)}, string(devServerID)
		writeJSON(w, http.StatusOK, loc)
		return nil
	}
	m, err := a.clusterMap()
	if err != nil {
		return err
	}
	loc.Shard = shardOf(id.Bytes(), m.Shards)
	ctx, cancel := context.WithTimeout(r.Context(), statusFanoutTimeout)
	defer cancel()
	v := a.n.cluster.shardViews(ctx, m, m.ShardMap[loc.Shard:loc.Shard+1])[0]
	loc.Replicas, loc.Leader = v.Replicas, v.Leader
	writeJSON(w, http.StatusOK, loc)
	return nil
}
