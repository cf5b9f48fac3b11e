package counter

import (
	"io"
	"net/http"
	"strconv"

	"github.com/roostdb/roost/durable"
)

// Binding is the name the Worker reaches the Counter namespace by.
const Binding = "COUNTER"

// ClassName is the name the Counter class is registered under.
const ClassName = "Counter"

// noName is the seed's answer to a request without ?name=.
const noName = "Select a Durable Object to contact by using" +
	" the `name` URL query string parameter. e.g. ?name=A"

// App returns the counter app: the Worker, the Counter class and the
// COUNTER binding.
func App() *durable.App {
	return &durable.App{
		Name:     "counter",
		Worker:   Worker,
		Classes:  map[string]durable.Class{ClassName: New},
		Bindings: []durable.Binding{{Name: Binding, ClassName: ClassName}},
	}
}

// Worker routes the request to the Counter named by ?name= and wraps the
// object's answer in a sentence.
func Worker(w http.ResponseWriter, r *http.Request, env *durable.Env) {
	// url.searchParams.get("name"), read as a Worker reads it (url.go).
	name, _ := searchParam(r.URL.RawQuery, "name")
	if name == "" {
		writeText(w, http.StatusOK, noName)
		return
	}
	ns, err := env.Namespace(Binding)
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	// Every unique ID refers to an individual instance of the Counter class
	// that has its own state. IDFromName always returns the same ID when
	// given the same string as input (and called on the same class), but
	// never the same ID for two different strings (or for different classes).
	id := ns.IDFromName(name)
	// Send the request to the Durable Object and wait for its response.
	resp, err := ns.Get(id).Fetch(r)
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	defer resp.Body.Close()
	count, err := io.ReadAll(resp.Body)
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	// As in the seed, the Worker builds a new response from the object's
	// body and does not copy its status: an unknown path gives
	// "Durable Object 'A' count: Not found" with status 200.
	writeText(w, http.StatusOK, "Durable Object '"+name+"' count: "+string(count))
}

// Counter is the Durable Object: one number in storage under "value".
type Counter struct {
	state *durable.State
}

// New constructs a Counter; it is the class registered as "Counter".
func New(state *durable.State, env *durable.Env) durable.Object {
	return &Counter{state: state}
}

// ServeHTTP applies the action the path names and answers the new value.
func (c *Counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Storage is cached in memory by the runtime, so reading the same key on
	// every request is fast. A missing value reads as 0.
	value, _, err := durable.GetJSON[int](c.state.Storage, "value")
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	// The path as a URL's pathname in Workers: escapes kept (/%69ncrement
	// is not /increment), dot segments removed (/a/../increment is).
	switch pathname(r.URL.EscapedPath()) {
	case "/increment":
		value++
	case "/decrement":
		value--
	case "/":
		// Serves the current value.
	default:
		writeText(w, http.StatusNotFound, "Not found")
		return
	}
	// No concurrent request can have changed the value meanwhile: the input
	// gate delivers one request at a time, so read-modify-write is safe. As
	// in the seed, the value is written back even on "/"; the output gate
	// holds this response until the write is committed.
	if err := durable.PutJSON(c.state.Storage, "value", value); err != nil {
		durable.WriteError(w, err)
		return
	}
	writeText(w, http.StatusOK, strconv.Itoa(value))
}

// writeText answers body as text/plain, as a Workers Response built from a string.
func writeText(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain;charset=UTF-8")
	w.WriteHeader(status)
	io.WriteString(w, body)
}
