// Package counter is the counter from Cloudflare's "Build a counter"
// example, in Go and verbatim in behaviour: a Worker that routes
// ?name=<name> to the Counter object of that name, and a Counter class that
// increments, decrements or reports a number kept in its storage.
//
//	GET /increment?name=A  → Durable Object 'A' count: 1
//	GET /decrement?name=A  → Durable Object 'A' count: 0
//	GET /?name=A           → Durable Object 'A' count: 0
//	GET /                  → Select a Durable Object to contact by using the `name` URL query string parameter. e.g. ?name=A
//
// App returns the counter app, which the stock roost binary serves at the
// root (examples/all); a binary of your own passes it (or your own App) to
// cli.Run.
package counter
