package connlimit

import (
	"net"
	"testing"
)

// TestLimit: connections are taken up to the bound; one closed, however
// often, frees exactly one place; the wrapper keeps CloseWrite.
func TestLimit(t *testing.T) {
	l := New(2)
	pipe := func() net.Conn {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return a
	}
	c1, ok1 := l.Take(pipe())
	_, ok2 := l.Take(pipe())
	if !ok1 || !ok2 {
		t.Fatal("a limit of 2 refused one of the first two")
	}
	if _, ok := l.Take(pipe()); ok {
		t.Fatal("a third connection was taken under a limit of 2")
	}
	if _, ok := c1.(interface{ CloseWrite() error }); !ok {
		t.Fatal("a taken connection hides CloseWrite from net/http")
	}
	c1.Close()
	c1.Close()
	if _, ok := l.Take(pipe()); !ok {
		t.Fatal("a place freed by Close was not given back")
	}
	if _, ok := l.Take(pipe()); ok {
		t.Fatal("closing one connection twice freed two places")
	}
}
