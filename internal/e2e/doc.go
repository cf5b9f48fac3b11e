// Package e2e holds end-to-end tests that build the roost binary and drive
// it as a user would: real processes, real sockets, real signals.
package e2e
