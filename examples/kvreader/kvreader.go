// Package kvreader is the seed "Use KV from Durable Objects" in Go: a
// Worker sends each room to its Durable Object, and the object writes to a
// KV namespace and reads from it, so that writes to KV are serialized per
// room and one read can be shared by everyone in the room.
//
// GET /?roomId=R → the object of room R puts "some-key" (the room's ID
// and the time of the last visit, metadata {"room": R}) and answers the
// JSON value of "some-other-key": null until something puts it, as in the
// seed. PUT /?roomId=R&key=K with a body puts K (any room may), so
// "some-other-key" can be set. Without roomId: 400.
//
// cmd/kvreader serves it; its default bindings are the seed's
// YOUR_KV_NAMESPACE (id "kvreader") and YOUR_DO_CLASS.
package kvreader

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/roostdb/roost/durable"
)

// App is what cmd/kvreader serves.
func App() *durable.App {
	return &durable.App{
		Name:         "kvreader",
		Worker:       Worker,
		Classes:      map[string]durable.Class{"YourDurableObject": NewRoom},
		Bindings:     []durable.Binding{{Name: "YOUR_DO_CLASS", ClassName: "YourDurableObject"}},
		KVNamespaces: []durable.KVBinding{{Binding: "YOUR_KV_NAMESPACE", ID: "kvreader"}},
	}
}

// Worker sends the request to the room's object.
func Worker(w http.ResponseWriter, r *http.Request, env *durable.Env) {
	room := r.URL.Query().Get("roomId")
	if room == "" {
		http.Error(w, "name a room: ?roomId=ROOM", http.StatusBadRequest)
		return
	}
	ns, err := env.Namespace("YOUR_DO_CLASS")
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	resp, err := ns.Get(ns.IDFromName(room)).Fetch(r)
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	durable.WriteResponse(w, resp)
}

// Room is the object of one room.
type Room struct {
	id  durable.ID
	env *durable.Env
}

// NewRoom is the class constructor.
func NewRoom(state *durable.State, env *durable.Env) durable.Object {
	return &Room{id: state.ID, env: env}
}

// maxPutValue bounds the values PUT stores: a larger body is refused
// whole, never cut short.
const maxPutValue = 64 << 10

func (o *Room) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kv, err := o.env.KV("YOUR_KV_NAMESPACE")
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	ctx := r.Context()
	room := r.URL.Query().Get("roomId")
	if r.Method == http.MethodPut {
		value, err := io.ReadAll(io.LimitReader(r.Body, maxPutValue+1))
		if err == nil && len(value) > maxPutValue {
			http.Error(w, fmt.Sprintf("this example stores values of at most %d bytes", maxPutValue), http.StatusRequestEntityTooLarge)
			return
		}
		if err == nil {
			err = kv.Put(ctx, r.URL.Query().Get("key"), value, durable.KVPutOptions{})
		}
		switch {
		case errors.Is(err, durable.ErrInvalidOption), errors.Is(err, durable.ErrKeyTooLarge), errors.Is(err, durable.ErrValueTooLarge):
			http.Error(w, err.Error(), http.StatusBadRequest)
		case err != nil:
			durable.WriteError(w, err)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
		return
	}
	// Write to KV.
	visit := fmt.Sprintf("%s visited at %s", o.id, time.Now().UTC().Format(time.RFC3339))
	if err := kv.Put(ctx, "some-key", []byte(visit), durable.KVPutOptions{Metadata: map[string]string{"room": room}}); err != nil {
		durable.WriteError(w, err)
		return
	}
	// Fetch from KV.
	val, found, err := kv.Get(ctx, "some-other-key")
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	var out any // null when the key is not there, as Response.json(null)
	if found {
		out = string(val)
	}
	// The bytes of JSON.stringify, as Response.json sends: no HTML
	// escaping, no newline at the end.
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		durable.WriteError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(bytes.TrimSuffix(body.Bytes(), []byte("\n")))
}
