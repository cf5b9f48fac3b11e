// Package cli is roost's command line: `roost dev` runs a node for local
// development, `roost node` runs one node of a cluster, `roost bench` puts
// HTTP load on an app, `roost version` says what was built.
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
// Every command is built by a constructor and writes to the writers it is
// given, so tests run the real commands with captured output.
package cli
