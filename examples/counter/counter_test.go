package counter

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roostdb/roost/durable"
)

// memStorage is an in-memory durable.Storage: enough of the contract for
// the counter (and honest about the rest), with an injectable error.
type memStorage struct {
	mu     sync.Mutex
	m      map[string][]byte
	alarm  time.Time
	hasAl  bool
	failOn string // "get" or "put": fail that call with err
	err    error
	limits durable.Limits
}

func newMemStorage() *memStorage {
	return &memStorage{m: make(map[string][]byte), limits: durable.DefaultLimits()}
}

func (s *memStorage) Get(key string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failOn == "get" {
		return nil, false, s.err
	}
	if err := s.limits.CheckKey(key); err != nil {
		return nil, false, err
	}
	v, ok := s.m[key]
	return bytes.Clone(v), ok, nil
}

func (s *memStorage) GetMany(keys []string) (map[string][]byte, error) {
	if err := s.limits.CheckBatch(len(keys)); err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(keys))
	for _, k := range keys {
		v, ok, err := s.Get(k)
		if err != nil {
			return nil, err
		}
		if ok {
			out[k] = v
		}
	}
	return out, nil
}

func (s *memStorage) Put(key string, value []byte) error {
	return s.PutMany(map[string][]byte{key: value})
}

func (s *memStorage) PutMany(entries map[string][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failOn == "put" {
		return s.err
	}
	if err := s.limits.CheckBatch(len(entries)); err != nil {
		return err
	}
	for k, v := range entries {
		if err := s.limits.CheckEntry(k, v); err != nil {
			return err
		}
	}
	for k, v := range entries {
		s.m[k] = bytes.Clone(v)
	}
	return nil
}

func (s *memStorage) Delete(key string) (bool, error) {
	n, err := s.DeleteMany([]string{key})
	return n == 1, err
}

func (s *memStorage) DeleteMany(keys []string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.limits.CheckBatch(len(keys)); err != nil {
		return 0, err
	}
	n := 0
	for _, k := range keys {
		if _, ok := s.m[k]; ok {
			delete(s.m, k)
			n++
		}
	}
	return n, nil
}

func (s *memStorage) List(opts durable.ListOptions) ([]durable.KV, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []durable.KV
	for k, v := range s.m {
		switch {
		case !strings.HasPrefix(k, opts.Prefix),
			opts.Start != "" && k < opts.Start,
			opts.StartAfter != "" && k <= opts.StartAfter,
			opts.End != "" && k >= opts.End:
			continue
		}
		out = append(out, durable.KV{Key: k, Value: bytes.Clone(v)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	if opts.Reverse {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	if opts.Limit > 0 && len(out) > opts.Limit {
		out = out[:opts.Limit]
	}
	return out, nil
}

func (s *memStorage) DeleteAll() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m = make(map[string][]byte)
	s.hasAl = false
	return nil
}

// Transaction runs fn on a copy and swaps it in on success.
func (s *memStorage) Transaction(fn func(tx durable.Txn) error) error {
	s.mu.Lock()
	cp := &memStorage{m: make(map[string][]byte, len(s.m)), limits: s.limits}
	for k, v := range s.m {
		cp.m[k] = v
	}
	s.mu.Unlock()
	tx := &memTxn{memStorage: cp}
	if err := fn(tx); err != nil {
		return err
	}
	if tx.rolledBack {
		return durable.ErrTransactionRolledBack
	}
	s.mu.Lock()
	s.m = cp.m
	s.mu.Unlock()
	return nil
}

func (s *memStorage) Sync(ctx context.Context) error { return ctx.Err() }

func (s *memStorage) GetAlarm() (time.Time, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.alarm, s.hasAl, nil
}

func (s *memStorage) SetAlarm(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.alarm, s.hasAl = t, true
	return nil
}

func (s *memStorage) DeleteAlarm() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hasAl = false
	return nil
}

// fail makes every later call of kind op ("get" or "put", "" for none) return err.
func (s *memStorage) fail(op string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failOn, s.err = op, err
}

// snapshot returns a copy of the stored keys and values as strings.
func (s *memStorage) snapshot() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.m))
	for k, v := range s.m {
		out[k] = string(v)
	}
	return out
}

// setRaw stores value under key without any check.
func (s *memStorage) setRaw(key string, value []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = value
}

type memTxn struct {
	*memStorage
	rolledBack bool
}

func (t *memTxn) Rollback() { t.rolledBack = true }

var (
	_ durable.Storage = (*memStorage)(nil)
	_ durable.Txn     = (*memTxn)(nil)
)

// nopRuntime runs BlockConcurrencyWhile inline: the fake dispatcher already
// delivers one request at a time per object.
type nopRuntime struct{}

func (nopRuntime) BlockConcurrencyWhile(fn func() error) error { return fn() }
func (nopRuntime) WaitUntil(fn func(ctx context.Context))      { go fn(context.Background()) }
func (nopRuntime) AcceptWebSocket(http.ResponseWriter, *http.Request, []string) (*durable.WebSocket, error) {
	return nil, errors.New("the counter takes no WebSockets")
}
func (nopRuntime) WebSockets(string) []*durable.WebSocket { return nil }

// fakeDispatcher is a one-process runtime: one instance and one memStorage
// per object ID, one request at a time per object (an input gate).
type fakeDispatcher struct {
	classes map[string]durable.Class
	env     *durable.Env
	err     error // if set, Fetch fails with it before reaching any object

	mu      sync.Mutex
	objects map[[32]byte]*fakeInstance
}

type fakeInstance struct {
	mu      sync.Mutex
	obj     durable.Object
	storage *memStorage
}

func (d *fakeDispatcher) instance(class string, id durable.ID) (*fakeInstance, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if inst, ok := d.objects[id.Bytes()]; ok {
		return inst, nil
	}
	newObj, ok := d.classes[class]
	if !ok {
		return nil, errors.New("no class " + class)
	}
	st := newMemStorage()
	inst := &fakeInstance{storage: st}
	inst.obj = newObj(durable.NewState(id, st, nopRuntime{}), d.env)
	d.objects[id.Bytes()] = inst
	return inst, nil
}

func (d *fakeDispatcher) Fetch(ctx context.Context, class string, id durable.ID, req *http.Request) (*http.Response, error) {
	if d.err != nil {
		return nil, d.err
	}
	inst, err := d.instance(class, id)
	if err != nil {
		return nil, err
	}
	inst.mu.Lock()
	defer inst.mu.Unlock()
	rec := httptest.NewRecorder()
	inst.obj.ServeHTTP(rec, req.WithContext(ctx))
	return rec.Result(), nil
}

// storageOf returns the storage of the counter called name (nil if it was never activated).
func (d *fakeDispatcher) storageOf(name string) *memStorage {
	ns, _ := d.env.Namespace(Binding)
	d.mu.Lock()
	defer d.mu.Unlock()
	if inst, ok := d.objects[ns.IDFromName(name).Bytes()]; ok {
		return inst.storage
	}
	return nil
}

// newTestApp serves App() on an httptest server backed by a fakeDispatcher.
func newTestApp(t *testing.T) (*httptest.Server, *fakeDispatcher) {
	t.Helper()
	app := App()
	if err := app.Validate(); err != nil {
		t.Fatalf("App().Validate() = %v", err)
	}
	d := &fakeDispatcher{classes: app.Classes, objects: make(map[[32]byte]*fakeInstance)}
	d.env = durable.NewEnv(durable.EnvConfig{Bindings: app.Bindings, Dispatcher: d})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		app.Worker(w, r, d.env)
	}))
	t.Cleanup(srv.Close)
	return srv, d
}

func get(t *testing.T, srv *httptest.Server, pathAndQuery string) (int, string) {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + pathAndQuery)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

const noNameBody = "Select a Durable Object to contact by using the `name` URL query string parameter. e.g. ?name=A"

func TestApp(t *testing.T) {
	app := App()
	if app.Name != "counter" || app.Worker == nil {
		t.Fatalf("App() = %+v", app)
	}
	if len(app.Classes) != 1 || app.Classes["Counter"] == nil {
		t.Fatalf("App().Classes = %v", app.Classes)
	}
	if len(app.Bindings) != 1 || app.Bindings[0] != (durable.Binding{Name: "COUNTER", ClassName: "Counter"}) {
		t.Fatalf("App().Bindings = %v", app.Bindings)
	}
	if noName != noNameBody {
		t.Fatalf("noName = %q", noName)
	}
}

func TestCounterSequence(t *testing.T) {
	srv, _ := newTestApp(t)
	steps := []struct {
		path string
		want string
	}{
		{"/?name=A", "Durable Object 'A' count: 0"},
		{"/increment?name=A", "Durable Object 'A' count: 1"},
		{"/increment?name=A", "Durable Object 'A' count: 2"},
		{"/?name=A", "Durable Object 'A' count: 2"},
		{"/decrement?name=A", "Durable Object 'A' count: 1"},
		// Another name is another object with its own count.
		{"/increment?name=B", "Durable Object 'B' count: 1"},
		{"/decrement?name=C", "Durable Object 'C' count: -1"},
		{"/decrement?name=C", "Durable Object 'C' count: -2"},
		{"/?name=A", "Durable Object 'A' count: 1"},
		{"/decrement?name=A", "Durable Object 'A' count: 0"},
		{"/decrement?name=A", "Durable Object 'A' count: -1"},
		// Names are case-sensitive.
		{"/?name=a", "Durable Object 'a' count: 0"},
		// Other query parameters are ignored.
		{"/increment?x=1&name=B&y=2", "Durable Object 'B' count: 2"},
	}
	for _, s := range steps {
		code, body := get(t, srv, s.path)
		if code != http.StatusOK || body != s.want {
			t.Fatalf("GET %s = %d %q, want 200 %q", s.path, code, body, s.want)
		}
	}
}

func TestNoName(t *testing.T) {
	srv, d := newTestApp(t)
	for _, p := range []string{"/", "/increment", "/?name=", "/increment?name=", "/?other=A", "/nope"} {
		code, body := get(t, srv, p)
		if code != http.StatusOK || body != noNameBody {
			t.Errorf("GET %s = %d %q, want 200 %q", p, code, body, noNameBody)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.objects) != 0 {
		t.Errorf("%d objects were activated without a name", len(d.objects))
	}
}

func TestUnknownPath(t *testing.T) {
	srv, d := newTestApp(t)
	// The object answers 404 "Not found"; the seed's Worker wraps any body
	// in a new 200 response, so that is what the client sees.
	code, body := get(t, srv, "/nope?name=A")
	if code != http.StatusOK || body != "Durable Object 'A' count: Not found" {
		t.Fatalf("GET /nope?name=A = %d %q", code, body)
	}
	// It returned before writing: the fresh object has no value stored.
	st := d.storageOf("A")
	if st == nil {
		t.Fatal("object A was not activated")
	}
	if m := st.snapshot(); len(m) != 0 {
		t.Fatalf("unknown path wrote storage: %v", m)
	}
	code, body = get(t, srv, "/increment/?name=A")
	if code != http.StatusOK || body != "Durable Object 'A' count: Not found" {
		t.Fatalf("GET /increment/?name=A = %d %q", code, body)
	}
	// A URL's pathname keeps its escapes: /%69ncrement is not /increment.
	code, body = get(t, srv, "/%69ncrement?name=A")
	if code != http.StatusOK || body != "Durable Object 'A' count: Not found" {
		t.Fatalf("GET /%%69ncrement?name=A = %d %q", code, body)
	}
	if code, body = get(t, srv, "/increment?name=A"); body != "Durable Object 'A' count: 1" {
		t.Fatalf("increment after unknown paths = %d %q", code, body)
	}
}

func TestReadWritesBack(t *testing.T) {
	srv, d := newTestApp(t)
	get(t, srv, "/?name=A")
	// As in the seed, "/" stores the value even though it did not change.
	if got := d.storageOf("A").snapshot()["value"]; got != "0" {
		t.Fatalf("stored value after GET / = %q, want 0", got)
	}
}

func TestUTF8Names(t *testing.T) {
	srv, _ := newTestApp(t)
	for _, name := range []string{"Zürich 東京", "a+b", "A&name=B", "'quoted'", "😀"} {
		for i, path := range []string{"/increment", "/increment", "/decrement", "/"} {
			want := []string{"1", "2", "1", "1"}[i]
			u := path + "?name=" + url.QueryEscape(name)
			code, body := get(t, srv, u)
			if w := "Durable Object '" + name + "' count: " + want; code != http.StatusOK || body != w {
				t.Fatalf("GET %s = %d %q, want 200 %q", u, code, body, w)
			}
		}
	}
	// %20 and + both decode to a space: the same object.
	if _, body := get(t, srv, "/?name=Z%C3%BCrich%20%E6%9D%B1%E4%BA%AC"); body != "Durable Object 'Zürich 東京' count: 1" {
		t.Fatalf("%%20 form: %q", body)
	}
}

func TestConcurrentIncrements(t *testing.T) {
	srv, _ := newTestApp(t)
	const n = 50
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := srv.Client().Get(srv.URL + "/increment?name=A")
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if _, body := get(t, srv, "/?name=A"); body != "Durable Object 'A' count: 50" {
		t.Fatalf("after %d concurrent increments: %q", n, body)
	}
}

func TestErrors(t *testing.T) {
	t.Run("storage get fails", func(t *testing.T) {
		srv, d := newTestApp(t)
		get(t, srv, "/?name=A")
		d.storageOf("A").fail("get", durable.ErrCommitFailed)
		// The object answers 500 with the message; the Worker wraps the body.
		code, body := get(t, srv, "/increment?name=A")
		if code != http.StatusOK || !strings.HasPrefix(body, "Durable Object 'A' count: "+durable.ErrCommitFailed.Error()) {
			t.Fatalf("= %d %q", code, body)
		}
	})
	t.Run("storage put fails", func(t *testing.T) {
		srv, d := newTestApp(t)
		get(t, srv, "/increment?name=A")
		st := d.storageOf("A")
		st.fail("put", durable.ErrOverloaded)
		code, body := get(t, srv, "/increment?name=A")
		if code != http.StatusOK || !strings.HasPrefix(body, "Durable Object 'A' count: "+durable.ErrOverloaded.Error()) {
			t.Fatalf("= %d %q", code, body)
		}
		st.fail("", nil)
		if _, body := get(t, srv, "/?name=A"); body != "Durable Object 'A' count: 1" {
			t.Fatalf("failed put changed the value: %q", body)
		}
	})
	t.Run("stored value is not a number", func(t *testing.T) {
		srv, d := newTestApp(t)
		get(t, srv, "/?name=A")
		d.storageOf("A").setRaw("value", []byte("{}"))
		if _, body := get(t, srv, "/increment?name=A"); !strings.Contains(body, `storage key "value"`) {
			t.Fatalf("= %q", body)
		}
	})
	t.Run("fetch throws", func(t *testing.T) {
		srv, d := newTestApp(t)
		d.err = &durable.Error{Message: "exception: boom"}
		code, body := get(t, srv, "/increment?name=A")
		if code != http.StatusInternalServerError || strings.TrimSpace(body) != "exception: boom" {
			t.Fatalf("= %d %q", code, body)
		}
	})
	t.Run("fetch overloaded", func(t *testing.T) {
		srv, d := newTestApp(t)
		d.err = &durable.Error{Message: "overloaded", Overloaded: true}
		resp, err := srv.Client().Get(srv.URL + "/increment?name=A")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("= %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	})
	t.Run("no COUNTER binding", func(t *testing.T) {
		rec := httptest.NewRecorder()
		Worker(rec, httptest.NewRequest("GET", "/increment?name=A", nil), durable.NewEnv(durable.EnvConfig{}))
		if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "COUNTER") {
			t.Fatalf("= %d %q", rec.Code, rec.Body.String())
		}
	})
}

// TestURLAsWorkersParseIt: the seed reads ?name= with URLSearchParams and
// the path with URL.pathname, so the counter reads a URL as the WHATWG URL
// Standard does, not as Go's url.ParseQuery (which drops a pair holding a
// ';' or a bad escape) and not as the raw request path (dot segments).
func TestURLAsWorkersParseIt(t *testing.T) {
	srv, _ := newTestApp(t)
	for _, s := range []struct{ path, want string }{
		// A ';' is part of the value, not a separator.
		{"/increment?name=A;B", "Durable Object 'A;B' count: 1"},
		// A '%' that starts no escape is kept as it is.
		{"/increment?name=%ZZ", "Durable Object '%ZZ' count: 1"},
		{"/increment?name=50%", "Durable Object '50%' count: 1"},
		{"/increment?x=%&name=C", "Durable Object 'C' count: 1"},
		// Bytes that are not UTF-8 decode to U+FFFD, one per maximal subpart.
		{"/increment?name=%FF%E2%9C", "Durable Object '\uFFFD\uFFFD' count: 1"},
		{"/increment?name=%E2%9C%93", "Durable Object '\u2713' count: 1"},
		// The first pair of that name wins, empty or not.
		{"/increment?name=&name=X", noNameBody},
		{"/increment?name=D&name=X", "Durable Object 'D' count: 1"},
		// A pathname has its dot segments removed, "%2e" counting as ".".
		{"/a/../increment?name=E", "Durable Object 'E' count: 1"},
		{"/./increment?name=E", "Durable Object 'E' count: 2"},
		{"/x/%2E%2e/decrement?name=E", "Durable Object 'E' count: 1"},
		{"/increment/..?name=E", "Durable Object 'E' count: 1"},
		{"/increment/.?name=E", "Durable Object 'E' count: Not found"},
		// ... but an empty segment stays.
		{"//increment?name=E", "Durable Object 'E' count: Not found"},
	} {
		code, body := get(t, srv, s.path)
		if code != http.StatusOK || body != s.want {
			t.Errorf("GET %s = %d %q, want 200 %q", s.path, code, body, s.want)
		}
	}
}

func TestSearchParamAndPathname(t *testing.T) {
	for _, s := range []struct {
		query, want string
		found       bool
	}{
		{"", "", false},
		{"name", "", true},
		{"a=1&&name=x+y%20z", "x y z", true},
		{"na%6De=v", "v", true},
		{"name=a=b", "a=b", true},
		{"other=1", "", false},
	} {
		if got, found := searchParam(s.query, "name"); got != s.want || found != s.found {
			t.Errorf("searchParam(%q) = %q, %v; want %q, %v", s.query, got, found, s.want, s.found)
		}
	}
	for in, want := range map[string]string{
		"/": "/", "": "/", "/..": "/", "/a/b/../../..": "/", "/a/.%2E": "/",
		"/a/./b": "/a/b", "/a/": "/a/", "//a": "//a", "/%69ncrement": "/%69ncrement",
	} {
		if got := pathname(in); got != want {
			t.Errorf("pathname(%q) = %q, want %q", in, got, want)
		}
	}
}
