// Package cli is roost's command line: `roost dev` runs a node for local
// development, `roost node` runs one node of a cluster, `roost bench` puts
// HTTP load on an app, `roost certs` makes a development CA, node
// certificates and a gossip key (docs/security.md), `roost version` says
// what was built. The operator commands (status, members, shards,
// rebalance, drain, operation, remove, kv) are clients of a node's admin
// API, docs/admin-api.md (admin.go, admincmd.go, kvcmd.go).
//
// It lives in a package rather than in main so that anyone who writes
// Durable Objects in Go can build their own binary with the same commands:
//
//	func main() { os.Exit(cli.Run(os.Args[1:], myapp.App())) }
//
// Settings come from four places, each overriding the one before: built-in
// defaults, roost.toml, command-line flags (only those actually given), and
// ROOST_* environment variables. Environment variables win because they are
// how container platforms configure a process without rewriting its
// command line or its files. dev and node share that machinery (serve.go):
// each lists its settings, and one table gives every setting its roost.toml
// key, flag and variable.
//
// The operator commands are the exception: they read no roost.toml, and a
// flag given (--addr, --token) wins over its variable (ROOST_ADDR,
// ROOST_ADMIN_TOKEN), because a person types them at a shell where the
// variables may have been exported for another cluster.
//
// A ROOST_* variable that no command reads stops dev, node and the
// operator commands (env.go): a misspelt one would otherwise be ignored
// silently, as a misspelt key in roost.toml would without config's checks.
//
// Every command is built by a constructor and writes to the writers it is
// given, so tests run the real commands with captured output.
package cli
