package durable

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// WebSocket limits, Cloudflare's.
const (
	// MaxWebSocketTags is how many tags AcceptWebSocket takes.
	MaxWebSocketTags = 10
	// MaxWebSocketTagLength is the longest tag, in bytes.
	MaxWebSocketTagLength = 256
	// MaxWebSocketMessage is the largest message a client may send, in
	// bytes; a larger one closes its socket with code 1009.
	MaxWebSocketMessage = 1 << 20
	// MaxWebSocketAutoResponse is the longest request and the longest
	// response of a WebSocketAutoResponse, in bytes.
	MaxWebSocketAutoResponse = 2048
)

var (
	// ErrNotWebSocketUpgrade is returned by AcceptWebSocket for a request
	// that does not ask for a WebSocket.
	ErrNotWebSocketUpgrade = errors.New("not a WebSocket upgrade request")
	// ErrWebSocketClosed is returned by Send on a socket that is closed or
	// closing.
	ErrWebSocketClosed = errors.New("WebSocket is closed")
	// ErrInvalidWebSocketTags is returned by AcceptWebSocket for too many
	// or too long tags.
	ErrInvalidWebSocketTags = errors.New("invalid WebSocket tags")
	// ErrNoAutoResponse is returned by State.SetWebSocketAutoResponse when
	// the runtime behind the State answers no auto-responses (a test's).
	ErrNoAutoResponse = errors.New("this runtime answers no WebSocket auto-responses")
)

// WebSocketMessage is one message: a text frame (Text; Data is UTF-8) or
// a binary one.
type WebSocketMessage struct {
	Text bool
	Data []byte
}

// WebSocketHandler is implemented by objects that accept WebSockets: the
// runtime delivers each message a client sends as a turn of its own, like
// a request (one event at a time; writes coalesced and committed; the
// messages the turn sends leave once its writes are durable). An error
// closes that socket with code 1011; a panic resets the object, which
// closes all of its sockets.
type WebSocketHandler interface {
	WebSocketMessage(ctx context.Context, ws *WebSocket, msg WebSocketMessage) error
}

// WebSocketCloseHandler is implemented by objects that want to know when a
// socket closes: wasClean is true when the client sent a close frame
// (code and reason are its), false when the connection was lost (code
// 1006). It is not called for sockets the object closed itself, nor when
// the object is reset or the node stops.
type WebSocketCloseHandler interface {
	WebSocketClose(ctx context.Context, ws *WebSocket, code int, reason string, wasClean bool) error
}

// WebSocketErrorHandler is implemented by objects that want to know why a
// socket failed (a protocol error, a message over MaxWebSocketMessage).
// WebSocketClose follows with wasClean false.
type WebSocketErrorHandler interface {
	WebSocketError(ctx context.Context, ws *WebSocket, err error) error
}

// WebSocketConn is what the runtime provides behind a WebSocket; object
// code does not use it directly.
type WebSocketConn interface {
	Send(msg WebSocketMessage) error
	Close(code int, reason string) error
}

// WebSocket is the server end of a WebSocket an object accepted with
// State.AcceptWebSocket. It stays open while the object lives on this
// node: an object reset, a leadership move or a node stop closes it with
// code 1012 (service restart), and the client is expected to reconnect, as
// with Cloudflare's objects.
type WebSocket struct {
	conn WebSocketConn
	tags []string

	mu            sync.Mutex
	attachment    any
	autoResponded time.Time // when the runtime last sent the auto-response; zero: never
}

// NewWebSocket is called by the runtime when an object accepts a socket.
func NewWebSocket(conn WebSocketConn, tags []string) *WebSocket {
	return &WebSocket{conn: conn, tags: tags}
}

// Send sends msg. Like a response, it leaves once every write the object
// made before it is durable, in the order sent. It fails with
// ErrWebSocketClosed once the socket is closing.
func (ws *WebSocket) Send(msg WebSocketMessage) error { return ws.conn.Send(msg) }

// SendText sends a text message.
func (ws *WebSocket) SendText(s string) error {
	return ws.Send(WebSocketMessage{Text: true, Data: []byte(s)})
}

// SendBinary sends a binary message.
func (ws *WebSocket) SendBinary(b []byte) error {
	return ws.Send(WebSocketMessage{Data: b})
}

// Close starts the closing handshake with code and reason (at most 123
// bytes), after the messages already sent.
func (ws *WebSocket) Close(code int, reason string) error { return ws.conn.Close(code, reason) }

// Tags returns the tags the socket was accepted with.
func (ws *WebSocket) Tags() []string { return append([]string(nil), ws.tags...) }

// HasTag reports whether the socket was accepted with tag.
func (ws *WebSocket) HasTag(tag string) bool {
	for _, t := range ws.tags {
		if t == tag {
			return true
		}
	}
	return false
}

// SetAttachment keeps v with the socket (a user name, say), for as long as
// the socket is open. Cloudflare serializes attachments to survive
// hibernation; roost keeps a hibernated object's sockets in the node's
// memory, so any value will do.
func (ws *WebSocket) SetAttachment(v any) {
	ws.mu.Lock()
	ws.attachment = v
	ws.mu.Unlock()
}

// Attachment returns what SetAttachment kept, or nil.
func (ws *WebSocket) Attachment() any {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.attachment
}

// RecordAutoResponse notes that the runtime answered the socket's
// auto-response request at t (State.WebSocketAutoResponseTimestamp).
func (ws *WebSocket) RecordAutoResponse(t time.Time) {
	ws.mu.Lock()
	ws.autoResponded = t
	ws.mu.Unlock()
}

// WebSocketAutoResponse is a message and the reply the runtime sends to it
// by itself, without waking the object: a keep-alive ping a client sends
// every few seconds then costs the object nothing, and a hibernated one
// stays asleep (State.SetWebSocketAutoResponse).
type WebSocketAutoResponse struct {
	Request  string // a text message equal to it is answered
	Response string // with this text message
}

// check returns an error wrapping ErrInvalidOption if a breaks a limit.
func (a *WebSocketAutoResponse) check() error {
	switch {
	case a.Request == "":
		return fmt.Errorf("%w: a WebSocket auto-response needs a request", ErrInvalidOption)
	case len(a.Request) > MaxWebSocketAutoResponse || len(a.Response) > MaxWebSocketAutoResponse:
		return fmt.Errorf("%w: a WebSocket auto-response's request and response may be %d bytes each (%d and %d)", ErrInvalidOption, MaxWebSocketAutoResponse, len(a.Request), len(a.Response))
	}
	return nil
}

// CheckWebSocketTags returns an error wrapping ErrInvalidWebSocketTags if
// tags break Cloudflare's limits.
func CheckWebSocketTags(tags []string) error {
	if len(tags) > MaxWebSocketTags {
		return fmt.Errorf("%w: %d tags, at most %d", ErrInvalidWebSocketTags, len(tags), MaxWebSocketTags)
	}
	for _, t := range tags {
		if t == "" || len(t) > MaxWebSocketTagLength {
			return fmt.Errorf("%w: a tag must be 1 to %d bytes, got %d", ErrInvalidWebSocketTags, MaxWebSocketTagLength, len(t))
		}
	}
	return nil
}

// IsWebSocketUpgrade reports whether r asks to open a WebSocket.
func IsWebSocketUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// WriteResponse writes resp, an answer from Stub.Fetch, as the Worker's
// response, and closes its body. When the object accepted a WebSocket
// (101 Switching Protocols, whose Body is the connection to the object),
// it takes over the client's connection and carries bytes both ways until
// either side closes; it returns then.
func WriteResponse(w http.ResponseWriter, resp *http.Response) error {
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, err := io.Copy(w, resp.Body)
		return err
	}
	upstream, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		err := errors.New("a 101 response from the object without a connection")
		WriteError(w, err)
		return err
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		WriteError(w, fmt.Errorf("taking over the connection for a WebSocket: %w", err))
		return err
	}
	defer conn.Close()
	// The server's read and write deadlines were for one request.
	_ = conn.SetDeadline(time.Time{})
	head := &http.Response{StatusCode: resp.StatusCode, ProtoMajor: 1, ProtoMinor: 1, Header: resp.Header}
	if err := head.Write(brw); err != nil {
		return err
	}
	if err := brw.Flush(); err != nil {
		return err
	}
	return splice(conn, brw.Reader, upstream)
}

// spliceStall bounds how long one write to a WebSocket client may wait for
// the client to take it. The object drops a socket whose client takes no
// message for 5 s; without a bound here, the splice of a client that
// stopped reading (and never closed) stayed blocked in the write forever,
// holding the connection and, for a forwarded socket, the tunnel to the
// object's node, though the object had dropped the socket.
const spliceStall = 10 * time.Second

// stallLimited is w, whose every write fails once it has waited spliceStall
// for the client, if w is a connection with deadlines.
func stallLimited(w io.Writer) io.Writer {
	if d, ok := w.(interface{ SetWriteDeadline(time.Time) error }); ok {
		return deadlineWriter{w, d}
	}
	return w
}

type deadlineWriter struct {
	w io.Writer
	d interface{ SetWriteDeadline(time.Time) error }
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	_ = d.d.SetWriteDeadline(time.Now().Add(spliceStall))
	return d.w.Write(p)
}

// splice carries bytes between a client connection (bytes it already
// buffered first) and upstream until either direction ends, then closes
// both.
func splice(client io.ReadWriteCloser, buffered *bufio.Reader, upstream io.ReadWriteCloser) error {
	errc := make(chan error, 2)
	go func() {
		_, err := io.Copy(upstream, buffered) // bufio.Reader reads through to client
		errc <- err
	}()
	go func() {
		errc <- spliceUpstream(stallLimited(client), upstream)
	}()
	err := <-errc
	client.Close()
	upstream.Close()
	<-errc
	return err
}

// Close code and reason a client hears when its socket's object breaks off
// without a close frame: its node died or cannot be reached. 1012 (service
// restart) is what the object's own node sends when the instance goes
// (docs/websockets.md): the client reconnects and reaches the object
// wherever it runs now.
const (
	upstreamLostCode   = 1012
	upstreamLostReason = "lost the connection to the Durable Object"
)

// spliceUpstream copies what the object sends to the client until the
// object's side ends. If it breaks off (an error, not the end of the
// stream) between two frames and before any close frame, the client is
// sent a close frame of its own (upstreamLostCode) rather than a dropped
// connection, which it would see as 1006 (abnormal closure). Mid-frame,
// nothing can be added: the connection just ends.
func spliceUpstream(client io.Writer, upstream io.Reader) error {
	var edges frameEdges
	buf := make([]byte, 32<<10)
	for {
		n, err := upstream.Read(buf)
		if n > 0 {
			if _, werr := client.Write(buf[:n]); werr != nil {
				return werr
			}
			edges.see(buf[:n])
		}
		switch {
		case err == io.EOF:
			return nil
		case err != nil:
			if edges.atEdge() && !edges.closed {
				_, _ = client.Write(serverCloseFrame(upstreamLostCode, upstreamLostReason))
			}
			return err
		}
	}
}
