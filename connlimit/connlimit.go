// Package connlimit bounds how many connections a listener keeps open at
// once: a node's file descriptors are shared with its storage, and a
// client that holds connections open must not take the ones Pebble needs
// (docs/operations.md, "Too many connections"). The node's app and admin
// listeners and gossip's TCP streams use it; what to do with a connection
// over the bound (answer 503, close it unread) is theirs.
//
// It is a leaf package, so that placement and node can share it.
package connlimit

import (
	"net"
	"sync"
	"sync/atomic"
)

// Limit counts connections open at once against a bound. Safe for
// concurrent use.
type Limit struct {
	max  int64
	open atomic.Int64
}

// New returns a Limit of max connections.
func New(max int) *Limit { return &Limit{max: int64(max)} }

// Max is the bound.
func (l *Limit) Max() int64 { return l.max }

// Take counts c in if the bound allows, and returns the connection to use
// instead of c: closing it (once or more) gives its place back. Over the
// bound it returns false and leaves c as it was.
func (l *Limit) Take(c net.Conn) (net.Conn, bool) {
	if l.open.Add(1) > l.max {
		l.open.Add(-1)
		return nil, false
	}
	return &conn{Conn: c, l: l}, true
}

// conn gives its place back once, however often it is closed (an HTTP
// server and a WebSocket it was handed to may both close it).
type conn struct {
	net.Conn
	once sync.Once
	l    *Limit
}

func (c *conn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// NetConn is the connection Take was given, for its socket options (as
// tls.Conn's NetConn).
func (c *conn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the connection, as net/http's server does before
// it closes one whose request it did not read to the end, so that the
// client reads the answer (a 413, say) before any reset: it looks for the
// method on the connection, and the wrapper must not hide the TCP one's.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
