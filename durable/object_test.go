package durable

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func nopClass(state *State, env *Env) Object {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
}

func TestEnvNamespaceUnknownBinding(t *testing.T) {
	env := NewEnv(EnvConfig{Bindings: []Binding{
		{Name: "ROOMS", ClassName: "Room"},
		{Name: "COUNTER", ClassName: "Counter"},
	}})
	if ns, err := env.Namespace("COUNTER"); err != nil || ns.Binding() != "COUNTER" || ns.ClassName() != "Counter" {
		t.Fatalf("Namespace(COUNTER) = %v, %v", ns, err)
	}
	ns, err := env.Namespace("COUNTERS")
	if ns != nil || !errors.Is(err, ErrUnknownBinding) {
		t.Fatalf("Namespace(COUNTERS) = %v, %v; want ErrUnknownBinding", ns, err)
	}
	msg := err.Error()
	for _, want := range []string{`"COUNTERS"`, "COUNTER", "ROOMS"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %s", msg, want)
		}
	}
	// Known bindings are listed sorted, so the message is stable.
	if strings.Index(msg, "[COUNTER ROOMS]") < 0 {
		t.Errorf("error %q does not list the bindings sorted", msg)
	}
	// Binding names are case-sensitive, as in wrangler.
	if _, err := env.Namespace("counter"); !errors.Is(err, ErrUnknownBinding) {
		t.Errorf("Namespace(counter) = %v", err)
	}

	// An Env with no bindings says so rather than panicking.
	_, err = NewEnv(EnvConfig{}).Namespace("COUNTER")
	if !errors.Is(err, ErrUnknownBinding) || !strings.Contains(err.Error(), "[]") {
		t.Fatalf("empty Env: %v", err)
	}
}

func TestEnvVars(t *testing.T) {
	env := NewEnv(EnvConfig{Vars: map[string]string{"GREETING": "hi", "EMPTY": ""}})
	if v, ok := env.Var("GREETING"); !ok || v != "hi" {
		t.Errorf("Var(GREETING) = %q, %v", v, ok)
	}
	if v, ok := env.Var("EMPTY"); !ok || v != "" {
		t.Errorf("Var(EMPTY) = %q, %v", v, ok)
	}
	if _, ok := env.Var("MISSING"); ok {
		t.Error("Var(MISSING) exists")
	}
	if _, ok := NewEnv(EnvConfig{}).Var("X"); ok {
		t.Error("Var on an Env without vars exists")
	}
}

func TestCheckBindings(t *testing.T) {
	classes := map[string]Class{"Counter": nopClass, "Room": nopClass}
	tests := []struct {
		desc     string
		bindings []Binding
		wantErr  []string // substrings of the error; nil means no error
	}{
		{"none", nil, nil},
		{"one", []Binding{{"COUNTER", "Counter"}}, nil},
		{"two bindings of one class", []Binding{{"A", "Counter"}, {"B", "Counter"}}, nil},
		{"two classes", []Binding{{"COUNTER", "Counter"}, {"ROOMS", "Room"}}, nil},
		{"empty name", []Binding{{"", "Counter"}}, []string{"no name", `"Counter"`}},
		{"duplicate name", []Binding{{"COUNTER", "Counter"}, {"COUNTER", "Room"}}, []string{`"COUNTER"`, "twice"}},
		{"unregistered class", []Binding{{"COUNTER", "Countr"}}, []string{`"COUNTER"`, `"Countr"`, "not registered", "[Counter Room]"}},
		{"empty class", []Binding{{"COUNTER", ""}}, []string{"not registered"}},
		{"class name case", []Binding{{"COUNTER", "counter"}}, []string{`"counter"`, "not registered"}},
		{"identifier with $ and digits", []Binding{{"$my_Counter2", "Counter"}}, nil},
		{"name of dots", []Binding{{"..", "Counter"}}, []string{`binding name ".."`, "'.' at offset 0"}},
		{"name with a slash", []Binding{{"A/B", "Counter"}}, []string{`binding name "A/B"`, "'/' at offset 1"}},
		{"name with a hyphen", []Binding{{"MY-COUNTER", "Counter"}}, []string{"'-' at offset 2"}},
		{"name starting with a digit", []Binding{{"1COUNTER", "Counter"}}, []string{"not starting with a digit"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			err := CheckBindings(tc.bindings, classes)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("CheckBindings = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("CheckBindings accepted bad bindings")
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
	if err := CheckBindings([]Binding{{"COUNTER", "Counter"}}, nil); err == nil {
		t.Error("CheckBindings with no classes accepted a binding")
	}
}

func TestAppValidate(t *testing.T) {
	worker := func(w http.ResponseWriter, r *http.Request, env *Env) {}
	classes := map[string]Class{"Counter": nopClass}
	var nilApp *App
	if err := nilApp.Validate(); err == nil {
		t.Error("nil app is valid")
	}
	if err := (&App{Classes: classes}).Validate(); err == nil {
		t.Error("app without Worker is valid")
	}
	ok := &App{Name: "x", Worker: worker, Classes: classes, Bindings: []Binding{{"COUNTER", "Counter"}}}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid app: %v", err)
	}
	bad := &App{Name: "x", Worker: worker, Classes: classes, Bindings: []Binding{{"COUNTER", "Missing"}}}
	if err := bad.Validate(); err == nil {
		t.Error("app with a binding to a missing class is valid")
	}
	taken := &App{Name: "x", Worker: worker, Classes: map[string]Class{KVClassName: nopClass}}
	if err := taken.Validate(); err == nil || !strings.Contains(err.Error(), "runtime's own") {
		t.Errorf("app with a class named %s: %v", KVClassName, err)
	}
}

// recordingDispatcher records what Stub.Fetch hands the runtime.
type recordingDispatcher struct {
	tag   string
	class string
	id    ID
	ctx   context.Context
}

func (d *recordingDispatcher) Fetch(ctx context.Context, class string, id ID, req *http.Request) (*http.Response, error) {
	d.class, d.id, d.ctx = class, id, ctx
	rec := httptest.NewRecorder()
	io.WriteString(rec, d.tag)
	return rec.Result(), nil
}

func TestStubFetchAndWithDispatcher(t *testing.T) {
	d1 := &recordingDispatcher{tag: "d1"}
	env := NewEnv(EnvConfig{Bindings: []Binding{{"COUNTER", "Counter"}}, Dispatcher: d1})
	ns, _ := env.Namespace("COUNTER")
	id := ns.IDFromName("A")
	stub := ns.Get(id)
	if !stub.ID().Equal(id) {
		t.Fatalf("stub.ID() = %s", stub.ID())
	}
	if byName := ns.GetByName("A"); !byName.ID().Equal(id) {
		t.Fatalf("GetByName(A) reaches %s, IDFromName(A) is %s", byName.ID(), id)
	}
	if ns.GetByName("B").ID().Equal(id) {
		t.Fatal("GetByName(B) reaches A's object")
	}
	type ctxKey struct{}
	ctx := context.WithValue(context.Background(), ctxKey{}, "v")
	req := httptest.NewRequest("GET", "http://do/increment", nil).WithContext(ctx)
	resp, err := stub.Fetch(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "d1" || d1.class != "Counter" || !d1.id.Equal(id) {
		t.Fatalf("Fetch went to %q class %q id %s", body, d1.class, d1.id)
	}
	if d1.ctx.Value(ctxKey{}) != "v" {
		t.Fatal("Fetch did not pass the request's context")
	}

	// WithDispatcher: a copy that sends elsewhere, same IDs, original untouched.
	d2 := &recordingDispatcher{tag: "d2"}
	env2 := env.WithDispatcher(d2)
	ns2, err := env2.Namespace("COUNTER")
	if err != nil {
		t.Fatal(err)
	}
	if !ns2.IDFromName("A").Equal(id) {
		t.Fatal("WithDispatcher changed the namespace key")
	}
	resp, _ = ns2.Get(id).Fetch(req)
	body, _ = io.ReadAll(resp.Body)
	if string(body) != "d2" {
		t.Fatalf("WithDispatcher copy sent to %q", body)
	}
	resp, _ = ns.Get(id).Fetch(req)
	body, _ = io.ReadAll(resp.Body)
	if string(body) != "d1" {
		t.Fatalf("original Env now sends to %q", body)
	}
	if _, err := env2.Namespace("NOPE"); !errors.Is(err, ErrUnknownBinding) {
		t.Fatalf("WithDispatcher copy: %v", err)
	}
}
