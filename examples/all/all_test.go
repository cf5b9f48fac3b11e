package all

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/roostdb/roost/durable"
)

// The stock app holds every example's classes and bindings, and they
// validate together.
func TestApp(t *testing.T) {
	app := App()
	if err := app.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, class := range []string{"Counter", "ChatRoom", "Book", "JobQueue", "YourDurableObject"} {
		if app.Classes[class] == nil {
			t.Errorf("class %s missing", class)
		}
	}
	if len(app.Bindings) != 5 || len(app.KVNamespaces) != 1 {
		t.Errorf("bindings %v, KV namespaces %v", app.Bindings, app.KVNamespaces)
	}
}

func TestRoute(t *testing.T) {
	record := func(name string) durable.Worker {
		return func(w http.ResponseWriter, r *http.Request, _ *durable.Env) {
			if r.RequestURI != r.URL.RequestURI() {
				t.Errorf("%s got RequestURI %q for URL %q", name, r.RequestURI, r.URL.RequestURI())
			}
			w.Write([]byte(name + " " + r.URL.Path + " " + r.URL.RawQuery))
		}
	}
	worker := route(record("root"), map[string]durable.Worker{"chat": record("chat"), "book": record("book")})
	for _, tt := range []struct {
		target, want string
		code         int
	}{
		{"/increment?name=A", "root /increment name=A", 200},
		{"/?name=A", "root / name=A", 200},
		{"/examples/chat/", "chat / ", 200},
		{"/examples/chat/rooms/lobby/ws?user=ann", "chat /rooms/lobby/ws user=ann", 200},
		{"/examples/book/?book=x", "book / book=x", 200},
		{"/examples/other/x", "root /examples/other/x ", 200}, // not mounted: the counter's
		{"/examples/", "root /examples/ ", 200},
		{"/examplesx/chat/", "root /examplesx/chat/ ", 200},
		{"/examples/chat", "", http.StatusPermanentRedirect},
		{"/examples%2Fchat/x", "root /examples/chat/x ", 200}, // one segment: the root's
		{"/examples/ch%61t/x", "chat /x ", 200},               // %61 is "a": the same path
		{"/examples/chat/caf%C3%A9", "chat /café ", 200},
	} {
		rec := httptest.NewRecorder()
		worker(rec, httptest.NewRequest("GET", tt.target, nil), nil)
		if rec.Code != tt.code || tt.want != "" && rec.Body.String() != tt.want {
			t.Errorf("%s: %d %q, want %d %q", tt.target, rec.Code, rec.Body.String(), tt.code, tt.want)
		}
	}
	// The path below the mount keeps the client's escaping, as at the root.
	escaped := route(nil, map[string]durable.Worker{"chat": func(w http.ResponseWriter, r *http.Request, _ *durable.Env) {
		w.Write([]byte(r.URL.EscapedPath() + " " + r.URL.RequestURI()))
	}})
	rec := httptest.NewRecorder()
	escaped(rec, httptest.NewRequest("GET", "/examples/chat/rooms/a%2Fb/ws?user=ann", nil), nil)
	if got, want := rec.Body.String(), "/rooms/a%2Fb/ws /rooms/a%2Fb/ws?user=ann"; got != want {
		t.Errorf("escaped path below the mount: %q, want %q", got, want)
	}
	rec = httptest.NewRecorder()
	worker(rec, httptest.NewRequest("GET", "/examples/chat?x=1", nil), nil)
	if loc := rec.Header().Get("Location"); loc != "/examples/chat/?x=1" {
		t.Errorf("redirect to %q", loc)
	}
}

func TestMountRefusesClashes(t *testing.T) {
	noop := func(http.ResponseWriter, *http.Request, *durable.Env) {}
	class := func(*durable.State, *durable.Env) durable.Object { return nil }
	root := &durable.App{Worker: noop, Classes: map[string]durable.Class{"A": class}, Bindings: []durable.Binding{{Name: "AS", ClassName: "A"}}}
	for _, tt := range []struct {
		name  string
		mount *durable.App
		want  string
	}{
		{"class", &durable.App{Worker: noop, Classes: map[string]durable.Class{"A": class}}, `class "A" is registered twice`},
		{"binding", &durable.App{Worker: noop, Classes: map[string]durable.Class{"B": class}, Bindings: []durable.Binding{{Name: "AS", ClassName: "B"}}}, `"AS" is declared twice`},
	} {
		if _, err := Mount(root, map[string]*durable.App{"x": tt.mount}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
	if _, err := Mount(root, map[string]*durable.App{"a/b": {Worker: noop}}); err == nil {
		t.Error("a mount name with a slash was taken")
	}
}
