package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/node"
)

// This file is what the operator commands (status, members, shards,
// rebalance, drain, operation, remove, kv) share: where to reach a node's admin API and
// with which token, calling it, and turning its answers into output and its
// failures into one-line errors. docs/admin-api.md is the contract.

// defaultAdminAddr is the admin listener's default, as `roost node` has it.
const defaultAdminAddr = "127.0.0.1:8789"

// Environment variables the operator commands read.
const (
	envAdminAddr  = "ROOST_ADDR"
	envAdminToken = "ROOST_ADMIN_TOKEN"
)

// Timing of --wait. They are variables so that tests can wait less.
var (
	// adminPollInterval is how often a --wait asks for progress.
	adminPollInterval = time.Second
	// adminRetryFor is how long a --wait keeps asking through failures that
	// may pass, such as no connection or a 503 while the meta group elects a
	// leader, before it gives up.
	adminRetryFor = 30 * time.Second
	// adminProgressEvery is how often an unchanged progress line is
	// repeated, so that a long wait shows it is still alive.
	adminProgressEvery = 15 * time.Second
	// operationRestartDelay is how long a --wait lets a new meta leader
	// settle (and carry on the operation) before it asks for the operation
	// again, or starts it again if the new leader does not know it.
	operationRestartDelay = time.Second
)

// maxAnswer bounds how much of an answer is read: a shard list of a large
// cluster is well under a megabyte; the largest answer is a KV value of
// durable.KVMaxValueBytes in base64, with room for its key and metadata.
const maxAnswer = durable.KVMaxValueBytes/3*4 + 1<<20

// adminConnectHelp ends the help of every operator command.
const adminConnectHelp = `

The command talks to the admin API of any node of the cluster: --addr, or
ROOST_ADDR (a flag you give wins over the variable), as host:port (default
port 8789) or as a URL such as http://10.0.0.5:8789. When the cluster has an
admin token, give it with ROOST_ADMIN_TOKEN or --token (the variable is safer:
other users can see a command line). --timeout bounds each request.

-o json prints the API's answer as indented JSON with its keys sorted.
Errors are one line on stderr (a usage error adds a line pointing at --help);
the exit status is 0 on success, 1 if the cluster refused or the call failed,
and 2 if the command was called wrong.`

// adminOptions are the flags every operator command has.
type adminOptions struct {
	addr, token, output string
	timeout             time.Duration
	lookupEnv           func(string) (string, bool)
}

// defaultAdminTimeout is --timeout's default: above the longest a node may
// take to answer (a leadership transfer: up to 10 s for it to show, after
// up to 3 s to find the shard's leader), so that a slow transfer gets the
// node's own answer rather than "no answer within".
const defaultAdminTimeout = 20 * time.Second

// register adds the flags to cmd.
func (o *adminOptions) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.addr, "addr", defaultAdminAddr, "admin address of any node: host:port or http://host:port ("+envAdminAddr+")")
	f.StringVar(&o.token, "token", "", "admin token, sent as 'Authorization: Bearer <token>' ("+envAdminToken+")")
	f.StringVarP(&o.output, "output", "o", "table", `output format: "table" or "json"`)
	f.DurationVar(&o.timeout, "timeout", defaultAdminTimeout, "give up on a request to the admin API after this long")
}

// json reports whether -o json was asked for.
func (o *adminOptions) json() bool { return o.output == "json" }

// client checks the flags and builds the client they describe. A flag the
// user gave wins over its variable, which wins over the default: unlike a
// node's settings, these are typed by a person at a shell where the
// variables may have been exported long ago for another cluster.
func (o *adminOptions) client(cmd *cobra.Command) (*adminClient, error) {
	if o.output != "table" && o.output != "json" {
		return nil, &usageError{cmd: cmd, err: fmt.Errorf(`--output must be "table" or "json", got %q`, o.output)}
	}
	if o.timeout <= 0 {
		return nil, &usageError{cmd: cmd, err: fmt.Errorf("--timeout must be positive, got %s", o.timeout)}
	}
	addr, addrFrom := o.addr, "--addr"
	if !cmd.Flags().Changed("addr") {
		if v, ok := o.lookupEnv(envAdminAddr); ok && v != "" {
			addr, addrFrom = v, envAdminAddr
		}
	}
	base, err := adminBaseURL(addr)
	if err != nil {
		return nil, &usageError{cmd: cmd, err: fmt.Errorf("%s %q: %v", addrFrom, addr, err)}
	}
	c := &adminClient{base: base, timeout: o.timeout, http: &http.Client{}}
	if cmd.Flags().Changed("token") {
		c.token, c.tokenFrom = o.token, "--token"
	} else if v, ok := o.lookupEnv(envAdminToken); ok && v != "" {
		c.token, c.tokenFrom = v, envAdminToken
	}
	if r, i := node.TokenBadChar(c.token); i >= 0 {
		return nil, &usageError{cmd: cmd, err: fmt.Errorf("%s holds %q at byte %d: %s", c.tokenFrom, r, i, node.TokenBadCharWhy(r))}
	}
	if c.token != strings.TrimSpace(c.token) {
		// A node refuses such a token at its start: it could never match.
		return nil, &usageError{cmd: cmd, err: fmt.Errorf("%s has blanks around it (or is blank); give the token alone", c.tokenFrom)}
	}
	return c, nil
}

// adminBaseURL turns what --addr accepts into the API's base URL: host:port
// (no port means the admin listener's default, 8789), or an http:// or
// https:// URL, whose port defaults as URLs' do.
func adminBaseURL(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	if addr == "" {
		return "", errors.New("empty address")
	}
	if !strings.Contains(addr, "://") {
		if host, port, err := net.SplitHostPort(addr); err != nil {
			addr = net.JoinHostPort(strings.Trim(addr, "[]"), "8789")
		} else if port == "" { // "host:" is no port too, not URLs' 80
			addr = net.JoinHostPort(host, "8789")
		}
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return "", errors.New("not host:port or an http:// URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("scheme %q: use http:// or https://", u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return "", errors.New("no host")
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return "", errors.New("give host:port or a URL without user, query or fragment")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("port %q is not a number from 1 to 65535", p)
		}
	}
	return u.Scheme + "://" + u.Host + strings.TrimRight(u.EscapedPath(), "/"), nil
}

// adminClient calls one node's admin API.
type adminClient struct {
	base      string // "http://127.0.0.1:8789", no trailing slash
	token     string
	tokenFrom string // "--token", "ROOST_ADMIN_TOKEN", or "" when there is none
	timeout   time.Duration
	http      *http.Client
	// others are the admin APIs of the cluster's other nodes (learnOthers),
	// which a --wait asks in turn once the node at base stops answering:
	// it may be the meta leader that died, or a node being stopped.
	others []string
}

// learnOthers keeps the admin addresses of the cluster's other nodes, from
// GET /v1/members, for failover. It is best-effort: without an answer, or
// when base is a URL with a path (a proxy, whose nodes' own addresses may
// not be reachable from here), there are none.
func (c *adminClient) learnOthers(ctx context.Context) {
	scheme, rest, _ := strings.Cut(c.base, "://")
	if strings.Contains(rest, "/") {
		return
	}
	var resp struct {
		Members []apiMember `json:"members"`
	}
	if _, err := c.call(ctx, http.MethodGet, "/v1/members", nil, &resp); err != nil {
		return
	}
	// Those gossip sees alive first: a dead one may take --timeout to fail.
	slices.SortStableFunc(resp.Members, func(a, b apiMember) int {
		switch {
		case a.Alive == b.Alive:
			return 0
		case a.Alive:
			return -1
		}
		return 1
	})
	for _, m := range resp.Members {
		if m.Admin == "" || m.State == "removed" {
			continue
		}
		base, err := adminBaseURL(scheme + "://" + m.Admin)
		if err != nil || base == c.base || slices.Contains(c.others, base) {
			continue
		}
		c.others = append(c.others, base)
	}
}

// failover turns to the next of the other nodes when err says the node at
// base gave no answer, saying so on stderr, and reports whether it did.
func (c *adminClient) failover(stderr io.Writer, err error) bool {
	var te *transportError
	if !errors.As(err, &te) || len(c.others) == 0 {
		return false
	}
	prev := c.base
	c.base, c.others = c.others[0], append(c.others[1:], prev)
	fmt.Fprintf(stderr, "roost: %s does not answer; asking %s instead\n", prev, c.base)
	return true
}

// apiError is an answer other than 2xx. Its message is the server's
// explanation when it gave one, followed by a hint at the likely fix.
type apiError struct {
	status int
	msg    string
	hint   string
	// operation names an operation the refused call may have started all
	// the same (the meta leadership moved while it was recorded).
	operation string
}

func (e *apiError) Error() string {
	if e.hint == "" {
		return e.msg
	}
	return e.msg + " (" + e.hint + ")"
}

// transportError is a call that got no answer.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// transient reports whether err may pass if the call is repeated: no answer,
// or a server error such as 503 while the meta group has no leader.
func transient(err error) bool {
	var te *transportError
	var ae *apiError
	return errors.As(err, &te) || errors.As(err, &ae) && ae.status >= 500
}

// call sends method path with body (nil for none) as JSON, decodes a 2xx
// answer into out (nil to skip) and returns the answer as it came.
func (c *adminClient) call(ctx context.Context, method, path string, body, out any) (json.RawMessage, error) {
	var rd io.Reader
	if body != nil {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		// KV metadata goes as given: escaped, each <, > and & would
		// change its bytes and count six against its limit.
		enc.SetEscapeHTML(false)
		if err := enc.Encode(body); err != nil {
			return nil, err
		}
		rd = bytes.NewReader(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
	}
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	var raw []byte
	if err == nil {
		raw, err = io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
		resp.Body.Close()
	}
	if err != nil {
		return nil, c.transportFailure(ctx, rctx, method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, c.refusal(resp, raw)
	}
	if !json.Valid(raw) {
		return nil, fmt.Errorf("%s %s answered %s with something other than JSON: %s (is %s a roost node's admin listener?)",
			method, c.base+path, resp.Status, excerpt(raw), c.base)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("%s %s: unexpected answer: %v", method, c.base+path, err)
		}
	}
	return raw, nil
}

// transportFailure explains a call that got no answer. ctx is the caller's
// context and rctx the request's, which adds --timeout.
func (c *adminClient) transportFailure(ctx, rctx context.Context, method, path string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err() // the caller gave up (Ctrl-C): no hint is needed
	}
	if rctx.Err() != nil {
		return &transportError{fmt.Errorf("%s %s: no answer within %s (raise --timeout, or check the node)", method, c.base+path, c.timeout)}
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return &transportError{fmt.Errorf("cannot reach the admin API at %s: %v (is a roost node running there? point --addr or %s at a node's admin listener)", c.base, op, envAdminAddr)}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	// What a listener that does not speak HTTP gives: a node's gRPC port
	// answers with HTTP/2 frames, its gossip port closes the connection.
	// A node that stops mid-call closes it too.
	portHint := fmt.Sprintf("is %s a node's admin listener? the gRPC and gossip ports do not speak HTTP; point --addr or %s at the admin one", c.base, envAdminAddr)
	if strings.Contains(err.Error(), "malformed HTTP response") {
		return &transportError{fmt.Errorf("%s %s: %v (%s)", method, c.base+path, err, portHint)}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		outcome := ""
		if method != http.MethodGet {
			outcome = ", and the call may or may not have taken effect: look before repeating it"
		}
		return &transportError{fmt.Errorf("%s %s: the connection closed without an answer: %v (the node stopped or restarted%s; or %s)",
			method, c.base+path, err, outcome, portHint)}
	}
	return &transportError{fmt.Errorf("%s %s: %v", method, c.base+path, err)}
}

// refusal turns a non-2xx answer into an apiError: the server's
// {"error": …} message when it sent one, with a hint for the statuses whose
// fix is on this side.
func (c *adminClient) refusal(resp *http.Response, raw []byte) *apiError {
	e := &apiError{status: resp.StatusCode}
	var body struct {
		Error     string `json:"error"`
		Operation string `json:"operation"`
	}
	fromAPI := json.Unmarshal(raw, &body) == nil && body.Error != ""
	if fromAPI {
		e.msg, e.operation = body.Error, body.Operation
	} else {
		e.msg = fmt.Sprintf("%s %s answered %s", resp.Request.Method, resp.Request.URL, resp.Status)
		if x := excerpt(raw); x != "" {
			e.msg += ": " + x
		}
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		switch {
		case c.tokenFrom == "":
			e.hint = "the cluster has an admin token: set " + envAdminToken + " or pass --token"
		case c.token == "":
			e.hint = "the cluster has an admin token and --token is empty: pass the token"
		default:
			e.hint = "the token from " + c.tokenFrom + " was refused: check --token or " + envAdminToken
		}
	case http.StatusNotFound:
		if fromAPI {
			break // the API's own answer (no such key, say): nothing to fix here
		}
		e.hint = "is " + c.base + " a node's admin listener, of a roost with the admin API? point --addr or " + envAdminAddr + " at one"
	}
	return e
}

// excerpt is the start of a body that is not the API's JSON, on one line.
func excerpt(raw []byte) string {
	s := strings.Join(strings.Fields(string(raw)), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// writeJSON prints an answer for -o json: indented, keys sorted, numbers
// exactly as they came, every field kept (also those this roost does not
// know), so that the output is stable and scripts can rely on it.
func writeJSON(w io.Writer, raw json.RawMessage) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// flexible is an answer field whose JSON type the contract leaves open (a
// count or a list; a string or a number), kept as it came and shown as text.
type flexible []byte

func (f *flexible) UnmarshalJSON(b []byte) error {
	*f = append((*f)[:0], b...)
	return nil
}

// String is the value as a table shows it: a string unquoted, a list's
// elements joined by commas, null or absent as "".
func (f flexible) String() string {
	s := strings.TrimSpace(string(f))
	switch {
	case s == "" || s == "null":
		return ""
	case s[0] == '"':
		var str string
		if json.Unmarshal(f, &str) == nil {
			return str
		}
	case s[0] == '[':
		var list []flexible
		if json.Unmarshal(f, &list) == nil {
			parts := make([]string, len(list))
			for i, x := range list {
				parts[i] = x.String()
			}
			return strings.Join(parts, ",")
		}
	}
	return s
}

// count is a number as it came, or a list's length.
func (f flexible) count() string {
	var list []json.RawMessage
	if s := strings.TrimSpace(string(f)); s != "" && s[0] == '[' && json.Unmarshal(f, &list) == nil {
		return strconv.Itoa(len(list))
	}
	return f.String()
}

// The answers, as docs/admin-api.md describes them. -o json prints the
// answer itself, so fields only the tables need are decoded.

type apiStatus struct {
	NodeID      string   `json:"node_id"`
	ClusterID   string   `json:"cluster_id"`
	Mode        string   `json:"mode"`
	Ready       bool     `json:"ready"`
	Reason      string   `json:"reason"`
	MetaLeader  string   `json:"meta_leader"`
	MapVersion  flexible `json:"map_version"`
	Nodes       flexible `json:"nodes"`
	Unreachable []string `json:"unreachable"`
	Shards      flexible `json:"shards"`
	Replicas    flexible `json:"replicas"`
	// UnderReplicated is 0 from a node too old to say.
	UnderReplicated int           `json:"under_replicated"`
	Operation       *apiOperation `json:"operation"`
}

type apiMember struct {
	ID    string `json:"id"`
	State string `json:"state"`
	Alive bool   `json:"alive"`
	// Reachable is nil from a node too old to say.
	Reachable *bool    `json:"reachable"`
	GRPC      string   `json:"grpc"`
	HTTP      string   `json:"http"`
	Admin     string   `json:"admin"`
	Gossip    string   `json:"gossip"`
	Replicas  flexible `json:"replicas"`
	Leaders   flexible `json:"leaders"`
	Meta      string   `json:"meta"`
}

type apiShard struct {
	ID           int              `json:"id"`
	Version      uint64           `json:"version"`
	Replicas     []string         `json:"replicas"`
	Leader       string           `json:"leader"`
	Voters       []string         `json:"voters"`
	NonVoters    []string         `json:"nonvoters"`
	AppliedIndex uint64           `json:"applied_index"`
	ReplicaLag   map[string]int64 `json:"replica_lag"`
}

type apiMove struct {
	Shard   int    `json:"shard"`
	From    string `json:"from"`
	To      string `json:"to"`
	Version uint64 `json:"version"`
}

type apiPlannedMove struct {
	Shard  int      `json:"shard"`
	Add    flexible `json:"add"`
	Remove flexible `json:"remove"`
}

type apiOperation struct {
	ID         flexible `json:"id"`
	Kind       string   `json:"kind"`
	Node       string   `json:"node"` // a drain's
	State      string   `json:"state"`
	Total      int      `json:"total"`
	Done       int      `json:"done"`
	Started    flexible `json:"started"`
	ETASeconds *float64 `json:"eta_seconds"`
	Error      string   `json:"error"`
	Waiting    []struct {
		Shard   flexible `json:"shard"`
		Seconds float64  `json:"seconds"`
		Reason  string   `json:"reason"`
	} `json:"waiting"`
}

// Operation states.
const (
	opRunning = "running"
	opDone    = "done"
	opFailed  = "failed"
)

// finished reports whether op will change no more.
func (op apiOperation) finished() bool { return op.State == opDone || op.State == opFailed }

// name is how messages refer to op: "operation 7 (drain)".
func (op apiOperation) name() string {
	kind := op.Kind
	if kind == "" {
		kind = "operation"
	}
	if op.Node != "" {
		kind += " of " + op.Node
	}
	return fmt.Sprintf("operation %s (%s)", op.ID, kind)
}

// progress is "5/12 moves done (41%)".
func (op apiOperation) progress() string {
	if op.Total <= 0 {
		return fmt.Sprintf("%d moves done", op.Done)
	}
	return fmt.Sprintf("%d/%d moves done (%d%%)", op.Done, op.Total, op.Done*100/op.Total)
}

// stallShown is how long a shard's step must have waited before the
// progress lines name it: most converge within a second or two.
const stallShown = 10 * time.Second

// stall is ", waiting over 40s on shard 5: it has no leader" for the
// shard the running op has waited on longest, if that is at least
// stallShown; "" otherwise. The time is in steps of stallShown, so that
// the progress line changes only that often.
func (op apiOperation) stall() string {
	if op.State != opRunning || len(op.Waiting) == 0 {
		return ""
	}
	w := op.Waiting[0] // the server lists the longest first
	waited := time.Duration(w.Seconds * float64(time.Second)).Truncate(stallShown)
	if waited < stallShown {
		return ""
	}
	return fmt.Sprintf(", waiting over %s on shard %s: %s", waited, w.Shard, w.Reason)
}

// serverETA is the server's estimate of the time left, if it gave one.
func (op apiOperation) serverETA() (time.Duration, bool) {
	if op.ETASeconds == nil || *op.ETASeconds <= 0 {
		return 0, false
	}
	return time.Duration(*op.ETASeconds * float64(time.Second)), true
}

// formatETA rounds an estimate to what a person can use.
func formatETA(d time.Duration) string {
	if d < time.Second {
		return "<1s"
	}
	if d >= time.Hour {
		return d.Round(time.Minute).String()
	}
	return d.Round(time.Second).String()
}

// startedText is when an operation started, as a table shows it: RFC 3339
// to the second, from RFC 3339 or a Unix time in seconds; other text as the
// server sent it.
func startedText(f flexible) string {
	s := f.String()
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.Truncate(time.Second).Format(time.RFC3339)
	}
	if n, err := strconv.ParseFloat(s, 64); err == nil && n > 0 {
		return time.Unix(int64(n), 0).UTC().Format(time.RFC3339)
	}
	return s
}
