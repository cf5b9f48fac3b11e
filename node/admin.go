package node

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/roostdb/roost/placement"
	"github.com/roostdb/roost/raftstore"
)

// The JSON admin API (docs/admin-api.md) on the admin listener. Any node
// answers every call: reads come from its own copy of the map and from the
// shard groups' status over gRPC; calls that change the map are carried
// out by the meta leader (others forward the HTTP request to it), and a
// shard leadership transfer by the shard's leader. Operations (rebalance,
// drain) run on the meta leader and live in its memory.

// forwardedHeader counts the times a request was forwarded from node to
// node; past maxAdminHops a node answers 503 instead of forwarding again,
// so a request cannot loop while leadership moves.
const forwardedHeader = "X-Roost-Forwarded"

// maxAdminHops bounds how often one admin call is forwarded.
const maxAdminHops = 2

// hops returns how often r was forwarded already.
func hops(r *http.Request) int {
	n, _ := strconv.Atoi(r.Header.Get(forwardedHeader))
	return max(n, 0)
}

// mapVersionHeader carries the map version a call that changed the map
// produced. A node that forwarded the call waits (briefly) until its own
// copy of the map has caught up before it answers, so the caller's next
// read through the same node sees its change.
const mapVersionHeader = "X-Roost-Map-Version"

// mapCatchUpWait bounds that wait.
const mapCatchUpWait = 2 * time.Second

// maxAdminBody bounds a request body of the admin API.
const maxAdminBody = 1 << 20

// statusFanoutTimeout bounds gathering the shard groups' status from every
// replica for one call.
const statusFanoutTimeout = 3 * time.Second

// admin serves /v1/ for one node. adminAPI makes one per Start.
type admin struct {
	n      *Node
	client *http.Client // forwarding to other nodes' admin listeners
	proxy  *http.Transport

	// resumeMu serializes resumeRecorded. Lock order: resumeMu, then mu.
	resumeMu sync.Mutex

	mu      sync.Mutex
	running *operation            // the operation under way on this node, if any
	ops     map[string]*operation // recent operations by ID
	order   []string              // IDs of ops, oldest first
	seq     int
}

// apiError is an answer other than success: an HTTP status and why.
type apiError struct {
	code int
	msg  string
	err  error // the cause, if any (for errors.Is)
	// operation is the ID of an operation the call started that may run
	// although the call failed (errMetaOutcomeUnknown); the answer names
	// it, so that a caller can follow it.
	operation string
}

// errMetaOutcomeUnknown: the meta leader lost its leadership after it
// appended a change and before the change committed, so a new meta leader
// may or may not commit it.
var errMetaOutcomeUnknown = errors.New("the change's outcome is unknown")

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.err }

// errBodyTooLarge: a request body over the call's limit.
var errBodyTooLarge = errors.New("request body too large")

func errorf(code int, format string, args ...any) error {
	return &apiError{code: code, msg: fmt.Sprintf(format, args...)}
}

func newAdmin(n *Node) *admin {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		ResponseHeaderTimeout: 2 * time.Minute,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       time.Minute,
	}
	return &admin{n: n, proxy: tr, client: &http.Client{Transport: tr, Timeout: 2 * time.Minute}, ops: make(map[string]*operation)}
}

// adminAPI returns the /v1/ handler: the calls behind the token check.
func (n *Node) adminAPI() http.Handler {
	a := n.admin
	mux := http.NewServeMux()
	// calls holds the calls alone, without the catch-all, to find the
	// methods a known path takes.
	calls := http.NewServeMux()
	var methods []string
	// handle registers a call that takes the query parameters named in
	// query, each at most once, and no others.
	handle := func(pattern string, h func(w http.ResponseWriter, r *http.Request) error, query ...string) {
		calls.Handle(pattern, http.NotFoundHandler())
		if m, _, _ := strings.Cut(pattern, " "); !slices.Contains(methods, m) {
			methods = append(methods, m)
		}
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			err := checkQuery(r, query)
			if err == nil {
				err = h(w, r)
			}
			if err != nil {
				writeAPIError(w, err)
			}
		})
	}
	handle("GET /v1/status", a.status)
	handle("GET /v1/members", a.members)
	handle("GET /v1/shards", a.shards)
	handle("POST /v1/shards/{id}/move", a.move)
	handle("POST /v1/shards/{id}/transfer-leader", a.transferLeader)
	handle("POST /v1/rebalance", a.rebalance)
	handle("POST /v1/nodes/{id}/drain", a.drain)
	handle("POST /v1/nodes/{id}/remove", a.remove)
	handle("POST /v1/nodes/{id}/activate", a.activate)
	handle("GET /v1/operations", a.operations)
	handle("GET /v1/operations/{id}", a.operation)
	handle("GET /v1/objects/{binding}", a.locate, "name", "id")
	handle("GET /v1/kv/{binding}/keys", a.kvList, "prefix", "limit", "cursor")
	handle("GET /v1/kv/{binding}/values/{key...}", a.kvGet)
	handle("PUT /v1/kv/{binding}/values/{key...}", a.kvPut)
	handle("DELETE /v1/kv/{binding}/values/{key...}", a.kvDelete)
	// Not through handle: a call that does not exist is 404 whatever its
	// query, not 400 for a parameter it "does not take". The catch-all
	// also gets a known path with a wrong method (it matches every
	// method), which is 405 with the methods the path takes, as HTTP
	// asks, so that a client sees its method, not its path, is wrong.
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(calls, methods, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeAPIError(w, errorf(http.StatusMethodNotAllowed, "%s takes %s, not %s (see docs/admin-api.md)",
				r.URL.Path, strings.Join(allow, ", "), r.Method))
			return
		}
		writeAPIError(w, errorf(http.StatusNotFound, "no admin call %s %s (see docs/admin-api.md)", r.Method, r.URL.Path))
	})
	return a.auth(a.devGuard(mux))
}

// allowedMethods returns the methods among methods for which calls has a
// call at r's path, in that order; a GET call also takes HEAD (ServeMux
// routes HEAD to it).
func allowedMethods(calls *http.ServeMux, methods []string, r *http.Request) []string {
	var allow []string
	for _, m := range methods {
		if _, pattern := calls.Handler(&http.Request{Method: m, URL: r.URL, Host: r.Host}); pattern == "" {
			continue
		}
		allow = append(allow, m)
		if m == http.MethodGet {
			allow = append(allow, http.MethodHead)
		}
	}
	return allow
}

// checkQuery refuses a query the call does not take: a parameter it does
// not know (POST /v1/rebalance?dry_run=true would start a rebalance, a
// put's ?expiration_ttl=60 would store the key for good), one given
// twice, or one that is not query syntax. A call's options go in its
// JSON body.
func checkQuery(r *http.Request, allowed []string) error {
	if r.URL.RawQuery == "" {
		return nil
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return errorf(http.StatusBadRequest, "malformed query %q: %v", r.URL.RawQuery, err)
	}
	for _, k := range slices.Sorted(maps.Keys(q)) {
		switch {
		case !slices.Contains(allowed, k) && len(allowed) == 0:
			return errorf(http.StatusBadRequest, "unknown query parameter %q: %s %s takes none (see docs/admin-api.md)", k, r.Method, r.URL.Path)
		case !slices.Contains(allowed, k):
			return errorf(http.StatusBadRequest, "unknown query parameter %q: %s %s takes %s (see docs/admin-api.md)", k, r.Method, r.URL.Path, strings.Join(allowed, ", "))
		case len(q[k]) > 1:
			return errorf(http.StatusBadRequest, "query parameter %q given %d times: give it once", k, len(q[k]))
		}
	}
	return nil
}

// auth requires the admin token on every call when one is set. Both
// sides are hashed first, so the comparison takes the same time whatever
// the length or content of the token offered.
func (a *admin) auth(next http.Handler) http.Handler {
	token := a.n.cfg.AdminToken
	if token == "" {
		return next
	}
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		const scheme = "Bearer "
		if len(h) < len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="roost admin"`) // RFC 7235: a 401 names its scheme
			writeAPIError(w, errorf(http.StatusUnauthorized, "this call needs the admin token: send Authorization: Bearer <token>"))
			return
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(h[len(scheme):])))
		if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="roost admin", error="invalid_token"`) // RFC 6750
			writeAPIError(w, errorf(http.StatusUnauthorized, "wrong admin token"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// devGuard answers every call but /v1/status, the KV calls and an
// object's location with 409 in dev mode: the others are about the
// cluster. A call that does not exist
// gets the catch-all's 404, and a wrong method its 405, as on a cluster.
func (a *admin) devGuard(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pattern := mux.Handler(r)
		known := pattern != "" && pattern != "/v1/"
		if known && a.n.cluster == nil && r.URL.Path != "/v1/status" && !strings.HasPrefix(r.URL.Path, "/v1/kv/") && !strings.HasPrefix(r.URL.Path, "/v1/objects/") {
			writeAPIError(w, errorf(http.StatusConflict, "roost dev runs no cluster"))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // messages say <token>, not \u003ctoken\u003e
	if err := enc.Encode(v); err != nil {
		code = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"encoding the answer failed"}` + "\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

func writeAPIError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var ae *apiError
	if errors.As(err, &ae) {
		code = ae.code
	}
	body := map[string]string{"error": err.Error()}
	if ae != nil && ae.operation != "" {
		body["operation"] = ae.operation
	}
	writeJSON(w, code, body)
}

// decodeBody decodes a JSON request body strictly into v. An empty body
// leaves v as it is when the body is optional.
func decodeBody(r *http.Request, v any, optional bool) error {
	return decodeBodyUpTo(r, v, optional, maxAdminBody)
}

// decodeBodyUpTo is decodeBody for bodies of up to limit bytes.
func decodeBodyUpTo(r *http.Request, v any, optional bool, limit int) error {
	tooLarge := &apiError{code: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("request body larger than %d bytes", limit), err: errBodyTooLarge}
	// Refused before a byte is read when the length says so: a client that
	// waits for "100 Continue" then sends nothing, and one that does not
	// reads the answer instead of a reset after part of its upload.
	if r.ContentLength > int64(limit) {
		return tooLarge
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		return errorf(http.StatusBadRequest, "reading the request body: %v", err)
	}
	if len(b) > limit {
		return tooLarge
	}
	// Left for a forward: a call checks its body before it is forwarded.
	r.Body = io.NopCloser(bytes.NewReader(b))
	if len(strings.TrimSpace(string(b))) == 0 {
		if optional {
			return nil
		}
		return errorf(http.StatusBadRequest, "this call needs a JSON body")
	}
	if strings.TrimSpace(string(b)) == "null" {
		// Decoding null leaves v as it was, so it would read as {}.
		return errorf(http.StatusBadRequest, "malformed JSON body: an object is expected, not null")
	}
	// Names first, so that every unknown field gets the same answer, with
	// the fields the call takes (encoding/json's says only "unknown field").
	if err := checkFieldNames(b, v); err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, "malformed JSON body: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "malformed JSON body: data after the JSON value")
	}
	return nil
}

// checkFieldNames refuses, in the JSON object b decoded into the struct v
// points to, a field given twice or named other than exactly as the
// struct's tag: encoding/json takes the last of two and matches names
// without regard to case, so {"dry_run":true,"dry_run":false} started a
// rebalance and {"to":"n2","TO":"n3"} moved to n3.
func checkFieldNames(b []byte, v any) error {
	t := reflect.TypeOf(v)
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil
	}
	t = t.Elem()
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		names = append(names, cmp.Or(name, f.Name))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil // decoding into v has judged it already
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		k, _ := tok.(string)
		switch {
		case seen[k]:
			return errorf(http.StatusBadRequest, "malformed JSON body: field %q given twice", k)
		case len(names) == 0:
			return errorf(http.StatusBadRequest, "malformed JSON body: unknown field %q (this call takes no fields: send {} or no body)", k)
		case !slices.Contains(names, k):
			return errorf(http.StatusBadRequest, "malformed JSON body: unknown field %q (this call takes %s, spelt exactly so)", k, strings.Join(names, ", "))
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}

// parseNode parses a node ID given by the caller; a malformed one is a 400.
func parseNode(what, s string) (placement.NodeID, error) {
	if s == "" {
		return "", errorf(http.StatusBadRequest, "%s: no node given", what)
	}
	id, err := placement.ParseNodeID(s)
	if err != nil {
		return "", errorf(http.StatusBadRequest, "%s: %v", what, err)
	}
	return id, nil
}

// knownNode returns node id of m, or a 400 naming the nodes there are.
func knownNode(m placement.Map, what string, id placement.NodeID) (placement.Node, error) {
	nd, ok := m.Nodes[id]
	if !ok {
		ids := make([]string, 0, len(m.Nodes))
		for k := range m.Nodes {
			ids = append(ids, string(k))
		}
		slices.Sort(ids)
		return placement.Node{}, errorf(http.StatusBadRequest, "%s: unknown node %s (the cluster has %s)", what, id, strings.Join(ids, ", "))
	}
	return nd, nil
}

// parseShardNumber parses the {id} of a shard path, without the map.
func parseShardNumber(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || strconv.FormatUint(v, 10) != s { // "01" is not how a shard is named
		return 0, errorf(http.StatusBadRequest, "shard %q: not a shard number", s)
	}
	return v, nil
}

// parseShard parses the {id} of a shard path against m.
func parseShard(m placement.Map, s string) (placement.ShardID, error) {
	v, err := parseShardNumber(s)
	if err != nil {
		return 0, err
	}
	if v >= uint64(len(m.ShardMap)) {
		return 0, errorf(http.StatusBadRequest, "unknown shard %d (the cluster has shards 0 to %d)", v, len(m.ShardMap)-1)
	}
	return placement.ShardID(v), nil
}

// clusterMap returns the local copy of the map, or a 503 before the
// cluster has formed.
func (a *admin) clusterMap() (placement.Map, error) {
	m := a.n.cluster.metaFSM.Map()
	if !m.Bootstrapped() {
		if id := a.n.rejoins; id != "" {
			// A restarted node learns the map from the meta group's log,
			// committed once it hears from the group's leader.
			return m, errorf(http.StatusServiceUnavailable, "no cluster map yet: this node belongs to cluster %s but has not heard from its meta group since it started (are the other nodes up, and reachable from here? see /readyz)", id)
		}
		return m, errorf(http.StatusServiceUnavailable, "the cluster has not formed yet (no cluster map)")
	}
	return m, nil
}

// metaRaft returns this node's replica of the meta group, or nil before it started.
func (c *cluster) metaRaft() *raft.Raft {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.meta == nil {
		return nil
	}
	return c.meta.Raft()
}

// metaLeaderID returns the meta group's leader as this node knows it ("" if unknown).
func (c *cluster) metaLeaderID() placement.NodeID {
	r := c.metaRaft()
	if r == nil {
		return ""
	}
	if r.State() == raft.Leader {
		return c.self
	}
	_, id := r.LeaderWithID()
	return placement.NodeID(id)
}

// liveMetaLeaderID is metaLeaderID as status shows it: "" while this node
// leads the meta group without a quorum of its voters reachable, or
// follows a leader that is not alive to it (raftstore liveness) — raft
// keeps naming a leader for its lease, seconds after the group lost it.
func (c *cluster) liveMetaLeaderID() placement.NodeID {
	c.mu.Lock()
	g := c.meta
	c.mu.Unlock()
	if g == nil {
		return ""
	}
	if g.Raft().State() == raft.Leader {
		if ok, err := g.QuorumReachable(); err != nil || !ok {
			return ""
		}
		return c.self
	}
	if _, alive := g.LiveLeader(); !alive {
		return ""
	}
	_, id := g.Raft().LeaderWithID()
	return placement.NodeID(id)
}

// leaderGrace is how long a call waits for a leader (of the meta group,
// or of a shard) to be elected before it answers 503: an election takes
// about a second, and a caller should not have to retry through one.
const leaderGrace = 3 * time.Second

// onMetaLeader reports whether this node leads the meta group, so the
// call runs here; otherwise it forwards the request to the leader (and
// reports false with the error, if any, to answer). While no leader is
// known it waits up to leaderGrace for one.
func (a *admin) onMetaLeader(w http.ResponseWriter, r *http.Request) (bool, error) {
	c := a.n.cluster
	rf := c.metaRaft()
	if rf == nil {
		return false, errorf(http.StatusServiceUnavailable, "the meta group has not started on this node yet (cluster not formed)")
	}
	forwarded := hops(r) > 0
	deadline := time.Now().Add(leaderGrace)
	for {
		if rf.State() == raft.Leader {
			return true, nil
		}
		// A forwarded call waits for this node to lead again (a leader
		// that stepped down is often re-elected) rather than bounce.
		if leader := c.metaLeaderID(); leader != "" && (!forwarded || time.Now().After(deadline)) {
			return false, a.forward(w, r, leader, "meta leader")
		}
		if time.Now().After(deadline) {
			return false, errorf(http.StatusServiceUnavailable, "the meta group has no leader (an election is under way, or too few meta voters are up); retry")
		}
		if !sleepCtx(r.Context(), 20*time.Millisecond) {
			return false, r.Context().Err()
		}
	}
}

// forward sends the request to node id's admin listener and copies back
// its answer, with the caller's Authorization header. A request is
// forwarded only once.
func (a *admin) forward(w http.ResponseWriter, r *http.Request, id placement.NodeID, role string) error {
	h := hops(r)
	if h >= maxAdminHops {
		// A client may set the header too; the message says what the
		// node saw, not who sent it.
		return errorf(http.StatusServiceUnavailable, "the call reached this node (%s) forwarded %d time(s) already (%s), and the %s is now %s: leadership is moving; retry", a.n.cfg.NodeID, h, forwardedHeader, role, id)
	}
	m := a.n.cluster.metaFSM.Map()
	nd, ok := m.Nodes[id]
	if !ok || nd.AdminAddr == "" {
		return errorf(http.StatusServiceUnavailable, "the %s %s has no admin address in the cluster map", role, id)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "http", Host: nd.AdminAddr})
			pr.Out.Header.Set(forwardedHeader, strconv.Itoa(h+1))
		},
		Transport: a.proxy,
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode == http.StatusUnauthorized {
				tokenRefused(resp, a.n.cfg.NodeID, role, id)
				return nil
			}
			if v, err := strconv.ParseUint(resp.Header.Get(mapVersionHeader), 10, 64); err == nil {
				a.waitMapVersion(r.Context(), v)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeAPIError(w, errorf(http.StatusServiceUnavailable, "forwarding to the %s %s at %s: %v", role, id, nd.AdminAddr, err))
		},
	}
	proxy.ServeHTTP(w, r)
	return nil
}

// tokenRefused turns the 401 with which the node a call was forwarded to
// refused the caller's token, which this node (self) accepted, into a 502
// that says so: the nodes' admin tokens differ. As a 401 it told the
// caller that its own token was wrong.
func tokenRefused(resp *http.Response, self, role string, to placement.NodeID) {
	var said struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 4<<10)).Decode(&said)
	resp.Body.Close()
	body, _ := json.Marshal(map[string]string{"error": fmt.Sprintf(
		"the %s %s refused the admin token that this node (%s) accepted (%q): every node of a cluster needs the same admin token ([admin] token or ROOST_ADMIN_TOKEN)",
		role, to, self, said.Error)})
	resp.StatusCode, resp.Status = http.StatusBadGateway, "502 Bad Gateway"
	resp.Header.Del("WWW-Authenticate")
	resp.Header.Set("Content-Type", "application/json")
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	resp.ContentLength = int64(len(body))
	resp.Body = io.NopCloser(bytes.NewReader(body))
}

// waitMapVersion waits until this node's copy of the map has reached
// version v, at most mapCatchUpWait.
func (a *admin) waitMapVersion(ctx context.Context, v uint64) {
	timer := time.NewTimer(mapCatchUpWait)
	defer timer.Stop()
	for {
		m, changed := a.n.cluster.metaFSM.MapAndWatch()
		if m.Version >= v {
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// proposeMeta applies cmd through the meta group (on its leader) and
// returns the map's new version, or why the command was refused.
func (a *admin) proposeMeta(cmd placement.Command) (uint64, error) {
	rf := a.n.cluster.metaRaft()
	if rf == nil {
		return 0, errorf(http.StatusServiceUnavailable, "the meta group has not started")
	}
	b, err := placement.EncodeCommand(cmd)
	if err != nil {
		return 0, errorf(http.StatusBadRequest, "%v", err)
	}
	f := rf.Apply(b, 5*time.Second)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrLeadershipLost) {
			// Appended, not known to be committed: a new meta leader may
			// still commit it.
			return 0, &apiError{code: http.StatusServiceUnavailable, err: fmt.Errorf("%w: %w", errMetaOutcomeUnknown, err),
				msg: fmt.Sprintf("the meta leader lost its leadership while committing the change (%v; it moved, or the leader lost touch with a quorum of the meta voters): it may or may not have been made; look (roost status, members, shards) before you retry", err)}
		}
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return 0, errorf(http.StatusServiceUnavailable, "the meta group's leadership moved before the change was made (%v); retry", err)
		}
		return 0, errorf(http.StatusServiceUnavailable, "changing the cluster map: %v", err)
	}
	raftstore.PublishCommits(rf)
	v, err := placement.ApplyResponse(f.Response())
	if err != nil {
		return 0, refusal(err)
	}
	return v, nil
}

// setMapVersion tells a forwarding node which map version the call made.
func setMapVersion(w http.ResponseWriter, v uint64) {
	if v > 0 {
		w.Header().Set(mapVersionHeader, strconv.FormatUint(v, 10))
	}
}

// refusal turns a rejected meta command into an answer: 400 for what the
// caller named wrong, 409 for a change refused in the cluster's state.
func refusal(err error) error {
	msg := strings.ReplaceAll(err.Error(), "placement: ", "")
	switch {
	case errors.Is(err, placement.ErrUnknownNode), errors.Is(err, placement.ErrUnknownShard),
		errors.Is(err, placement.ErrInvalidNodeID), errors.Is(err, placement.ErrBadCommand):
		return &apiError{code: http.StatusBadRequest, msg: msg, err: err}
	case errors.Is(err, placement.ErrNotBootstrapped):
		return &apiError{code: http.StatusServiceUnavailable, msg: msg, err: err}
	case errors.Is(err, placement.ErrUnsafe), errors.Is(err, placement.ErrStaleVersion),
		errors.Is(err, placement.ErrNodeRemoved), errors.Is(err, placement.ErrNodeNotActive),
		errors.Is(err, placement.ErrInvalidNodeState), errors.Is(err, placement.ErrInvalidMap),
		errors.Is(err, placement.ErrOperationRunning):
		return &apiError{code: http.StatusConflict, msg: "refused: " + msg, err: err}
	}
	return err
}

// statusJSON is the answer of GET /v1/status.
type statusJSON struct {
	NodeID     string `json:"node_id"`
	ClusterID  string `json:"cluster_id"`
	Mode       string `json:"mode"`
	Ready      bool   `json:"ready"`
	Reason     string `json:"reason"`
	MetaLeader string `json:"meta_leader"`
	MapVersion uint64 `json:"map_version"`
	Nodes      int    `json:"nodes"`
	// Unreachable are the nodes counted in Nodes that this node does not
	// see alive in gossip or cannot reach over the Raft transport: down,
	// or cut off from it (from a node that is itself cut off, all others).
	Unreachable []string `json:"unreachable"`
	Shards      int      `json:"shards"`
	Replicas    int      `json:"replicas"`
	// UnderReplicated counts the shards the map gives fewer than Replicas
	// replicas: fewer active nodes than that (a drain of one of three),
	// or a heal or move still to come.
	UnderReplicated int     `json:"under_replicated"`
	Operation       *opJSON `json:"operation"`
}

func (a *admin) status(w http.ResponseWriter, r *http.Request) error {
	n := a.n
	if n.cluster == nil {
		st := statusJSON{NodeID: string(devServerID), Mode: "dev", Ready: true, Nodes: 1, Unreachable: []string{}, Shards: n.cfg.Shards, Replicas: 1}
		var notReady []string
		for _, sh := range n.shards {
			if !sh.isReady() {
				notReady = append(notReady, sh.id.String())
			}
		}
		if len(notReady) > 0 {
			st.Ready, st.Reason = false, "shards without a leader here: "+strings.Join(notReady, ",")
		}
		writeJSON(w, http.StatusOK, st)
		return nil
	}
	c := n.cluster
	m := c.metaFSM.Map()
	st := statusJSON{NodeID: n.cfg.NodeID, ClusterID: cmp.Or(m.ClusterID, n.rejoins), Mode: "cluster", MetaLeader: string(c.liveMetaLeaderID()),
		MapVersion: m.Version, Shards: m.Shards, Replicas: m.Replicas}
	if !m.Bootstrapped() {
		st.Shards, st.Replicas = n.cfg.Shards, n.cfg.Replicas
	}
	st.Unreachable = []string{}
	usable := c.usableIDs(m)
	for id, nd := range m.Nodes {
		if nd.State != placement.NodeRemoved {
			st.Nodes++
			if !usable[id] {
				st.Unreachable = append(st.Unreachable, string(id))
			}
		}
	}
	slices.Sort(st.Unreachable)
	if m.Bootstrapped() {
		for _, sh := range m.ShardMap {
			if len(sh.Replicas) < m.Replicas {
				st.UnderReplicated++
			}
		}
	}
	st.Ready, st.Reason = c.ready()
	if rf := c.metaRaft(); rf != nil && rf.State() == raft.Leader {
		st.Operation = a.current()
	} else if st.MetaLeader != "" && hops(r) == 0 {
		st.Operation = a.leaderOperation(r, placement.NodeID(st.MetaLeader))
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// leaderOperation asks the meta leader for its running operation (nil if
// none, or if the leader does not answer in time).
func (a *admin) leaderOperation(r *http.Request, leader placement.NodeID) *opJSON {
	nd, ok := a.n.cluster.metaFSM.Map().Nodes[leader]
	if !ok || nd.AdminAddr == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+nd.AdminAddr+"/v1/status", nil)
	if err != nil {
		return nil
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set(forwardedHeader, "1")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var st statusJSON
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, maxAdminBody)).Decode(&st) != nil {
		return nil
	}
	return st.Operation
}

// Member is one member in GET /v1/members (docs/admin-api.md). It is
// exported for the tools that decode the API (internal/adminapi).
type Member struct {
	ID    string `json:"id"`
	State string `json:"state"` // active, draining or removed
	Alive bool   `json:"alive"` // as gossip sees it
	// Reachable: the answering node reaches it over the Raft transport
	// (its liveness pings are answered), and gossip does not call it dead.
	// Gossip may still call a node alive that this one is cut off from: a
	// node whose own network is down blames itself, not its peers, and
	// marks none of them dead. The transport alone cannot speak for a node
	// it has no group with (a removed one): it has no record of it.
	Reachable bool   `json:"reachable"`
	GRPC      string `json:"grpc"`
	HTTP      string `json:"http"`
	Admin     string `json:"admin"`
	Gossip    string `json:"gossip"`
	Replicas  int    `json:"replicas"`
	Leaders   int    `json:"leaders"`
	Meta      string `json:"meta"` // voter, nonvoter, or "" if not in the meta group
}

func (a *admin) members(w http.ResponseWriter, r *http.Request) error {
	c := a.n.cluster
	m, err := a.clusterMap()
	if err != nil {
		return err
	}
	alive := c.aliveIDs()
	ctx, cancel := context.WithTimeout(r.Context(), statusFanoutTimeout)
	defer cancel()
	leaders := map[string]int{}
	for _, v := range c.shardViews(ctx, m, m.ShardMap) {
		if v.Leader != "" {
			leaders[v.Leader]++
		}
	}
	suffrage := c.metaSuffrage()
	out := make([]Member, 0, len(m.Nodes))
	for id, nd := range m.Nodes {
		out = append(out, Member{
			ID: string(id), State: nd.State.String(), Alive: alive[id], Reachable: alive[id] && c.trans.PeerReachable(raft.ServerAddress(nd.GRPCAddr)),
			GRPC: nd.GRPCAddr, HTTP: nd.HTTPAddr, Admin: nd.AdminAddr, Gossip: nd.GossipAddr,
			Replicas: len(m.ShardsOf(id)), Leaders: leaders[string(id)], Meta: suffrage[id],
		})
	}
	slices.SortFunc(out, func(x, y Member) int { return strings.Compare(x.ID, y.ID) })
	writeJSON(w, http.StatusOK, map[string]any{"members": out})
	return nil
}
