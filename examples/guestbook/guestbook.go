// Package guestbook is the example of docs/writing-objects.md: a Durable
// Object class and a Worker of your own, built into your own binary with
// cli.Run (see cmd/guestbook).
//
// Each book is one object. POST /sign?book=B with a text body adds an entry;
// GET /?book=B lists the entries, oldest first.
package guestbook

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/roostdb/roost/durable"
)

// App is what cmd/guestbook serves: the Worker, the class, the binding.
func App() *durable.App {
	return &durable.App{
		Name:     "guestbook",
		Worker:   Worker,
		Classes:  map[string]durable.Class{"Book": NewBook},
		Bindings: []durable.Binding{{Name: "BOOKS", ClassName: "Book"}},
	}
}

// Worker sends each request to the book it names.
func Worker(w http.ResponseWriter, r *http.Request, env *durable.Env) {
	name := r.URL.Query().Get("book")
	if name == "" {
		http.Error(w, "name a book: ?book=NAME", http.StatusBadRequest)
		return
	}
	books, err := env.Namespace("BOOKS")
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	resp, err := books.Get(books.IDFromName(name)).Fetch(r)
	if err != nil {
		durable.WriteError(w, err) // 500 with the object's message, 503 if overloaded
		return
	}
	durable.WriteResponse(w, resp)
}

// Book is one guest book.
type Book struct {
	storage durable.Storage
}

// NewBook is the class constructor; roost calls it on the first request.
func NewBook(state *durable.State, env *durable.Env) durable.Object {
	return &Book{storage: state.Storage}
}

// maxEntry bounds an entry's text.
const maxEntry = 1 << 10

func (b *Book) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/sign":
		text, err := io.ReadAll(io.LimitReader(r.Body, maxEntry+1))
		if err != nil || len(text) == 0 || len(text) > maxEntry {
			http.Error(w, fmt.Sprintf("an entry is 1 to %d bytes of text", maxEntry), http.StatusBadRequest)
			return
		}
		// The entry and the counter change together or not at all.
		var n int
		err = b.storage.Transaction(func(tx durable.Txn) error {
			n, _, err = durable.GetJSON[int](tx, "count")
			if err != nil {
				return err
			}
			n++
			if err := durable.PutJSON(tx, "count", n); err != nil {
				return err
			}
			return tx.Put(fmt.Sprintf("entry:%08d", n), text)
		})
		if err != nil {
			durable.WriteError(w, err)
			return
		}
		// The response waits for the commit: "entry 1" means it is durable.
		fmt.Fprintf(w, "entry %d\n", n)
	case r.Method == http.MethodGet && r.URL.Path == "/":
		entries, err := b.storage.List(durable.ListOptions{Prefix: "entry:"})
		if err != nil {
			durable.WriteError(w, err)
			return
		}
		var sb strings.Builder
		for _, e := range entries {
			fmt.Fprintf(&sb, "%s: %s\n", strings.TrimPrefix(e.Key, "entry:"), e.Value)
		}
		io.WriteString(w, sb.String())
	default:
		http.Error(w, "Not found", http.StatusNotFound)
	}
}
