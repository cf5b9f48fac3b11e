package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
	"github.com/roostdb/roost/proto"
)

const testAdminToken = "test-admin-token-7"

// adminDo sends one admin call and decodes the JSON answer into out (if
// not nil). body may be nil, a string (sent as is) or a value to encode.
func adminDo(t testing.TB, addr, token, method, path string, body, out any) int {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(enc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %d, answer is not JSON: %v: %q", method, path, resp.StatusCode, err, raw)
		}
	}
	return resp.StatusCode
}

type apiErrorJSON struct {
	Error string `json:"error"`
}

func TestAdminAuth(t *testing.T) {
	withToken := startNode(t, t.TempDir(), func(c *Config, _ *Node) { c.AdminToken = testAdminToken })
	defer closeNode(t, withToken)
	noToken := startNode(t, t.TempDir(), nil)
	defer closeNode(t, noToken)
	tokenAddr, openAddr := withToken.AdminAddr().String(), noToken.AdminAddr().String()

	for _, tc := range []struct {
		name   string
		addr   string
		path   string
		header string // Authorization
		want   int
		errHas string // part of the error message, for JSON errors
	}{
		{"no token", tokenAddr, "/v1/status", "", 401, "admin token"},
		{"wrong token", tokenAddr, "/v1/status", "Bearer nope", 401, "wrong admin token"},
		{"token is a prefix", tokenAddr, "/v1/status", "Bearer " + testAdminToken[:5], 401, "wrong admin token"},
		{"token with extra", tokenAddr, "/v1/status", "Bearer " + testAdminToken + "x", 401, "wrong admin token"},
		{"not bearer", tokenAddr, "/v1/status", "Basic " + testAdminToken, 401, "Bearer"},
		{"right token", tokenAddr, "/v1/status", "Bearer " + testAdminToken, 200, ""},
		{"right token, scheme in lower case", tokenAddr, "/v1/status", "bearer " + testAdminToken, 200, ""},
		{"empty bearer", tokenAddr, "/v1/status", "Bearer ", 401, "send Authorization: Bearer <token>"},
		{"wrong token on an unknown call", tokenAddr, "/v1/nope", "Bearer nope", 401, ""},
		{"right token, unknown call in dev mode", tokenAddr, "/v1/nope", "Bearer " + testAdminToken, 404, "no admin call GET /v1/nope"},
		{"right token, dev mode has no cluster", tokenAddr, "/v1/members", "Bearer " + testAdminToken, 409, "roost dev runs no cluster"},
		{"dev mode shards", tokenAddr, "/v1/shards", "Bearer " + testAdminToken, 409, "roost dev runs no cluster"},
		{"healthz is open", tokenAddr, "/healthz", "", 200, ""},
		{"readyz is open", tokenAddr, "/readyz", "", 200, ""},
		{"metrics is open", tokenAddr, "/metrics", "", 200, ""},
		{"pprof is open", tokenAddr, "/debug/pprof/", "", 200, ""},
		{"the dashboard is open", tokenAddr, "/ui/", "", 200, ""},
		{"no token configured: open", openAddr, "/v1/status", "", 200, ""},
		{"no token configured: any header", openAddr, "/v1/status", "Bearer whatever", 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+tc.addr+tc.path, nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, raw := doWant(t, req, tc.want)
			if got := resp.Header.Get("WWW-Authenticate"); (tc.want == 401) != strings.HasPrefix(got, "Bearer ") {
				t.Fatalf("a %d with WWW-Authenticate %q; a 401, and only a 401, names the Bearer scheme (RFC 7235)", tc.want, got)
			}
			if tc.errHas != "" {
				var e apiErrorJSON
				if err := json.Unmarshal(raw, &e); err != nil || !strings.Contains(e.Error, tc.errHas) {
					t.Fatalf("answer %q: want a JSON error containing %q", raw, tc.errHas)
				}
			}
		})
	}

	var st statusJSON
	if code := adminDo(t, tokenAddr, testAdminToken, "GET", "/v1/status", nil, &st); code != 200 {
		t.Fatalf("status: %d", code)
	}
	if st.Mode != "dev" || !st.Ready || st.Shards != 4 || st.Replicas != 1 || st.Operation != nil {
		t.Fatalf("dev status: %+v", st)
	}
}

// TestAdminWrongMethod: a known call's path with a method it does not take
// is 405 with an Allow header and the usual JSON error, on a dev node as on
// a cluster (the catch-all answers both); an unknown path stays 404.
func TestAdminWrongMethod(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	addr := n.AdminAddr().String()
	for _, tc := range []struct {
		method, path string
		want         int
		allow        string // the Allow header; "" for none
		errHas       string
	}{
		{"DELETE", "/v1/status", 405, "GET, HEAD", "/v1/status takes GET, HEAD, not DELETE"},
		{"POST", "/v1/members", 405, "GET, HEAD", "takes GET, HEAD, not POST"},
		{"GET", "/v1/rebalance", 405, "POST", "/v1/rebalance takes POST, not GET"},
		{"HEAD", "/v1/nodes/n1/drain", 405, "POST", ""}, // no body to a HEAD
		{"GET", "/v1/shards/0/move", 405, "POST", "takes POST, not GET"},
		{"POST", "/v1/kv/COUNTS/values/a/b", 405, "GET, HEAD, PUT, DELETE", "takes GET, HEAD, PUT, DELETE, not POST"},
		{"PATCH", "/v1/operations/x", 405, "GET, HEAD", "not PATCH"},
		{"DELETE", "/v1/status?x=1", 405, "GET, HEAD", "not DELETE"}, // the method before the query
		{"GET", "/v1/nope", 404, "", "no admin call GET /v1/nope"},
		{"POST", "/v1/status/x", 404, "", "no admin call POST /v1/status/x"},
		{"GET", "/v1/shards/0", 404, "", "no admin call"},
		{"GET", "/v1/status", 200, "", ""},
		{"POST", "/v1/rebalance", 409, "", "roost dev runs no cluster"}, // the right method: dev's answer
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, "http://"+addr+tc.path, nil)
			resp, raw := doWant(t, req, tc.want)
			if got := resp.Header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
			if tc.errHas != "" {
				var e apiErrorJSON
				if err := json.Unmarshal(raw, &e); err != nil || !strings.Contains(e.Error, tc.errHas) {
					t.Errorf("answer %q: want a JSON error containing %q", raw, tc.errHas)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q, want application/json", ct)
				}
			}
		})
	}
}

// newAdminCluster is newTestCluster with an admin token on every node.
func newAdminCluster(t *testing.T, n, shards int) *testCluster {
	return newTestCluster(t, n, shards, &turnRegistry{active: map[string]string{}}, func(c *Config) { c.AdminToken = testAdminToken })
}

func (c *testCluster) admin(i int, method, path string, body, out any) int {
	c.t.Helper()
	return adminDo(c.t, c.cfgs[i].AdminAddr, testAdminToken, method, path, body, out)
}

// notMetaLeader returns the index of a node that does not lead the meta
// group, so calls to it exercise forwarding.
func (c *testCluster) notMetaLeader() int {
	c.t.Helper()
	leader := c.metaLeader()
	for i, nd := range c.nodes {
		if nd != nil && nd != leader {
			return i
		}
	}
	c.t.Fatal("every node leads the meta group?")
	return -1
}

// committedMetaConfig waits (within at most) until a meta leader commits
// a barrier, and returns its configuration then; it fails the test,
// saying in what situation (when), if none does.
func (c *testCluster) committedMetaConfig(within time.Duration, when string) []raft.Server {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		var err error
		for _, nd := range c.nodes {
			if nd == nil || nd.cluster.meta.Raft().State() != raft.Leader {
				continue
			}
			r := nd.cluster.meta.Raft()
			if err = r.Barrier(2 * time.Second).Error(); err == nil {
				return r.GetConfiguration().Configuration().Servers
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s, the meta group commits nothing (last: %v)", when, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *testCluster) shardViews(i int) []shardView {
	c.t.Helper()
	var out struct {
		Shards []shardView `json:"shards"`
	}
	if code := c.admin(i, "GET", "/v1/shards", nil, &out); code != 200 {
		c.t.Fatalf("GET /v1/shards: %d", code)
	}
	return out.Shards
}

func (c *testCluster) members(i int) []Member {
	c.t.Helper()
	var out struct {
		Members []Member `json:"members"`
	}
	if code := c.admin(i, "GET", "/v1/members", nil, &out); code != 200 {
		c.t.Fatalf("GET /v1/members: %d", code)
	}
	return out.Members
}

// waitConverged waits until every shard, as GET /v1/shards on node i
// shows it, has a leader and exactly its replicas as voters.
func (c *testCluster) waitConverged(i int, timeout time.Duration) []shardView {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		// Node i's copy of the map may lag the meta leader's.
		if c.nodes[i].cluster.metaFSM.Map().Version < c.metaLeader().cluster.metaFSM.Map().Version {
			if time.Now().After(deadline) {
				c.t.Fatalf("node %d's map lags the meta leader's", i+1)
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		views := c.shardViews(i)
		var why []string
		for _, v := range views {
			if ok, w := v.converged(); !ok {
				why = append(why, fmt.Sprintf("shard %d: %s", v.ID, w))
			}
		}
		if len(why) == 0 {
			return views
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("shards did not converge within %s: %s", timeout, strings.Join(why, "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitOp polls an operation until it is no longer running. lost reports
// that it ended because its node lost the meta leadership and no other
// meta leader carried it on (a heal, which the meta group does not record).
func (c *testCluster) waitOp(i int, id string, timeout time.Duration) (op opJSON, lost bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	unanswered := 0
	for {
		var out struct {
			Operation opJSON `json:"operation"`
			Error     string `json:"error"`
		}
		switch code := c.admin(i, "GET", "/v1/operations/"+id, nil, &out); {
		case code == 200:
			unanswered = 0
			if out.Operation.State != "running" {
				return out.Operation, out.Operation.State == "failed" && strings.Contains(out.Operation.Error, "lost the meta leadership")
			}
		case code == 400 && strings.Contains(out.Error, "unknown operation") || code == 503:
			// A new meta leader does not know the operation.
			if unanswered++; unanswered > 30 {
				c.t.Logf("operation %s is gone: %d %s", id, code, out.Error)
				return opJSON{}, true
			}
		default:
			c.t.Fatalf("GET /v1/operations/%s: %d %s", id, code, out.Error)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("operation %s still running after %s: %+v", id, timeout, out.Operation)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runOp starts an operation with POST path body through node i and waits
// for it to end, starting it again (up to 3 times) if it was lost with
// the meta leadership. check sees the first answer.
func (c *testCluster) runOp(i int, path string, body any, check func(op opJSON)) opJSON {
	c.t.Helper()
	for attempt := 1; ; attempt++ {
		var out struct {
			Operation opJSON `json:"operation"`
			Error     string `json:"error"`
		}
		if code := c.admin(i, "POST", path, body, &out); code != 202 {
			c.t.Fatalf("POST %s: %d %s", path, code, out.Error)
		}
		if attempt == 1 && check != nil {
			check(out.Operation)
		}
		final, lost := c.waitOp(i, out.Operation.ID, 2*time.Minute)
		if !lost {
			return final
		}
		if attempt == 3 {
			c.t.Fatalf("operation lost with the meta leadership 3 times: %+v", final)
		}
		c.t.Logf("operation %s lost with the meta leadership (%s); starting it again", out.Operation.ID, final.Error)
	}
}

func sortedIDs(ids []string) []string { return slices.Sorted(slices.Values(ids)) }

// TestAdminCluster runs the admin API against one 4-node cluster (n4 joins
// after the first three formed it and holds nothing), step by step: the
// read calls, refusals, a leadership transfer, a replica move, a move
// refused while a shard converges, a rebalance and a drain.
func TestAdminCluster(t *testing.T) {
	t.Parallel()
	const shards = 8
	c := newAdminCluster(t, 4, shards)
	other := c.notMetaLeader()

	t.Run("status", func(t *testing.T) {
		deadline := time.Now().Add(10 * time.Second)
		var sts []statusJSON
		for {
			sts = sts[:0]
			settled := true
			for i := range c.nodes {
				var st statusJSON
				if code := c.admin(i, "GET", "/v1/status", nil, &st); code != 200 {
					t.Fatalf("node %d: status %d", i+1, code)
				}
				sts = append(sts, st)
				settled = settled && st.Nodes == 4 && st.Ready && st.MetaLeader != "" && st.MetaLeader == sts[0].MetaLeader
			}
			if settled {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("status did not settle: %+v", sts)
			}
			time.Sleep(100 * time.Millisecond)
		}
		for i, st := range sts {
			if st.NodeID != c.cfgs[i].NodeID || st.Mode != "cluster" || st.ClusterID == "" || st.ClusterID != sts[0].ClusterID ||
				st.MapVersion == 0 || st.Shards != shards || st.Replicas != 3 || st.Operation != nil {
				t.Errorf("node %d: status %+v", i+1, st)
			}
		}
		if sts[0].MetaLeader != c.metaLeader().cfg.NodeID {
			t.Errorf("meta_leader %q, but %s leads the meta group", sts[0].MetaLeader, c.metaLeader().cfg.NodeID)
		}
	})

	t.Run("members", func(t *testing.T) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			ms := c.members(other)
			var ids []string
			replicas, leaders := 0, 0
			for _, m := range ms {
				ids = append(ids, m.ID)
				replicas += m.Replicas
				leaders += m.Leaders
			}
			ok := slices.Equal(ids, []string{"n1", "n2", "n3", "n4"}) && replicas == shards*3 && leaders == shards
			for i, m := range ms {
				ok = ok && m.State == "active" && m.Alive && m.GRPC == c.cfgs[i].GRPCAddr && m.Admin == c.cfgs[i].AdminAddr &&
					m.HTTP == c.cfgs[i].HTTPAddr && m.Gossip != ""
			}
			ok = ok && ms[3].Replicas == 0 && ms[3].Leaders == 0
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("members: %+v", ms)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			led, replicas := 0.0, 0.0
			var perNode []float64
			for i := range c.nodes {
				addr := c.cfgs[i].AdminAddr
				led += metricValue(t, addr, "roost_shards_led")
				r := metricValue(t, addr, "roost_shard_replicas")
				replicas += r
				perNode = append(perNode, r)
				if b := metricValue(t, addr, "roost_store_disk_bytes"); b <= 0 {
					t.Fatalf("node %d: roost_store_disk_bytes %v", i+1, b)
				}
			}
			if led == shards && replicas == shards*3 && perNode[3] == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("roost_shards_led sums to %v and roost_shard_replicas to %v (by node %v), want %d and %d, none on n4", led, replicas, perNode, shards, shards*3)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("shards", func(t *testing.T) {
		views := c.waitConverged(other, 10*time.Second)
		if len(views) != shards {
			t.Fatalf("%d shards, want %d", len(views), shards)
		}
		for i, v := range views {
			if v.ID != i || len(v.Replicas) != 3 || !slices.Contains(v.Replicas, v.Leader) || len(v.Voters) != 3 || v.Version != placement.InitialShardVersion {
				t.Errorf("shard %d: %+v", i, v)
			}
			for _, id := range v.Replicas {
				if lag, ok := v.ReplicaLag[id]; !ok || lag < 0 {
					t.Errorf("shard %d: replica %s lag %d (present %v)", i, id, lag, ok)
				}
			}
			if v.AppliedIndex == 0 {
				t.Errorf("shard %d: applied_index 0", i)
			}
		}
		// Idle, every replica holds the leader's whole log: lag 0. (A
		// follower's applied index may trail by the last entry until the
		// next append tells it the commit, so lag counts log entries.)
		for deadline := time.Now().Add(5 * time.Second); ; {
			var lagging []string
			var raw struct {
				Shards []shardView `json:"shards"`
			}
			c.admin(other, "GET", "/v1/shards", nil, &raw)
			for _, v := range raw.Shards {
				for id, lag := range v.ReplicaLag {
					if lag != 0 {
						lagging = append(lagging, fmt.Sprintf("shard %d %s %d", v.ID, id, lag))
					}
				}
			}
			if len(lagging) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("idle cluster, replicas still lagging: %v", lagging)
			}
			time.Sleep(200 * time.Millisecond)
		}
		// Empty lists are [], not null.
		var raw struct {
			Shards []map[string]any `json:"shards"`
		}
		c.admin(other, "GET", "/v1/shards", nil, &raw)
		for _, s := range raw.Shards {
			if nv, ok := s["nonvoters"].([]any); !ok || len(nv) != 0 {
				t.Errorf("shard %v: nonvoters %#v, want []", s["id"], s["nonvoters"])
			}
		}
		// The leader it names is the one leading the group (leaders move
		// while the balancer spreads them: they must agree once settled).
		deadline := time.Now().Add(10 * time.Second)
		for {
			var wrong []string
			for i, v := range c.shardViews(other) {
				if li := c.leaderOf(groupOf(i)); li < 0 || c.cfgs[li].NodeID != v.Leader {
					wrong = append(wrong, fmt.Sprintf("shard %d: leader %q, but node index %d leads it", i, v.Leader, li))
				}
			}
			if len(wrong) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal(strings.Join(wrong, "; "))
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	m := c.metaLeader().cluster.metaFSM.Map()
	var notN4 []int // shards n4 holds no replica of
	for _, s := range m.ShardMap {
		if !slices.Contains(s.Replicas, "n4") {
			notN4 = append(notN4, int(s.ID))
		}
	}
	if len(notN4) < 2 {
		t.Fatalf("n4 should hold nothing yet: %v", m.ShardMap)
	}
	holder := string(m.ShardMap[0].Replicas[0])

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name, method, path string
			body               any
			want               int
			errHas             string
		}{
			{"move to an unknown node", "POST", "/v1/shards/0/move", `{"to":"n9"}`, 400, "unknown node n9"},
			{"move from an unknown node", "POST", "/v1/shards/0/move", `{"to":"n4","from":"n9"}`, 400, "unknown node n9"},
			{"move to a malformed node id", "POST", "/v1/shards/0/move", `{"to":"N 4"}`, 400, "invalid node id"},
			{"move without a target", "POST", "/v1/shards/0/move", `{}`, 400, "no node given"},
			{"move with an unknown field", "POST", "/v1/shards/0/move", `{"too":"n4"}`, 400, "unknown field"},
			{"move with malformed JSON", "POST", "/v1/shards/0/move", `{"to":`, 400, "malformed JSON"},
			{"move without a body", "POST", "/v1/shards/0/move", nil, 400, "JSON body"},
			{"move of an unknown shard", "POST", "/v1/shards/99/move", `{"to":"n4"}`, 400, "unknown shard 99"},
			{"move of a shard that is not a number", "POST", "/v1/shards/x/move", `{"to":"n4"}`, 400, "not a shard number"},
			{"move of a shard with a leading zero", "POST", "/v1/shards/01/move", `{"to":"n4"}`, 400, "not a shard number"},
			{"move to a replica it has", "POST", "/v1/shards/0/move", fmt.Sprintf(`{"to":%q}`, holder), 409, "already holds"},
			{"move from a node without a replica", "POST", fmt.Sprintf("/v1/shards/%d/move", notN4[0]), `{"to":"n4","from":"n4"}`, 409, "holds no replica"},
			{"remove a node with replicas", "POST", "/v1/nodes/" + holder + "/remove", nil, 409, "drain it first"},
			{"remove an unknown node", "POST", "/v1/nodes/n9/remove", nil, 400, "unknown node n9"},
			{"drain an unknown node", "POST", "/v1/nodes/n9/drain", nil, 400, "unknown node n9"},
			{"transfer to an unknown node", "POST", "/v1/shards/0/transfer-leader", `{"to":"n9"}`, 400, "unknown node n9"},
			{"transfer to a non-voter", "POST", fmt.Sprintf("/v1/shards/%d/transfer-leader", notN4[0]), `{"to":"n4"}`, 409, "not a voter"},
			{"transfer of an unknown shard", "POST", "/v1/shards/8/transfer-leader", `{"to":"n1"}`, 400, "unknown shard 8"},
			{"unknown operation", "GET", "/v1/operations/nope", nil, 400, "unknown operation"},
			{"rebalance with a bad max_concurrent", "POST", "/v1/rebalance", `{"max_concurrent":-1}`, 400, "max_concurrent"},
			{"rebalance with max_concurrent 0", "POST", "/v1/rebalance", `{"max_concurrent":0}`, 400, "max_concurrent"},
			{"drain with max_concurrent 0", "POST", "/v1/nodes/n4/drain", `{"max_concurrent":0}`, 400, "max_concurrent"},
			{"rebalance with a null body", "POST", "/v1/rebalance", `null`, 400, "not null"},
			{"wrong method", "DELETE", "/v1/status", nil, 405, "/v1/status takes GET, HEAD, not DELETE"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for _, i := range []int{other, slices.Index(c.nodes, c.metaLeader())} {
					var e apiErrorJSON
					if code := c.admin(i, tc.method, tc.path, tc.body, &e); code != tc.want || !strings.Contains(e.Error, tc.errHas) {
						t.Errorf("via n%d: %d %q, want %d and an error containing %q", i+1, code, e.Error, tc.want, tc.errHas)
					}
				}
			})
		}
		// A call that claims to have been forwarded maxAdminHops times is
		// not forwarded again (a client may send the header too), and the
		// answer says what the node saw.
		req, _ := http.NewRequest("POST", "http://"+c.cfgs[other].AdminAddr+"/v1/nodes/n4/drain", nil)
		req.Header.Set("Authorization", "Bearer "+testAdminToken)
		req.Header.Set(forwardedHeader, strconv.Itoa(maxAdminHops))
		if resp, err := http.DefaultClient.Do(req); err != nil {
			t.Fatal(err)
		} else {
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := fmt.Sprintf("forwarded %d time(s) already (%s)", maxAdminHops, forwardedHeader); resp.StatusCode != 503 || !strings.Contains(string(raw), want) {
				t.Errorf("drain sent to n%d as forwarded %d times: %d %s, want 503 saying %q", other+1, maxAdminHops, resp.StatusCode, raw, want)
			}
		}
		if after := c.metaLeader().cluster.metaFSM.Map(); after.Version != m.Version {
			t.Errorf("a refused call changed the map: version %d → %d", m.Version, after.Version)
		}
	})

	t.Run("transfer-leader", func(t *testing.T) {
		const shard = 1
		views := c.waitConverged(other, 10*time.Second)
		from := views[shard].Leader
		var to string
		for _, id := range views[shard].Voters {
			if id != from {
				to = id
				break
			}
		}
		// Ask a node that is neither leader nor target: it forwards.
		via := -1
		for i, cfg := range c.cfgs {
			if cfg.NodeID != from && cfg.NodeID != to {
				via = i
				break
			}
		}
		toNode := c.nodes[slices.IndexFunc(c.cfgs, func(cfg Config) bool { return cfg.NodeID == to })]
		toNode.cluster.mu.Lock()
		toRaft := toNode.cluster.groups[shard].group.Raft()
		toNode.cluster.mu.Unlock()
		tookOver := make(chan raft.Observation, 16)
		obs := raft.NewObserver(tookOver, false, func(o *raft.Observation) bool {
			lo, ok := o.Data.(raft.LeaderObservation)
			return ok && string(lo.LeaderID) == to
		})
		toRaft.RegisterObserver(obs)
		defer toRaft.DeregisterObserver(obs)
		var out struct {
			Shard  int    `json:"shard"`
			Leader string `json:"leader"`
			Error  string `json:"error"`
		}
		// 503 means the balancer moved the shard meanwhile and nothing was
		// done: retry, as a client would.
		for attempt := 0; ; attempt++ {
			code := c.admin(via, "POST", fmt.Sprintf("/v1/shards/%d/transfer-leader", shard), map[string]string{"to": to}, &out)
			if code == 200 {
				break
			}
			if code != http.StatusServiceUnavailable || attempt == 5 {
				t.Fatalf("transfer-leader %s → %s: %d %s", from, to, code, out.Error)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if out.Shard != shard || out.Leader != to {
			t.Fatalf("answer %+v, want shard %d leader %s", out, shard, to)
		}
		// The target took over (the leader balancer may move it on
		// later, so watch the target's own Raft rather than look once).
		select {
		case <-tookOver:
		case <-time.After(2 * time.Second):
			t.Fatalf("%s did not become the leader of shard %d", to, shard)
		}
	})

	var planned int
	t.Run("rebalance dry run", func(t *testing.T) {
		var out struct {
			Moves []moveJSON `json:"moves"`
		}
		if code := c.admin(other, "POST", "/v1/rebalance", map[string]any{"dry_run": true}, &out); code != 200 {
			t.Fatalf("dry run: %d", code)
		}
		want := placement.Plan(c.metaLeader().cluster.metaFSM.Map())
		if len(out.Moves) != len(want) {
			t.Fatalf("dry run lists %d moves, the planner %d: %+v", len(out.Moves), len(want), out.Moves)
		}
		for i, mv := range want {
			if got := out.Moves[i]; got.Shard != mv.Shard || got.Add != string(mv.Add) || got.Remove != string(mv.Remove) {
				t.Errorf("move %d: %+v, want %v", i, got, mv)
			}
		}
		// A fourth node takes about a quarter of the replica slots.
		if slots := shards * 3; len(out.Moves) < slots/8 || len(out.Moves) > slots/2 {
			t.Errorf("%d moves of %d replica slots; want about a quarter", len(out.Moves), slots)
		}
		if after := c.metaLeader().cluster.metaFSM.Map(); after.Version != m.Version {
			t.Errorf("a dry run changed the map: version %d → %d", m.Version, after.Version)
		}
		planned = len(out.Moves)
		t.Logf("dry run: %d moves of %d replica slots", planned, shards*3)
	})

	t.Run("move", func(t *testing.T) {
		shard := notN4[0]
		before := c.metaLeader().cluster.metaFSM.Map().ShardMap[shard]
		var out struct {
			Shard   int    `json:"shard"`
			From    string `json:"from"`
			To      string `json:"to"`
			Version uint64 `json:"version"`
			Error   string `json:"error"`
		}
		if code := c.admin(other, "POST", fmt.Sprintf("/v1/shards/%d/move", shard), map[string]string{"to": "n4"}, &out); code != 202 {
			t.Fatalf("move: %d %s", code, out.Error)
		}
		if out.Shard != shard || out.To != "n4" || !slices.Contains(before.Replicas, placement.NodeID(out.From)) || out.Version != before.Version+1 {
			t.Fatalf("move answer %+v (shard before: %+v)", out, before)
		}
		want := sortedIDs(append(slices.DeleteFunc(slices.Clone(toStrings(before.Replicas)), func(s string) bool { return s == out.From }), "n4"))
		views := c.waitConverged(other, 30*time.Second)
		if v := views[shard]; !slices.Equal(v.Voters, want) || !slices.Equal(sortedIDs(v.Replicas), want) {
			t.Fatalf("shard %d after the move: %+v, want voters %v", shard, v, want)
		}
	})

	t.Run("move refused while the shard converges", func(t *testing.T) {
		shard := notN4[1]
		// n4 cannot take part in Raft: its new replica never catches up,
		// so the shard stays half-way (n4 a non-voter).
		c.faults.Isolate(raft.ServerAddress(c.cfgs[3].GRPCAddr))
		defer c.faults.Heal()
		var out struct {
			From  string `json:"from"`
			Error string `json:"error"`
		}
		if code := c.admin(other, "POST", fmt.Sprintf("/v1/shards/%d/move", shard), `{"to":"n4"}`, &out); code != 202 {
			t.Fatalf("first move: %d %s", code, out.Error)
		}
		// The map's replicas now include n4; the one node without a
		// replica is the one that was dropped.
		var e apiErrorJSON
		deadline := time.Now().Add(5 * time.Second)
		for {
			code := c.admin(other, "POST", fmt.Sprintf("/v1/shards/%d/move", shard), map[string]string{"to": out.From}, &e)
			if code == 409 && strings.Contains(e.Error, "still converging") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("second move while n4 cannot catch up: %d %q, want 409 still converging", code, e.Error)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("refused: %s", e.Error)
		// The dropped replica is still a voter of the group, alive: it
		// answers, and its lag shows, rather than -1 (it was not asked,
		// being out of the map). n4, cut off, does not answer.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			var raw struct {
				Shards []shardView `json:"shards"`
			}
			c.admin(other, "GET", "/v1/shards", nil, &raw)
			v := raw.Shards[shard]
			lag, ok := v.ReplicaLag[out.From]
			if ok && lag >= 0 && slices.Contains(v.Voters, out.From) && v.ReplicaLag["n4"] == -1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("shard %d with %s dropped from the map but a voter: voters %v, lag %v; want %s's lag, and n4 -1", shard, out.From, v.Voters, v.ReplicaLag, out.From)
			}
		}
		c.faults.Heal()
		c.waitConverged(other, 30*time.Second)
	})

	// The rebalance is carried on by a new meta leader: the meta group
	// records it, and the meta leadership moves while it runs.
	var rebalancedBy *Node // the meta leader that finished the rebalance
	t.Run("rebalance", func(t *testing.T) {
		var started struct {
			Operation opJSON `json:"operation"`
			Error     string `json:"error"`
		}
		if code := c.admin(other, "POST", "/v1/rebalance", map[string]any{"max_concurrent": 2}, &started); code != 202 {
			t.Fatalf("POST /v1/rebalance: %d %s", code, started.Error)
		}
		op := started.Operation
		if op.Kind != "rebalance" || op.ID == "" || op.Total == 0 || op.State != "running" {
			t.Fatalf("operation %+v", op)
		}
		// A second operation is refused while this one runs.
		var e apiErrorJSON
		if code := c.admin(other, "POST", "/v1/nodes/n1/drain", nil, &e); code != 409 || !strings.Contains(e.Error, "roost operation "+op.ID+" --wait") {
			t.Errorf("second operation: %d %q, want 409 saying how to wait for %s", code, e.Error, op.ID)
		}
		var st statusJSON
		if c.admin(other, "GET", "/v1/status", nil, &st); st.Operation == nil || st.Operation.ID != op.ID {
			t.Errorf("status while rebalancing shows operation %+v", st.Operation)
		}
		oldLeader := c.metaLeader()
		if rec, ok := oldLeader.cluster.metaFSM.Operation(); !ok || rec.ID != op.ID || rec.MaxConcurrent != 2 || rec.Planned != op.Total {
			t.Fatalf("the meta group records %+v (%v), want %s with %d moves planned", rec, ok, op.ID, op.Total)
		}
		if err := oldLeader.cluster.metaRaft().LeadershipTransfer().Error(); err != nil {
			t.Fatalf("moving the meta leadership off %s: %v", oldLeader.cfg.NodeID, err)
		}
		final, lost := c.waitOp(other, op.ID, 2*time.Minute)
		if lost {
			t.Fatalf("the rebalance was lost with the meta leadership: %+v", final)
		}
		newLeader := c.metaLeader()
		if newLeader == oldLeader {
			t.Fatalf("the meta leadership is still on %s", oldLeader.cfg.NodeID)
		}
		rebalancedBy = newLeader
		if rec, ok := newLeader.cluster.metaFSM.Operation(); ok {
			t.Errorf("the meta group still records %+v after the rebalance ended", rec)
		}
		if final.ID != op.ID || final.State != "done" || final.Done != final.Total || final.Total == 0 || final.Error != "" ||
			final.ETASeconds == nil || *final.ETASeconds != 0 {
			t.Fatalf("rebalance ended as %+v", final)
		}
		// A later meta leader, which did not finish it (and may have lost
		// it), answers how it ended from the meta group's record.
		if err := newLeader.cluster.metaRaft().LeadershipTransfer().Error(); err != nil {
			t.Fatalf("moving the meta leadership off %s: %v", newLeader.cfg.NodeID, err)
		}
		var again struct {
			Operation opJSON `json:"operation"`
			Error     string `json:"error"`
		}
		if code := c.admin(other, "GET", "/v1/operations/"+op.ID, nil, &again); code != 200 ||
			again.Operation.State != "done" || again.Operation.Done != final.Done || again.Operation.Kind != "rebalance" {
			t.Errorf("after another meta leader change (to %s): %d %+v %s, want done with %d moves",
				c.metaLeader().cfg.NodeID, code, again.Operation, again.Error, final.Done)
		}
		t.Logf("rebalance: %d moves in %s, carried on by %s", final.Total, time.Since(final.Started).Round(time.Millisecond), newLeader.cfg.NodeID)
		var dry struct {
			Moves []moveJSON `json:"moves"`
		}
		if c.admin(other, "POST", "/v1/rebalance", `{"dry_run":true}`, &dry); len(dry.Moves) != 0 {
			t.Errorf("after the rebalance the plan still has %d moves: %+v", len(dry.Moves), dry.Moves)
		}
		views := c.waitConverged(other, 30*time.Second)
		desired := placement.Desired(c.metaLeader().cluster.metaFSM.Map())
		for _, v := range views {
			if want := sortedIDs(toStrings(desired[placement.ShardID(v.ID)])); !slices.Equal(v.Voters, want) {
				t.Errorf("shard %d: voters %v, want %v", v.ID, v.Voters, want)
			}
		}
		if n4 := c.members(other)[3]; n4.Replicas == 0 {
			t.Errorf("n4 holds nothing after the rebalance: %+v", n4)
		}
		if st := c.metaLeader().cluster.metaFSM.Map(); st.Version == m.Version {
			t.Error("the map did not change")
		}
	})

	t.Run("drain and remove", func(t *testing.T) {
		const victim = "n2"
		// A meta leader lists the operations it ran and the last that
		// ended: the drain runs on one that ran the rebalance, which
		// the list below shows before it. Which node leads after the
		// rebalance's two leadership moves depends on which led first.
		if l := c.metaLeader(); rebalancedBy != nil && l != rebalancedBy {
			if err := l.cluster.metaRaft().LeadershipTransferToServer(raft.ServerID(rebalancedBy.cfg.NodeID), raft.ServerAddress(rebalancedBy.cluster.advGRPC)).Error(); err != nil {
				t.Fatalf("moving the meta leadership to %s: %v", rebalancedBy.cfg.NodeID, err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for c.metaLeader() != rebalancedBy {
				if time.Now().After(deadline) {
					t.Fatalf("the meta leadership did not move to %s", rebalancedBy.cfg.NodeID)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		held := len(c.metaLeader().cluster.metaFSM.Map().ShardsOf(victim))
		if held == 0 {
			t.Fatalf("%s holds nothing to drain", victim)
		}
		final := c.runOp(other, "/v1/nodes/"+victim+"/drain", `{"max_concurrent":3}`, func(op opJSON) {
			if op.Kind != "drain" || op.Total != held {
				t.Fatalf("drain operation %+v, want total %d", op, held)
			}
		})
		if final.State != "done" || final.Done != final.Total || final.Total == 0 {
			t.Fatalf("drain ended as %+v (held %d)", final, held)
		}
		if left := c.metaLeader().cluster.metaFSM.Map().ShardsOf(victim); len(left) > 0 {
			t.Fatalf("%s still holds shards %v after the drain", victim, left)
		}
		// The list of operations, newest first: the drain, then the
		// rebalance before it.
		var list struct {
			Operations []opJSON `json:"operations"`
		}
		if code := c.admin(other, "GET", "/v1/operations", nil, &list); code != 200 || len(list.Operations) < 2 {
			t.Fatalf("GET /v1/operations: %d %+v", code, list)
		}
		if first := list.Operations[0]; first.ID != final.ID || first.State != "done" || first.Kind != "drain" || first.Node != victim {
			t.Errorf("newest operation %+v, want the drain %s of %s, done", first, final.ID, victim)
		}
		if !slices.ContainsFunc(list.Operations[1:], func(o opJSON) bool { return o.Kind == "rebalance" }) {
			t.Errorf("operations %+v lack the rebalance before the drain", list.Operations)
		}
		views := c.waitConverged(other, 30*time.Second)
		for _, v := range views {
			if slices.Contains(v.Voters, victim) || slices.Contains(v.Replicas, victim) || len(v.Voters) != 3 {
				t.Errorf("shard %d after draining %s: %+v", v.ID, victim, v)
			}
		}
		for _, mem := range c.members(other) {
			if mem.ID == victim && (mem.State != "draining" || mem.Replicas != 0 || mem.Leaders != 0) {
				t.Errorf("drained member %+v", mem)
			}
		}
		var rm struct {
			ID    string `json:"id"`
			State string `json:"state"`
		}
		for range 2 { // removing twice answers the same
			if code := c.admin(other, "POST", "/v1/nodes/"+victim+"/remove", nil, &rm); code != 200 || rm.ID != victim || rm.State != "removed" {
				t.Fatalf("remove: %d %+v", code, rm)
			}
		}
		for _, mem := range c.members(other) {
			if mem.ID == victim && mem.State != "removed" {
				t.Errorf("removed member %+v", mem)
			}
		}
		// It leaves the meta group too, a voter replaced by a non-voter
		// (unless it leads the group: it is the one to stop it then).
		if leader := c.metaLeader(); leader.cfg.NodeID != victim {
			deadline := time.Now().Add(20 * time.Second)
			for {
				var in bool
				voters := 0
				for _, s := range leader.cluster.meta.Raft().GetConfiguration().Configuration().Servers {
					in = in || s.ID == victim
					if s.Suffrage == raft.Voter {
						voters++
					}
				}
				if !in && voters >= 3 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("meta group after removing %s: still in it %v, %d voters", victim, in, voters)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		var e apiErrorJSON
		if code := c.admin(other, "POST", "/v1/nodes/"+victim+"/drain", nil, &e); code != 409 {
			t.Errorf("draining a removed node: %d %q, want 409", code, e.Error)
		}

		// The removed node is not ready, and says why; started again with
		// its data dir, it does not wait for a map that never comes.
		vi := c.nodeIndex(victim)
		waitRemovedReason := func(what string) {
			t.Helper()
			deadline := time.Now().Add(3*removalCheckInterval + metaSilenceBeforeAsking)
			for {
				ok, why := c.nodes[vi].cluster.ready()
				if !ok && strings.Contains(why, "was removed from cluster") {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: ready %v %q, want not ready as removed", what, ok, why)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		waitRemovedReason("the removed node")
		// Out of the meta group (not told so: it stops hearing from
		// the meta leader), it is told to stop.
		for deadline := time.Now().Add(removedVoterContact + 10*time.Second); c.metaLeader().cfg.NodeID != victim; time.Sleep(200 * time.Millisecond) {
			_, why := c.nodes[vi].cluster.ready()
			if strings.HasSuffix(why, "; stop it") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the removed node, out of the meta group, says %q: want it told to stop", why)
			}
		}
		c.stop(vi)
		// Started again with its data dir, it refuses at once, before it
		// joins gossip or serves anything.
		again, err := New(c.cfgs[vi], c.app)
		if err != nil {
			t.Fatal(err)
		}
		err = again.Start(context.Background())
		if err == nil {
			c.nodes[vi] = again // closed by the cluster's cleanup
			t.Fatal("the removed node started again with its data dir")
		}
		if !errors.Is(err, placement.ErrNodeRemoved) || !strings.Contains(err.Error(), "new --id") {
			t.Fatalf("the removed node started again failed with %v, want ErrNodeRemoved saying to use a new id", err)
		}
		// Stopped, it is not shown reachable: no group links it to the
		// others' transports any more, which have no record of it.
		c.waitMetaLeaderSees(false, vi)
		for i, nd := range c.nodes {
			if i == vi || nd == nil {
				continue
			}
			var ms struct{ Members []Member }
			if code := c.admin(i, "GET", "/v1/members", nil, &ms); code != 200 {
				t.Fatalf("members from %s: %d", c.cfgs[i].NodeID, code)
			}
			for _, mem := range ms.Members {
				if mem.ID == victim && mem.Reachable {
					t.Errorf("members from %s shows the stopped, removed %s reachable (alive %v)", c.cfgs[i].NodeID, victim, mem.Alive)
				}
			}
		}
	})
}

// Handing a shard's leadership to a voter that is down is refused at
// once with the reason, not tried and failed with raft's error.
func TestTransferLeaderToADownVoter(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 2, &turnRegistry{active: map[string]string{}})
	views := c.waitConverged(0, 30*time.Second)
	down := 2
	if views[0].Leader == c.cfgs[down].NodeID {
		down = 1
	}
	c.stop(down)
	var e apiErrorJSON
	code := c.admin(0, "POST", "/v1/shards/0/transfer-leader", map[string]string{"to": c.cfgs[down].NodeID}, &e)
	if code != http.StatusConflict || !strings.Contains(e.Error, "down or unreachable") {
		t.Fatalf("transfer to the stopped %s: %d %q, want 409 saying it is down", c.cfgs[down].NodeID, code, e.Error)
	}
	// The voter it suggests instead is the one that is neither down nor
	// the leader (before, the list named every voter, those two too).
	other := placement.NodeID(c.cfgs[3-down].NodeID)
	if views[0].Leader == string(other) {
		other = placement.NodeID(c.cfgs[0].NodeID)
	}
	if want := "pick another voter (" + string(other) + ")"; !strings.Contains(e.Error, want) {
		t.Fatalf("transfer to the stopped %s with %s leading: %q, want it to say %q", c.cfgs[down].NodeID, views[0].Leader, e.Error, want)
	}
}

// Status names no meta leader once the meta leader cannot reach a quorum
// of its voters: raft keeps it leader for its lease (10 s), and status
// named it all that while.
func TestStatusNamesNoMetaLeaderWithoutQuorum(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 2, &turnRegistry{active: map[string]string{}})
	c.waitMetaVoters(3, 60*time.Second)
	li := c.nodeIndex(placement.NodeID(c.metaLeader().cfg.NodeID))
	var st statusJSON
	if code := c.admin(li, "GET", "/v1/status", nil, &st); code != 200 || st.MetaLeader != c.cfgs[li].NodeID || st.Unreachable == nil || len(st.Unreachable) > 0 {
		t.Fatalf("status of the meta leader: %d %+v; want it named, and no node unreachable", code, st)
	}
	stopped := time.Now()
	var others []string
	for i := range 3 {
		if i != li {
			c.stop(i)
			others = append(others, c.cfgs[i].NodeID)
		}
	}
	for deadline := stopped.Add(8 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st = statusJSON{}
		if code := c.admin(li, "GET", "/v1/status", nil, &st); code == 200 && st.MetaLeader == "" && slices.Equal(st.Unreachable, others) {
			t.Logf("no meta leader, and %v unreachable, shown %s after the others stopped", st.Unreachable, time.Since(stopped).Round(100*time.Millisecond))
			var ms struct{ Members []Member }
			if code := c.admin(li, "GET", "/v1/members", nil, &ms); code != 200 || len(ms.Members) != 3 {
				t.Fatalf("members: %d %+v", code, ms)
			}
			for _, mem := range ms.Members {
				if want := mem.ID == c.cfgs[li].NodeID; mem.Reachable != want {
					t.Errorf("members shows %s reachable=%v from %s; want %v", mem.ID, mem.Reachable, c.cfgs[li].NodeID, want)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("8 s after %v stopped, status names meta leader %q and unreachable nodes %v", others, st.MetaLeader, st.Unreachable)
		}
	}
}

// A transfer of a shard that has lost its quorum says so, naming the
// replicas down, rather than "retry once it has elected one", which it
// cannot do.
func TestTransferLeaderOfAShardWithoutQuorum(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 2, &turnRegistry{active: map[string]string{}})
	c.waitConverged(0, 30*time.Second)
	c.stop(1)
	c.stop(2)
	// Until gossip sees them gone and raft steps the cut-off leader
	// down (its lease), the shard still has a leader here.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		seen := c.nodes[0].cluster.aliveIDs()
		c.nodes[0].cluster.mu.Lock()
		ls := c.nodes[0].cluster.groups[0]
		c.nodes[0].cluster.mu.Unlock()
		if !seen[placement.NodeID(c.cfgs[1].NodeID)] && !seen[placement.NodeID(c.cfgs[2].NodeID)] && (ls == nil || ls.group.Raft().State() != raft.Leader) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("after 30 s n1 still sees a stopped node alive, or leads shard 0")
		}
	}
	var e apiErrorJSON
	code := c.admin(0, "POST", "/v1/shards/0/transfer-leader", map[string]string{"to": c.cfgs[1].NodeID}, &e)
	if code != http.StatusServiceUnavailable || !strings.Contains(e.Error, "cannot elect one: it has lost its quorum: 2 of its 3 replicas are down or cannot be reached from this node") {
		t.Fatalf("transfer of a shard without quorum: %d %q, want 503 saying it lost its quorum", code, e.Error)
	}
}

// A malformed call is 400 whether or not there is a meta leader (or a
// shard leader) to carry it out: on a node whose cluster has not formed,
// it was 503 "retry", which could never succeed.
func TestAdminRefusesMalformedCallsWithoutALeader(t *testing.T) {
	cfg := DefaultClusterConfig("n1") // expects 3 nodes, and is alone
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr, cfg.AdminAddr, cfg.GRPCAddr, cfg.GossipAddr = freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	cfg.Shards, cfg.Logger = 4, quietLogger
	n, err := New(cfg, clusterApp(&turnRegistry{active: map[string]string{}}))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer closeNode(t, n)
	for _, tc := range []struct{ path, body, want string }{
		{"/v1/rebalance", `{"max_concurrent":0}`, "max_concurrent must be between 1 and 64"},
		{"/v1/rebalance", `{"bogus":true}`, `unknown field "bogus" (this call takes dry_run, max_concurrent, spelt exactly so)`},
		{"/v1/shards/1/move", `{"x":1}`, `unknown field "x" (this call takes to, from, spelt exactly so)`},
		{"/v1/nodes/N1!/drain", "", "invalid node id"},
		{"/v1/nodes/n2/drain", `{"dry_run":true}`, "drain has no dry run"},
		{"/v1/nodes/N1!/remove", "", "invalid node id"},
		{"/v1/shards/x/move", `{"to":"n2"}`, `shard "x": not a shard number`},
		{"/v1/shards/1/move", `{}`, "to: no node given"},
		{"/v1/shards/1/transfer-leader", `{"to":"N2!"}`, "invalid node id"},
	} {
		var body any
		if tc.body != "" {
			body = tc.body
		}
		var e apiErrorJSON
		if code := adminDo(t, cfg.AdminAddr, "", "POST", tc.path, body, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, tc.want) {
			t.Errorf("POST %s %s: %d %q, want 400 with %q", tc.path, tc.body, code, e.Error, tc.want)
		}
	}
	// A well-formed call still waits for the cluster.
	var e apiErrorJSON
	if code := adminDo(t, cfg.AdminAddr, "", "POST", "/v1/rebalance", `{"max_concurrent":2}`, &e); code != http.StatusServiceUnavailable {
		t.Errorf("a well-formed rebalance before the cluster formed: %d %q, want 503", code, e.Error)
	}
	// So does a request to an object, and the 503 says that it is this
	// node that cannot route yet, not that no node serves the shard.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, body, err := getBody(ctx, "http://"+cfg.HTTPAddr+"/increment?ns=COUNTER&name=a")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "this node cannot route requests yet") || strings.Contains(body, "no node serves") {
		t.Errorf("an increment before the cluster formed: %d %q %v", code, body, err)
	}
}

func toStrings(ids []placement.NodeID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = string(id)
	}
	return out
}

func TestMoveRefusal(t *testing.T) {
	ids := func(s ...string) []placement.NodeID {
		out := make([]placement.NodeID, len(s))
		for i, x := range s {
			out[i] = placement.NodeID(x)
		}
		return out
	}
	view := func(leader string, voters, nonvoters []string, answered ...string) shardView {
		v := shardView{ID: 7, Leader: leader, Replicas: voters, Voters: sortedIDs(voters), Nonvoters: nonvoters, answered: map[placement.NodeID]bool{}}
		for _, a := range answered {
			v.answered[placement.NodeID(a)] = true
		}
		return v
	}
	three := []string{"n1", "n2", "n3"}
	five := []string{"n1", "n2", "n3", "n5", "n6"}
	for _, tc := range []struct {
		name    string
		view    shardView
		cur     []placement.NodeID
		from    string
		toAlive bool
		errHas  string // "" = allowed
	}{
		{"healthy", view("n1", three, nil, "n1", "n2", "n3"), ids(three...), "n1", true, ""},
		{"one kept replica down", view("n1", three, nil, "n1", "n2"), ids(three...), "n1", true, ""},
		{"no leader", view("", three, nil, "n1", "n2", "n3"), ids(three...), "n1", true, "no leader"},
		{"converging: a non-voter", view("n1", three, []string{"n4"}, "n1", "n2", "n3"), ids(three...), "n1", true, "still converging"},
		{"converging: voters differ from the map", func() shardView {
			v := view("n1", three, nil, "n1", "n2", "n3")
			v.Voters = []string{"n1", "n2", "n3", "n4"}
			return v
		}(), ids(three...), "n1", true, "still converging"},
		{"target dead", view("n1", three, nil, "n1", "n2", "n3"), ids(three...), "n1", false, "not alive"},
		{"every kept replica down", view("n1", three, nil, "n1"), ids(three...), "n1", true, "moving shard 7 from n1 would leave it without a quorum"},
		{"five, two kept down", view("n1", five, nil, "n1", "n2", "n3"), ids(five...), "n1", true, ""},
		{"five, three kept down", view("n1", five, nil, "n1", "n2"), ids(five...), "n1", true, "without a quorum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := moveRefusal(tc.view, tc.cur, placement.NodeID(tc.from), "n4", tc.toAlive)
			switch {
			case tc.errHas == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)):
				t.Fatalf("got %v, want an error containing %q", err, tc.errHas)
			case err != nil && err.(*apiError).code != http.StatusConflict:
				t.Fatalf("code %d, want 409", err.(*apiError).code)
			}
		})
	}
}

func TestPlannerDrops(t *testing.T) {
	nodes := []placement.Node{}
	for _, id := range []string{"a", "b", "c", "d"} {
		nodes = append(nodes, placement.Node{ID: placement.NodeID(id), GRPCAddr: "127.0.0.1:1"})
	}
	m := placement.InitialMap("x", nodes, 8, 3)
	desired := placement.Desired(m)
	for _, tc := range []struct {
		name  string
		setup func(m *placement.Map, s *placement.Shard)
		want  func(s placement.Shard) placement.NodeID
	}{
		{"all wanted: the farthest on the ring", func(*placement.Map, *placement.Shard) {},
			func(s placement.Shard) placement.NodeID { w := desired[s.ID]; return w[len(w)-1] }},
		{"a draining replica first", func(m *placement.Map, s *placement.Shard) {
			n := m.Nodes[s.Replicas[0]]
			n.State = placement.NodeDraining
			m.Nodes[n.ID] = n
		}, func(s placement.Shard) placement.NodeID { return s.Replicas[0] }},
		{"an unwanted replica first", func(m *placement.Map, s *placement.Shard) {
			for _, id := range []placement.NodeID{"a", "b", "c", "d"} {
				if !slices.Contains(s.Replicas, id) {
					s.Replicas[1] = id
					return
				}
			}
		}, func(s placement.Shard) placement.NodeID { return s.Replicas[1] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mm := m.Clone()
			s := mm.ShardMap[3]
			tc.setup(&mm, &s)
			if got, want := plannerDrops(mm, s), tc.want(s); got != want {
				t.Fatalf("drops %s, want %s (replicas %v, desired %v)", got, want, s.Replicas, placement.Desired(mm)[s.ID])
			}
		})
	}
}

func TestOperationJSON(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name              string
		op                *operation
		wantETA           int // -1: null
		wantTotal, wantDn int
	}{
		{"nothing done yet: no estimate", &operation{state: "running", total: 4, started: now.Add(-10 * time.Second)}, -1, 4, 0},
		{"half done", &operation{state: "running", total: 4, done: 2, started: now.Add(-10 * time.Second), since: now.Add(-10 * time.Second)}, 10, 4, 2},
		// Carried on by a new meta leader 4 s ago: its moves count from then.
		{"half done since carried on", &operation{state: "running", total: 4, done: 2, started: now.Add(-60 * time.Second), since: now.Add(-4 * time.Second)}, 4, 4, 2},
		// Carried on 4 s ago with 6 of 10 moves made before: 2 made since,
		// 2 s each, 2 left.
		{"carried on after moves made before", &operation{state: "running", total: 10, done: 8, doneBefore: 6, started: now.Add(-60 * time.Second), since: now.Add(-4 * time.Second)}, 4, 10, 8},
		{"carried on, nothing done since: no estimate", &operation{state: "running", total: 10, done: 6, doneBefore: 6, started: now.Add(-60 * time.Second), since: now.Add(-4 * time.Second)}, -1, 10, 6},
		{"done", &operation{state: "done", total: 4, done: 4, started: now.Add(-10 * time.Second)}, 0, 4, 4},
		{"failed", &operation{state: "failed", total: 4, done: 1, err: "x", started: now}, 0, 4, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := tc.op.json()
			switch {
			case tc.wantETA < 0 && j.ETASeconds != nil:
				t.Fatalf("eta %d, want null", *j.ETASeconds)
			case tc.wantETA >= 0 && (j.ETASeconds == nil || *j.ETASeconds < tc.wantETA || *j.ETASeconds > tc.wantETA+1):
				t.Fatalf("eta %v, want %d", j.ETASeconds, tc.wantETA)
			case j.Total != tc.wantTotal || j.Done != tc.wantDn || j.State != tc.op.state:
				t.Fatalf("%+v", j)
			}
		})
	}
	// Every form an operation takes in the API lists what it waits for as
	// an array, [] when nothing.
	ended := placement.EndedOperation{Operation: placement.Operation{ID: "op-1", Kind: placement.OperationDrain}}
	ended.State, ended.Done = "done", 3
	for name, j := range map[string]*opJSON{
		"ended, from the meta group": endedOpJSON(ended),
		"ended, from this node":      (&operation{state: "done"}).json(),
		"running":                    (&operation{state: "running"}).json(),
	} {
		raw, err := json.Marshal(j)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), `"waiting":[]`) || !strings.Contains(string(raw), `"eta_seconds":`) {
			t.Errorf("%s: %s, want waiting [] and an eta", name, raw)
		}
	}
	// How the meta group saw an operation end wins over a node's account
	// once it is not running there.
	lost := (&operation{id: "op-1", state: "failed", err: "lost the meta leadership"}).json()
	if got := shownOp(lost, placement.EndedOperation{Operation: placement.Operation{ID: "op-1"}, OperationOutcome: placement.OperationOutcome{State: "done", Done: 3}}, true); got.State != "done" || got.Done != 3 {
		t.Errorf("shownOp of a lost operation the meta group saw done: %+v", got)
	}
	running := (&operation{id: "op-1", state: "running"}).json()
	if got := shownOp(running, ended, true); got != running {
		t.Errorf("shownOp of a running operation: %+v", got)
	}
	// finish makes the total what was done (the plan may shrink meanwhile).
	op := &operation{state: "running", total: 5, done: 3}
	op.finish(nil)
	if j := op.json(); j.State != "done" || j.Total != 3 {
		t.Fatalf("finished: %+v", j)
	}
}

// Removing the node that leads the meta group as its only voter: it
// promotes the other node and hands the leadership over, and the cluster
// keeps a meta leader. Before, it kept leading until stopped, and then
// no node could lead the meta group.
func TestRemovingTheLoneMetaVoter(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 2, 2, &turnRegistry{active: map[string]string{}}, func(cfg *Config) {
		cfg.BootstrapExpect, cfg.Replicas = 1, 1
	})
	if op := c.runOp(1, "/v1/nodes/n1/drain", nil, nil); op.State != "done" {
		t.Fatalf("drain of n1: %+v", op)
	}
	var rm struct {
		State string `json:"state"`
	}
	if code := c.admin(1, "POST", "/v1/nodes/n1/remove", nil, &rm); code != 200 || rm.State != "removed" {
		t.Fatalf("remove n1: %d %+v", code, rm)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		n2 := c.nodes[1].cluster.meta.Raft()
		inConfig := false
		for _, s := range n2.GetConfiguration().Configuration().Servers {
			inConfig = inConfig || s.ID == "n1"
		}
		if n2.State() == raft.Leader && !inConfig {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n2 meta state %v, n1 still in the meta group: %v", n2.State(), inConfig)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.stop(0)
	var st struct {
		MetaLeader string `json:"meta_leader"`
	}
	if code := c.admin(1, "GET", "/v1/status", nil, &st); code != 200 || st.MetaLeader != "n2" {
		t.Fatalf("status after n1 stopped: %d %+v", code, st)
	}
}

// doWant sends req and fails the test unless the answer has status want;
// it returns the answer and its body, read whole.
func doWant(t *testing.T, req *http.Request, want int) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, want, raw)
	}
	return resp, raw
}

// An error that names an operation the call may have started all the same
// (the meta leadership moved while it was recorded) says its ID in the
// answer, for the CLI's --wait to follow; other errors have no such field.
func TestAPIErrorNamesAnOperationThatMayRun(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&apiError{code: 503, msg: "may have been recorded", operation: "drain-1"}, `{"error":"may have been recorded","operation":"drain-1"}`},
		{errorf(503, "no leader"), `{"error":"no leader"}`},
	} {
		rec := httptest.NewRecorder()
		writeAPIError(rec, tc.err)
		if got := strings.TrimSpace(rec.Body.String()); rec.Code != 503 || got != tc.want {
			t.Errorf("%v: %d %s, want 503 %s", tc.err, rec.Code, got, tc.want)
		}
	}
}

// Status counts the shards left with fewer replicas than the cluster
// keeps: a drain of one node of three leaves every shard with two. Before,
// status said "replicas 3" and nothing else showed the shortfall.
func TestStatusCountsUnderReplicatedShards(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 2, &turnRegistry{active: map[string]string{}})
	c.waitConverged(0, 30*time.Second)
	var st statusJSON
	if code := c.admin(0, "GET", "/v1/status", nil, &st); code != 200 || st.Replicas != 3 || st.UnderReplicated != 0 {
		t.Fatalf("status of a whole cluster: %d, replicas %d, under-replicated %d; want 3 and 0", code, st.Replicas, st.UnderReplicated)
	}
	if op := c.runOp(0, "/v1/nodes/n3/drain", map[string]any{}, nil); op.State != "done" {
		t.Fatalf("drain of n3: %s %q", op.State, op.Error)
	}
	st = statusJSON{}
	if code := c.admin(0, "GET", "/v1/status", nil, &st); code != 200 || st.Replicas != 3 || st.UnderReplicated != 2 {
		t.Fatalf("status with n3 drained: %d, replicas %d, under-replicated %d; want 3 and 2", code, st.Replicas, st.UnderReplicated)
	}
}

// A call forwarded to the meta leader, whose admin token differs from the
// token of the node that took the call, fails with a 502 that says the
// nodes' tokens differ. Before, the leader's 401 came back as it was, and
// the caller was told its token (which its node had accepted) was wrong.
func TestForwardedCallRefusedForAnotherNodesToken(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 2, &turnRegistry{active: map[string]string{}}, func(cfg *Config) { cfg.AdminToken = testAdminToken })
	c.waitMetaVoters(3, 60*time.Second)
	entry := c.notMetaLeader()
	const other = "another-admin-token-for-one-node"
	c.stop(entry)
	c.cfgs[entry].AdminToken = other
	c.start(entry)
	c.waitReady()
	if c.metaLeader() == c.nodes[entry] {
		t.Skip("the meta leadership moved to the restarted node; nothing to forward")
	}
	var e struct {
		Error string `json:"error"`
	}
	code := adminDo(t, c.cfgs[entry].AdminAddr, other, "POST", "/v1/rebalance", map[string]any{"dry_run": true}, &e)
	if code != http.StatusBadGateway || !strings.Contains(e.Error, "every node of a cluster needs the same admin token") {
		t.Fatalf("a call forwarded to a meta leader with another token: %d %q; want 502 saying the tokens differ", code, e.Error)
	}
}

// GET /v1/objects/{binding} says where an object lives: its shard, the
// shard's replicas and leader, from any node, asked by name or by ID; bad
// questions are 400 or 404 and name what is wrong.
func TestAdminLocatesAnObject(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 4, &turnRegistry{active: map[string]string{}})
	c.waitConverged(0, 30*time.Second)
	ns, other := namespaceOf(t, c.nodes[0], "COUNTER"), namespaceOf(t, c.nodes[0], "PINGPONG")
	for _, name := range []string{"A", "B", "attic"} {
		id := ns.IDFromName(name)
		shard := shardOf(id.Bytes(), 4)
		leader := c.cfgs[c.waitLeaderOf(t, groupOf(shard))].NodeID
		for i, q := range []string{"name=" + name, "id=" + id.String()} {
			var loc objectLocation
			if code := c.admin(i, "GET", "/v1/objects/COUNTER?"+q, nil, &loc); code != 200 || loc.ID != id.String() || loc.Shard != shard || loc.Leader != leader || len(loc.Replicas) != 3 || loc.Class != "Counter" {
				t.Errorf("locate %s from %s: %d %+v; want shard %d led by %s", q, c.cfgs[i].NodeID, code, loc, shard, leader)
			}
		}
	}
	for _, tc := range []struct {
		query string
		code  int
		want  string
	}{
		{"/v1/objects/NOPE?name=A", 404, "NOPE"},
		{"/v1/objects/COUNTER", 400, "one of the two"},
		{"/v1/objects/COUNTER?name=A&id=" + ns.IDFromName("A").String(), 400, "one of the two"},
		{"/v1/objects/COUNTER?id=zz", 400, "invalid"},
		{"/v1/objects/COUNTER?id=" + other.IDFromName("A").String(), 400, "namespace"},
	} {
		var e apiErrorJSON
		if code := c.admin(0, "GET", tc.query, nil, &e); code != tc.code || !strings.Contains(e.Error, tc.want) {
			t.Errorf("GET %s: %d %q, want %d with %q", tc.query, code, e.Error, tc.code, tc.want)
		}
	}
}

// roost dev answers where an object lives too: every object is on one of
// its shards, led by its single node.
func TestAdminLocatesAnObjectInDevMode(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	id := namespaceOf(t, n, "COUNTER").IDFromName("A")
	var loc objectLocation
	if code := adminDo(t, n.AdminAddr().String(), "", "GET", "/v1/objects/COUNTER?name=A", nil, &loc); code != 200 || loc.ID != id.String() || loc.Shard != shardOf(id.Bytes(), n.cfg.Shards) || loc.Leader != "dev" {
		t.Fatalf("locate in dev mode: %d %+v; want shard %d led by dev", code, loc, shardOf(id.Bytes(), n.cfg.Shards))
	}
}

// metricValue scrapes the admin listener at addr and returns the value of
// the unlabelled series name.
func metricValue(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %q", name, line)
			}
			return f
		}
	}
	t.Fatalf("/metrics of %s has no %s", addr, name)
	return 0
}

// A dev node leads every shard of its own, and reports so with its store's size.
func TestMetricsOfADevNode(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	defer closeNode(t, n)
	addr := n.AdminAddr().String()
	for name, want := range map[string]float64{"roost_shards_led": 4, "roost_shard_replicas": 4} {
		if got := metricValue(t, addr, name); got != want {
			t.Errorf("%s %v, want %v", name, got, want)
		}
	}
	if b := metricValue(t, addr, "roost_store_disk_bytes"); b <= 0 {
		t.Errorf("roost_store_disk_bytes %v", b)
	}
}

// TestRestartedMemberAloneNamesItsCluster: a member restarted while the
// others are down has no cluster map until its meta group's leader is
// back, but it knows its cluster: /v1/status names it, and the calls that
// need the map say the node cannot reach its cluster, not that no cluster
// has formed.
func TestRestartedMemberAloneNamesItsCluster(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 4, nil)
	c.waitReady()
	var st statusJSON
	if code := c.admin(0, "GET", "/v1/status", nil, &st); code != 200 || st.ClusterID == "" {
		t.Fatalf("status: %d %+v", code, st)
	}
	cluster := st.ClusterID
	for i := range 3 {
		c.stop(i)
	}
	c.start(0)
	st = statusJSON{}
	if code := c.admin(0, "GET", "/v1/status", nil, &st); code != 200 || st.ClusterID != cluster {
		t.Fatalf("status of the member restarted alone: %d, cluster %q; want 200 naming %s", code, st.ClusterID, cluster)
	}
	var out struct{ Error string }
	if code := c.admin(0, "GET", "/v1/shards", nil, &out); code != 503 || !strings.Contains(out.Error, "belongs to cluster "+cluster) {
		t.Fatalf("shards of the member restarted alone: %d %q; want 503 saying it belongs to cluster %s", code, out.Error, cluster)
	}
}

// A transfer to a replica that does not run its group yet (its node just
// restarted) or lags the leader is refused at once with 409: raft would
// hold the shard's requests while it caught the replica up, and could
// still fail at the end (found by QA: 5 s of held requests, some 503s).
func TestTransferTargetNotReady(t *testing.T) {
	for _, c := range []struct {
		name          string
		st            *proto.ForwardGroupStatusResponse
		err           error
		leaderApplied uint64
		want          string // "" for no refusal
	}{
		{"caught up", &proto.ForwardGroupStatusResponse{Running: true, AppliedIndex: 100}, nil, 100, ""},
		{"within the lag", &proto.ForwardGroupStatusResponse{Running: true, AppliedIndex: 100 - catchUpLag}, nil, 100, ""},
		{"ahead of this leader's applied index", &proto.ForwardGroupStatusResponse{Running: true, AppliedIndex: 120}, nil, 100, ""},
		{"behind", &proto.ForwardGroupStatusResponse{Running: true, AppliedIndex: 10}, nil, 100, "n2's replica of shard 7 is 90 entries behind"},
		{"not running", &proto.ForwardGroupStatusResponse{}, nil, 100, "n2 does not run its replica of shard 7 yet"},
		{"no answer", nil, errors.New("deadline exceeded"), 100, "n2 did not answer for its replica of shard 7 (deadline exceeded)"},
	} {
		err := transferTargetNotReady("n2", 7, c.st, c.err, c.leaderApplied)
		var ae *apiError
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want != "" && (!errors.As(err, &ae) || ae.code != http.StatusConflict || !strings.Contains(ae.msg, c.want)):
			t.Errorf("%s: %v, want a 409 saying %q", c.name, err, c.want)
		}
	}
}
