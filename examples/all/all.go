// Package all is the app the stock roost binary serves: Cloudflare's
// counter at the root, exactly as the seed example answers, and each other
// example under /examples/NAME/ (the chat room, the guest book, the KV
// reader and the job queue), so that `make run` shows all of them from one
// binary. Each example keeps its own binary too (examples/NAME/cmd), where
// it is served at the root.
package all

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/examples/chat"
	"github.com/roostdb/roost/examples/counter"
	"github.com/roostdb/roost/examples/guestbook"
	"github.com/roostdb/roost/examples/jobqueue"
	"github.com/roostdb/roost/examples/kvreader"
)

// Prefix is where the examples other than the counter are served:
// Prefix + NAME + "/".
const Prefix = "/examples/"

// App returns the counter app with the other examples mounted beside it.
func App() *durable.App {
	app, err := Mount(counter.App(), map[string]*durable.App{
		"chat":      chat.App(),
		"guestbook": guestbook.App(),
		"jobqueue":  jobqueue.App(),
		"kvreader":  kvreader.App(),
	})
	if err != nil {
		panic(err) // the examples are fixed: TestApp keeps them apart
	}
	app.Name = "examples"
	return app
}

// Mount returns root's app serving each app of mounts under Prefix + its
// name + "/" as well, with the path below that as the request's path, and
// every other request as root alone would. The classes, bindings and KV
// namespaces of all of them are served together, so two apps may not use
// one class or binding name.
func Mount(root *durable.App, mounts map[string]*durable.App) (*durable.App, error) {
	out := &durable.App{Name: root.Name, Classes: maps.Clone(root.Classes),
		Bindings: append([]durable.Binding(nil), root.Bindings...), KVNamespaces: append([]durable.KVBinding(nil), root.KVNamespaces...)}
	workers := make(map[string]durable.Worker, len(mounts))
	names := make([]string, 0, len(mounts))
	for name := range mounts {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		app := mounts[name]
		if name == "" || strings.Contains(name, "/") {
			return nil, fmt.Errorf("mount name %q: want one path element", name)
		}
		for class, c := range app.Classes {
			if _, taken := out.Classes[class]; taken {
				return nil, fmt.Errorf("app %q: class %q is registered twice", name, class)
			}
			out.Classes[class] = c
		}
		out.Bindings = append(out.Bindings, app.Bindings...)
		for _, kv := range app.KVNamespaces {
			for _, have := range out.KVNamespaces {
				if have.Binding == kv.Binding {
					return nil, fmt.Errorf("app %q: KV binding %q is declared twice", name, kv.Binding)
				}
			}
			out.KVNamespaces = append(out.KVNamespaces, kv)
		}
		workers[name] = app.Worker
	}
	if err := durable.CheckBindings(out.Bindings, out.Classes); err != nil {
		return nil, err
	}
	out.Worker = route(root.Worker, workers)
	return out, nil
}

// route sends Prefix + NAME + "/..." to the worker mounted as NAME, with
// the path cut to "/...", and everything else to root. It matches the
// path's segments as the client escaped them, each decoded: /examples%2Fchat/x
// is one segment, "examples/chat", of the root's, not the chat's /x.
func route(root durable.Worker, mounts map[string]durable.Worker) durable.Worker {
	top := strings.Trim(Prefix, "/")
	return func(w http.ResponseWriter, r *http.Request, env *durable.Env) {
		segs := strings.SplitN(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/", 3)
		var name, path string
		var err error
		if len(segs) >= 2 && unescaped(segs[0]) == top {
			name = unescaped(segs[1])
			if len(segs) == 3 {
				path, err = url.PathUnescape(segs[2])
			}
		}
		worker, mounted := mounts[name]
		if !mounted || err != nil {
			root(w, r, env)
			return
		}
		if len(segs) == 2 { // the page's relative links need the trailing slash
			to := Prefix + name + "/"
			if r.URL.RawQuery != "" {
				to += "?" + r.URL.RawQuery
			}
			http.Redirect(w, r, to, http.StatusPermanentRedirect)
			return
		}
		inner := *r
		u := *r.URL
		// The path's escaping as the client sent it (a room "a/b" is
		// rooms/a%2Fb), as the worker would see it served at the root.
		u.Path, u.RawPath = "/"+path, "/"+segs[2]
		inner.URL, inner.RequestURI = &u, u.RequestURI()
		worker(w, &inner, env)
	}
}

// unescaped is the path segment seg decoded, or "" if it is not a valid
// escaping.
func unescaped(seg string) string {
	s, err := url.PathUnescape(seg)
	if err != nil {
		return ""
	}
	return s
}
