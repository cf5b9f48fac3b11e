// Package lint holds tests that check the shape of the code base rather
// than its behaviour. imports_test.go enforces the import direction of
// DESIGN §1: every roost package may import only the roost packages its
// layer allows, and every package must appear in the table, so a new
// package makes its place in the layering explicit.
//
// The package has no non-test code; run it with
//
//	go test ./internal/lint/
package lint
