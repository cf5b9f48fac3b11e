package chat

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/roostdb/roost/durable"
)

// roomRecorder is a Dispatcher that answers 200 and records which object
// each request was sent to.
type roomRecorder struct{ got []durable.ID }

func (d *roomRecorder) Fetch(_ context.Context, _ string, id durable.ID, _ *http.Request) (*http.Response, error) {
	d.got = append(d.got, id)
	rec := httptest.NewRecorder()
	rec.WriteHeader(http.StatusOK)
	return rec.Result(), nil
}

// The Worker takes the room from the path as the client escaped it (the
// page sends encodeURIComponent(room)), so a room with a slash can be
// joined; a name over MaxRoom bytes is refused.
func TestWorkerRoomNames(t *testing.T) {
	d := &roomRecorder{}
	app := App()
	env := durable.NewEnv(durable.EnvConfig{Bindings: app.Bindings, Dispatcher: d})
	ns, err := env.Namespace(Binding)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		room string // "" = refused with 404
	}{
		{"/rooms/lobby/messages", "lobby"},
		{"/rooms/a%2Fb/messages", "a/b"},
		{"/rooms/caf%C3%A9/ws?user=x", "café"},
		{"/rooms/" + strings.Repeat("r", MaxRoom) + "/messages", strings.Repeat("r", MaxRoom)},
		{"/rooms/" + strings.Repeat("r", MaxRoom+1) + "/messages", ""},
		{"/rooms//messages", ""},
		{"/rooms/a/b/messages", ""},
	} {
		d.got = nil
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "http://chat"+tt.path, nil)
		app.Worker(rec, req, env)
		switch {
		case tt.room == "" && (rec.Code != http.StatusNotFound || len(d.got) != 0):
			t.Errorf("%s: %d, %d objects asked; want 404 and none", tt.path, rec.Code, len(d.got))
		case tt.room != "" && (rec.Code != http.StatusOK || len(d.got) != 1 || !d.got[0].Equal(ns.IDFromName(tt.room))):
			t.Errorf("%s: %d, objects %v; want room %q's", tt.path, rec.Code, d.got, tt.room)
		}
	}
}
