// Package durable is the SDK that Durable Object authors import.
//
// It is shaped like the Cloudflare Workers API (IDs, namespaces, stubs, state,
// transactional storage) but Go-native: an object is an http.Handler, storage
// values are []byte with generic JSON helpers, and failures are errors.
//
// The package imports nothing else of roost. The runtime (package node)
// implements the small interfaces declared here (Storage, Dispatcher,
// StateRuntime) and constructs State and Env values for each instance; object
// code only ever sees this package.
package durable
