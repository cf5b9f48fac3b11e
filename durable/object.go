package durable

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"
)

// Object is a Durable Object: it receives the requests sent to its stub.
// The runtime delivers them one turn at a time (the input gate) and holds
// each response until the writes it may have seen are committed (the
// output gate), so a read-modify-write in ServeHTTP is safe.
//
// A panic in ServeHTTP is an exception: the caller's Stub.Fetch returns an
// *Error carrying its message, and the instance is discarded.
//
// The request's context ends when ServeHTTP returns, and also when the
// instance is reset while it runs (its node lost the object's shard, a
// commit failed), with the reason as its cause: the object may be running
// elsewhere by then, and writes made after it can no longer commit.
type Object interface {
	http.Handler
}

// Alarmer is implemented by objects that handle alarms set with Storage.SetAlarm.
// A returned error makes the runtime retry with backoff. ctx ends as a
// request's does (Object).
type Alarmer interface {
	Alarm(ctx context.Context, info AlarmInfo) error
}

// AlarmInfo describes one delivery of an alarm.
type AlarmInfo struct {
	ScheduledTime time.Time
	RetryCount    int
	IsRetry       bool
}

// Class constructs an instance of a Durable Object class. It runs inside
// the instance's first turn; it may call state.BlockConcurrencyWhile.
type Class func(state *State, env *Env) Object

// StateRuntime is what the runtime provides behind State; object code does
// not use it directly.
type StateRuntime interface {
	BlockConcurrencyWhile(fn func() error) error
	WaitUntil(fn func(ctx context.Context))
	AcceptWebSocket(w http.ResponseWriter, r *http.Request, tags []string) (*WebSocket, error)
	WebSockets(tag string) []*WebSocket
}

// WebSocketAutoResponder is what a StateRuntime that answers WebSocket
// auto-responses adds (roost's does); apart from StateRuntime, so that a
// runtime written for tests need not have it.
type WebSocketAutoResponder interface {
	// SetWebSocketAutoResponse sets (nil: removes) the object's
	// auto-response; the State has checked it.
	SetWebSocketAutoResponse(a *WebSocketAutoResponse)
	WebSocketAutoResponse() *WebSocketAutoResponse
}

// State is an instance's view of itself: its ID, its storage and its gates.
type State struct {
	// ID is the object's ID as the request that activated this instance
	// carried it: its Name is the name only if that request's ID came
	// from IDFromName, on whichever node (a forwarded request carries the
	// name, checked against the ID) — not for an ID from IDFromString or
	// NewUniqueID, nor for an instance an alarm activated — and it does
	// not change while the instance lives. Keep a name the object needs
	// in its storage.
	ID      ID
	Storage Storage
	rt      StateRuntime
}

// NewState is called by the runtime when it activates an instance.
func NewState(id ID, storage Storage, rt StateRuntime) *State {
	return &State{ID: id, Storage: storage, rt: rt}
}

// BlockConcurrencyWhile runs fn while no other event is delivered to the
// object, even while fn awaits a Stub.Fetch. Use it in a constructor to load
// state before the first request, or in a handler; called from WaitUntil
// work, which runs outside the input gate, it blocks nothing. An error from
// fn resets the object.
func (s *State) BlockConcurrencyWhile(fn func() error) error {
	return s.rt.BlockConcurrencyWhile(fn)
}

// WaitUntil runs fn in the background; the instance is not evicted while fn
// runs, and fn's context ends when the instance is shut down. fn runs
// outside the input gate, alongside the object's turns: a storage write it
// makes joins the batch of the turn running then, and those left are
// committed, between turns, when fn returns. A panic in fn resets the object
// as one in a handler does, once what fn wrote before it is committed.
func (s *State) WaitUntil(fn func(ctx context.Context)) { s.rt.WaitUntil(fn) }

// AcceptWebSocket accepts the WebSocket r asks for, from ServeHTTP: it
// answers the request (101 Switching Protocols; write nothing more to w)
// and returns the socket, which the object keeps as it likes. The object
// must implement WebSocketHandler; the client's messages arrive there.
// Tags (at most 10, each 1 to 256 bytes) let GetWebSockets find it. The
// socket lives as long as this instance; see WebSocket.
//
// The Worker hands the stub's response to its client with WriteResponse.
func (s *State) AcceptWebSocket(w http.ResponseWriter, r *http.Request, tags ...string) (*WebSocket, error) {
	return s.rt.AcceptWebSocket(w, r, tags)
}

// GetWebSockets returns the open sockets accepted with tag, or all of them
// if tag is "", in the order they were accepted.
func (s *State) GetWebSockets(tag string) []*WebSocket { return s.rt.WebSockets(tag) }

// SetWebSocketAutoResponse makes the runtime answer every text message
// equal to a.Request, on any socket of this object, with a.Response by
// itself: the object is not woken (a hibernated one stays asleep), no
// handler runs, and the reply does not wait for the output gate (it shows
// nothing of the object's state, so it may overtake messages the object
// sent that wait for their writes). It holds until it is replaced, or
// removed with nil, while the object lives on this node; an object that
// restarts (a reset, another node taking over its shard) sets it again,
// in its constructor as a rule. Each of the two strings may be
// MaxWebSocketAutoResponse bytes; a longer one, or an empty request, is
// an ErrInvalidOption and changes nothing.
//
// A runtime that is not a WebSocketAutoResponder (a test's) refuses it
// with ErrNoAutoResponse.
func (s *State) SetWebSocketAutoResponse(a *WebSocketAutoResponse) error {
	r, ok := s.rt.(WebSocketAutoResponder)
	if !ok {
		return ErrNoAutoResponse
	}
	if a != nil {
		if err := a.check(); err != nil {
			return err
		}
		a = &WebSocketAutoResponse{Request: a.Request, Response: a.Response}
	}
	r.SetWebSocketAutoResponse(a)
	return nil
}

// WebSocketAutoResponse returns the auto-response set, or nil.
func (s *State) WebSocketAutoResponse() *WebSocketAutoResponse {
	r, ok := s.rt.(WebSocketAutoResponder)
	if !ok {
		return nil
	}
	a := r.WebSocketAutoResponse()
	if a == nil {
		return nil
	}
	return &WebSocketAutoResponse{Request: a.Request, Response: a.Response}
}

// WebSocketAutoResponseTimestamp returns when the runtime last answered
// ws's auto-response request; false if it never did.
func (s *State) WebSocketAutoResponseTimestamp(ws *WebSocket) (time.Time, bool) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.autoResponded, !ws.autoResponded.IsZero()
}

// Dispatcher delivers a request to an object; the runtime implements it.
type Dispatcher interface {
	// Fetch sends req to the object id of class (a namespace's class name)
	// and returns its response, or an error (an *Error for an exception).
	Fetch(ctx context.Context, class string, id ID, req *http.Request) (*http.Response, error)
}

// Binding names a Durable Object namespace as wrangler's
// [[durable_objects.bindings]] does: Name is what code passes to
// Env.Namespace, ClassName the class registered in App.Classes.
type Binding struct {
	Name      string
	ClassName string
}

// Env is what Workers and objects reach the outside through: namespaces by
// binding name, and vars.
type Env struct {
	namespaces map[string]*Namespace
	kv         map[string]kvBound // by binding name
	kvNS       *Namespace         // of KVClassName, reached by every KV binding
	vars       map[string]string
}

// EnvConfig is what the runtime builds an Env from.
type EnvConfig struct {
	Bindings     []Binding
	KVNamespaces []KVBinding
	Keys         map[string]NamespaceKey // class name → key; missing classes get DeriveNamespaceKey(class, "")
	Vars         map[string]string
	Dispatcher   Dispatcher
}

// KVBinding binds a KV namespace ([[kv_namespaces]]): bindings with the
// same ID share their keys. Objects is how many objects keep the
// namespace's keys (0 means 1, at most KVMaxObjects); it is fixed when the
// namespace is first used (see KVNamespace).
type KVBinding struct {
	Binding string
	ID      string
	Objects int
}

// kvBound is a KV binding and the IDs of the objects that keep its
// namespace, derived once rather than at every Env.KV.
type kvBound struct {
	KVBinding
	objects []ID
	check   *kvObjectsCheck // shared by every Env of the binding
}

// NewEnv builds an Env; the runtime calls it.
func NewEnv(cfg EnvConfig) *Env {
	e := &Env{namespaces: make(map[string]*Namespace, len(cfg.Bindings)), kv: make(map[string]kvBound, len(cfg.KVNamespaces)), vars: cfg.Vars}
	namespace := func(binding, class string) *Namespace {
		key, ok := cfg.Keys[class]
		if !ok {
			key = DeriveNamespaceKey(class, "")
		}
		return &Namespace{binding: binding, class: class, ids: NewIDKeyring(key), d: cfg.Dispatcher}
	}
	for _, b := range cfg.Bindings {
		e.namespaces[b.Name] = namespace(b.Name, b.ClassName)
	}
	e.kvNS = namespace("", KVClassName)
	for _, b := range cfg.KVNamespaces {
		e.kv[b.Binding] = kvBound{KVBinding: b, objects: kvObjectIDs(e.kvNS, b), check: new(kvObjectsCheck)}
	}
	return e
}

// WithDispatcher returns a copy of e whose stubs send through d. The runtime
// gives each instance its own, so a call out of an object opens that
// object's input gate while it waits.
func (e *Env) WithDispatcher(d Dispatcher) *Env {
	c := &Env{namespaces: make(map[string]*Namespace, len(e.namespaces)), kv: e.kv, vars: e.vars}
	for name, ns := range e.namespaces {
		n := *ns
		n.d = d
		c.namespaces[name] = &n
	}
	kvNS := *e.kvNS
	kvNS.d = d
	c.kvNS = &kvNS
	return c
}

// KV returns the KV namespace bound to binding; an unknown binding wraps
// ErrUnknownBinding and lists the known ones.
func (e *Env) KV(binding string) (*KVNamespace, error) {
	b, ok := e.kv[binding]
	if !ok {
		known := make([]string, 0, len(e.kv))
		for name := range e.kv {
			known = append(known, name)
		}
		sort.Strings(known)
		return nil, fmt.Errorf("%w: no KV namespace is bound to %q (bound: %v)", ErrUnknownBinding, binding, known)
	}
	stubs := make([]*Stub, len(b.objects))
	for i, id := range b.objects {
		stubs[i] = e.kvNS.Get(id)
	}
	return &KVNamespace{binding: b.Binding, id: b.ID, stubs: stubs, check: b.check}, nil
}

// Namespace returns the Durable Object namespace bound to binding; an
// unknown binding wraps ErrUnknownBinding and lists the known ones.
func (e *Env) Namespace(binding string) (*Namespace, error) {
	if ns, ok := e.namespaces[binding]; ok {
		return ns, nil
	}
	known := make([]string, 0, len(e.namespaces))
	for name := range e.namespaces {
		known = append(known, name)
	}
	sort.Strings(known)
	return nil, fmt.Errorf("%w: no Durable Object namespace is bound to %q (bound: %v)", ErrUnknownBinding, binding, known)
}

// Var returns the [vars] value of name.
func (e *Env) Var(name string) (string, bool) {
	v, ok := e.vars[name]
	return v, ok
}

// Namespace is a Durable Object namespace: one class, its IDs and stubs.
type Namespace struct {
	binding string
	class   string
	ids     *IDKeyring // shared by the copies WithDispatcher makes
	d       Dispatcher
}

// Binding returns the binding name the namespace was reached by.
func (n *Namespace) Binding() string { return n.binding }

// ClassName returns the class the namespace serves.
func (n *Namespace) ClassName() string { return n.class }

// IDFromName derives the ID of the object called name.
func (n *Namespace) IDFromName(name string) ID { return n.ids.FromName(name) }

// NewUniqueID returns a fresh random ID.
func (n *Namespace) NewUniqueID() ID { return n.ids.NewUnique() }

// IDFromString parses an ID made by this namespace (ErrInvalidID, ErrWrongNamespace).
func (n *Namespace) IDFromString(s string) (ID, error) {
	id, err := n.ids.Parse(s)
	if err != nil {
		return ID{}, fmt.Errorf("namespace %s: %w", n.binding, err)
	}
	return id, nil
}

// Get returns the stub of the object id.
func (n *Namespace) Get(id ID) *Stub { return &Stub{ns: n, id: id} }

// GetByName returns the stub of the object called name: Get(IDFromName(name)),
// as Cloudflare's getByName.
func (n *Namespace) GetByName(name string) *Stub { return n.Get(n.IDFromName(name)) }

// Stub sends requests to one object, wherever in the cluster it lives.
type Stub struct {
	ns *Namespace
	id ID
}

// ID returns the ID of the object the stub reaches.
func (s *Stub) ID() ID { return s.id }

// Fetch sends req to the object and returns its response. The request's
// context bounds the call. An exception in the object comes back as an
// error (an *Error with Retryable/Overloaded set where they apply).
func (s *Stub) Fetch(req *http.Request) (*http.Response, error) {
	return s.ns.d.Fetch(req.Context(), s.ns.class, s.id, req)
}

// Worker is the stateless entry point that receives every request to the
// app listener, like a Workers fetch handler.
type Worker func(w http.ResponseWriter, r *http.Request, env *Env)

// App is what a roost binary serves: a Worker, the classes it can run, and
// the bindings used when roost.toml declares none (Durable Object and KV
// bindings each).
type App struct {
	Name         string
	Worker       Worker
	Classes      map[string]Class
	Bindings     []Binding
	KVNamespaces []KVBinding
}

// Validate checks that the app has a Worker and that every binding names a registered class.
func (a *App) Validate() error {
	if a == nil || a.Worker == nil {
		return fmt.Errorf("app has no Worker")
	}
	if _, ok := a.Classes[KVClassName]; ok {
		return fmt.Errorf("class name %q is the runtime's own (it keeps the KV namespaces); give the class another name", KVClassName)
	}
	return CheckBindings(a.Bindings, a.Classes)
}

// CheckBindingName refuses a binding name that is not a JavaScript
// identifier (letters, digits, '_' and '$', not starting with a digit), as
// Workers' bindings are: it becomes a path element of the admin API and a
// name in config files and logs, where "." or "a/b" would be misread.
func CheckBindingName(name string) error {
	if name == "" {
		return errors.New("a binding needs a name")
	}
	for i, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '$' || i > 0 && c >= '0' && c <= '9') {
			return fmt.Errorf("binding name %q: use letters, digits, '_' and '$', not starting with a digit (%q at offset %d)", name, c, i)
		}
	}
	return nil
}

// CheckBindings checks that binding names are well formed and unique and
// name registered classes.
func CheckBindings(bindings []Binding, classes map[string]Class) error {
	seen := make(map[string]bool, len(bindings))
	for _, b := range bindings {
		if b.Name == "" {
			return fmt.Errorf("durable object binding for class %q has no name", b.ClassName)
		}
		if err := CheckBindingName(b.Name); err != nil {
			return fmt.Errorf("durable object binding for class %q: %w", b.ClassName, err)
		}
		if seen[b.Name] {
			return fmt.Errorf("durable object binding %q is declared twice", b.Name)
		}
		seen[b.Name] = true
		if _, ok := classes[b.ClassName]; !ok {
			known := make([]string, 0, len(classes))
			for c := range classes {
				known = append(known, c)
			}
			sort.Strings(known)
			return fmt.Errorf("durable object binding %q: class %q is not registered in this binary (registered: %v)", b.Name, b.ClassName, known)
		}
	}
	return nil
}
