package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/roostdb/roost/durable"
)

// WebSockets (docs/websockets.md). An object accepts a socket in a turn;
// the socket's object end is a coder/websocket server connection over one
// end of a net.Pipe, whose other end becomes the body of the turn's 101
// response. The Worker splices that body to its client's connection
// (durable.WriteResponse), directly when this node runs the Worker, or
// through a forwarded Fetch stream that stays open as a byte tunnel.
//
// The client's messages are turns of the instance, through its input gate.
// What the object sends obeys the output gate: a message leaves once every
// write made before it is durable (and, after a read-only turn, once this
// node is confirmed to still lead the shard), in the order sent. Sockets
// live with their instance: a reset, a lost leadership or a node stop
// closes them with 1012. An idle instance with open sockets is not evicted
// but hibernates: its object leaves memory, its sockets stay (hibernate).

// maxSocketsPerObject bounds the sockets one instance holds (Cloudflare's
// limit for an object).
const maxSocketsPerObject = 32768

// socketQueue bounds the messages waiting to be written to one socket; a
// client that falls this far behind and takes nothing more for closeWait
// is disconnected.
const socketQueue = 1024

// closeWait bounds a closing handshake (how long a closing socket waits
// for the client's close frame) and the writing of one message.
const closeWait = 5 * time.Second

// socket is one WebSocket an instance accepted.
type socket struct {
	in   *instance
	ws   *durable.WebSocket
	conn *websocket.Conn
	peer *socketPeer // the other end of the pipe: the 101 response's body

	out       chan outFrame // to the writer, in order
	closing   atomic.Bool   // the object closed it, or the instance is going: no more events or sends
	dead      chan struct{} // closed by abort: the connection is gone
	abortOnce sync.Once
	done      chan struct{} // closed when the writer has finished
}

// outFrame is a message to write, or (close set) the closing handshake.
type outFrame struct {
	msg    durable.WebSocketMessage
	close  bool
	code   websocket.StatusCode
	reason string
}

var _ durable.WebSocketConn = (*socket)(nil)

// hijackWriter lets coder/websocket's Accept answer into the turn's
// response buffer and take the object end of the pipe as its connection.
type hijackWriter struct {
	*responseBuffer
	conn net.Conn
}

func (h hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, bufio.NewReadWriter(bufio.NewReader(h.conn), bufio.NewWriter(h.conn)), nil
}

// AcceptWebSocket implements durable.StateRuntime.
func (in *instance) AcceptWebSocket(w http.ResponseWriter, r *http.Request, tags []string) (*durable.WebSocket, error) {
	if _, ok := in.obj.(durable.WebSocketHandler); !ok {
		return nil, fmt.Errorf("class %s accepts a WebSocket but has no WebSocketMessage method (durable.WebSocketHandler)", in.class)
	}
	if !durable.IsWebSocketUpgrade(r) {
		return nil, fmt.Errorf("%w: %s %s", durable.ErrNotWebSocketUpgrade, r.Method, r.URL.Path)
	}
	if err := durable.CheckWebSocketTags(tags); err != nil {
		return nil, err
	}
	rb := unwrapResponseBuffer(w)
	if rb == nil {
		return nil, errors.New("AcceptWebSocket needs the ResponseWriter ServeHTTP was given")
	}
	if rb.socket != nil {
		return nil, errors.New("this request's WebSocket is accepted already")
	}
	in.wsMu.Lock()
	n := len(in.sockets)
	in.wsMu.Unlock()
	if n >= maxSocketsPerObject {
		return nil, &durable.Error{Message: fmt.Sprintf("Durable Object has %d WebSockets open, the most it may", n), Overloaded: true}
	}
	// The origin check is the object's to make, as in Workers. A
	// subprotocol the object chose (the Sec-WebSocket-Protocol response
	// header) is answered only if the client offered it. permessage-deflate
	// is accepted when the client offers it, without context takeover: each
	// message is compressed on its own (over 512 bytes) with pooled
	// compressors, so an idle socket holds no compression window — an object
	// may hold 32,768 sockets.
	opts := &websocket.AcceptOptions{OriginPatterns: []string{"*"}, CompressionMode: websocket.CompressionNoContextTakeover}
	if p := rb.header.Get("Sec-WebSocket-Protocol"); p != "" {
		opts.Subprotocols = []string{p}
		rb.header.Del("Sec-WebSocket-Protocol")
	}
	objEnd, peerEnd := net.Pipe()
	conn, err := websocket.Accept(hijackWriter{rb, objEnd}, r, opts)
	if err != nil {
		objEnd.Close()
		peerEnd.Close()
		return nil, fmt.Errorf("%w: %v", durable.ErrNotWebSocketUpgrade, err)
	}
	conn.SetReadLimit(durable.MaxWebSocketMessage)
	s := &socket{in: in, conn: conn, out: make(chan outFrame, socketQueue), dead: make(chan struct{}), done: make(chan struct{})}
	s.peer = &socketPeer{Conn: peerEnd, s: s}
	s.ws = durable.NewWebSocket(s, append([]string(nil), tags...))
	rb.socket = s
	in.wsMu.Lock()
	in.sockets = append(in.sockets, s)
	in.wsMu.Unlock()
	in.m.metrics.websockets.Inc()
	in.startReleaser()
	go s.write()
	go s.read()
	go func() { // the instance going closes the socket
		select {
		case <-in.ctx.Done():
			s.shut(websocket.StatusServiceRestart, "Durable Object restarted")
		case <-s.done:
		}
	}()
	return s.ws, nil
}

func unwrapResponseBuffer(w http.ResponseWriter) *responseBuffer {
	for {
		switch t := w.(type) {
		case *responseBuffer:
			return t
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return nil
		}
	}
}

// WebSockets implements durable.StateRuntime.
func (in *instance) WebSockets(tag string) []*durable.WebSocket {
	in.wsMu.Lock()
	defer in.wsMu.Unlock()
	var out []*durable.WebSocket
	for _, s := range in.sockets {
		if !s.closing.Load() && (tag == "" || s.ws.HasTag(tag)) {
			out = append(out, s.ws)
		}
	}
	return out
}

// openSockets is how many sockets the instance holds.
func (in *instance) openSockets() int {
	in.wsMu.Lock()
	defer in.wsMu.Unlock()
	return len(in.sockets)
}

// Send implements durable.WebSocketConn.
func (s *socket) Send(msg durable.WebSocketMessage) error {
	if s.closing.Load() {
		return durable.ErrWebSocketClosed
	}
	s.in.queueSend(s, outFrame{msg: durable.WebSocketMessage{Text: msg.Text, Data: append([]byte(nil), msg.Data...)}})
	return nil
}

// Close implements durable.WebSocketConn: the close frame follows the
// messages sent before it, through the output gate like them.
func (s *socket) Close(code int, reason string) error {
	if len(reason) > 123 {
		return fmt.Errorf("WebSocket close reason of %d bytes; at most 123", len(reason))
	}
	if code != 1000 && (code < 3000 || code > 4999) {
		return fmt.Errorf("WebSocket close code %d; use 1000 or 3000-4999", code)
	}
	if s.closing.Swap(true) {
		return nil
	}
	s.in.queueSend(s, outFrame{close: true, code: websocket.StatusCode(code), reason: reason})
	return nil
}

// enqueue hands f to the writer (the releaser's call); a client too far
// behind is disconnected.
func (s *socket) enqueue(f outFrame) {
	select {
	case <-s.done:
		return
	default:
	}
	if f.close {
		s.closing.Store(true)
	}
	select {
	case s.out <- f:
		return
	default:
	}
	// A burst larger than the queue waits for the writer, as long as the
	// client keeps taking messages; one that takes none for closeWait is
	// dropped (no close frame could get past the queue either). The wait
	// holds up the instance's other sends, for closeWait at most.
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case s.out <- f:
	case <-s.dead:
	case <-t.C:
		s.drop()
	}
}

// write sends the queued frames in order until the socket closes.
func (s *socket) write() {
	defer close(s.done)
	defer s.remove()
	for {
		var f outFrame
		select {
		case f = <-s.out:
		case <-s.dead:
			return
		}
		if f.close {
			s.closeHandshake(f.code, f.reason)
			return
		}
		typ := websocket.MessageBinary
		if f.msg.Text {
			typ = websocket.MessageText
		}
		ctx, cancel := context.WithTimeout(context.Background(), closeWait)
		err := s.conn.Write(ctx, typ, f.msg.Data)
		cancel()
		if err != nil {
			s.drop() // the client is gone, or took nothing for closeWait
			return
		}
		s.in.m.metrics.websocketMessages.WithLabelValues("sent").Inc()
	}
}

// socketPeer is the 101 response's end of a socket's pipe: the bytes the
// Worker splices to the client, directly or through a forwarded tunnel.
type socketPeer struct {
	net.Conn
	s *socket
}

var _ goingAwayer = (*socketPeer)(nil)

// GoingAway is called when the node holding the client's connection, at
// the far end of a tunnel, is stopping (forwarder.goAwayTunnels).
func (p *socketPeer) GoingAway() { p.s.goingAway() }

// goingAwayReason is the reason of goingAway's close frame.
const goingAwayReason = "the node holding this connection is stopping"

// goingAway closes the socket with 1001 because its client's connection
// is about to end with the node that holds it: the close frame follows
// what was sent before it, and the object, which lives on, hears the
// client go as it would hear the client close (WebSocketClose, 1001).
func (s *socket) goingAway() {
	if s.closing.Swap(true) {
		return
	}
	s.in.queueSend(s, outFrame{close: true, code: websocket.StatusGoingAway, reason: goingAwayReason})
	s.deliver(func(ctx context.Context, obj durable.Object) error {
		if h, ok := obj.(durable.WebSocketCloseHandler); ok {
			return h.WebSocketClose(ctx, s.ws, int(websocket.StatusGoingAway), goingAwayReason, true)
		}
		return nil
	})
}

// shut closes the socket from the runtime's side (the instance is going):
// no handler runs for it.
func (s *socket) shut(code websocket.StatusCode, reason string) {
	s.closing.Store(true)
	select {
	case s.out <- outFrame{close: true, code: code, reason: reason}:
	default:
		s.abort() // the queue is full: no room for a polite close
	}
}

func (s *socket) closeHandshake(code websocket.StatusCode, reason string) {
	// Close waits for the client's close frame (read by s.read) for up to
	// 5 s, then closes the connection.
	_ = s.conn.Close(code, reason)
	s.abort()
}

// abort drops the connection without a closing handshake; the object
// hears nothing of it.
func (s *socket) abort() {
	s.closing.Store(true)
	s.drop()
}

// drop drops the connection without a closing handshake and leaves the
// reader, which fails next, to tell the object the socket closed (1006)
// unless the object or the runtime had closed it already. A writer that
// could not write — the client dropped the connection, or stopped taking
// messages — drops it so: before, it aborted, and when it noticed the
// broken connection before the reader did (an object sending to a client
// that disconnects), the object never heard of the close.
func (s *socket) drop() {
	s.abortOnce.Do(func() {
		close(s.dead)
		_ = s.conn.CloseNow()
		_ = s.peer.Close()
	})
}

// remove takes the socket off its instance (the writer's last act).
func (s *socket) remove() {
	in := s.in
	in.wsMu.Lock()
	for i, o := range in.sockets {
		if o == s {
			in.sockets = append(in.sockets[:i], in.sockets[i+1:]...)
			break
		}
	}
	in.wsMu.Unlock()
	in.m.metrics.websockets.Dec()
}

// errInvalidUTF8 is the protocol error of a text message that is not UTF-8.
var errInvalidUTF8 = errors.New("WebSocket text message is not valid UTF-8")

// read delivers the client's messages as turns, then its close.
func (s *socket) read() {
	for {
		typ, data, err := s.conn.Read(context.Background())
		if err != nil {
			s.readEnded(err)
			return
		}
		s.in.m.metrics.websocketMessages.WithLabelValues("received").Inc()
		if typ == websocket.MessageText && !utf8.Valid(data) {
			// RFC 6455, 8.1: a text message that is not UTF-8 fails the
			// connection (1007); the object hears a protocol error, as
			// for a message over the limit, and never gets it as text.
			// It hears at once: Close sends the close frame and then
			// waits up to 5 s for the client's, so it runs beside the
			// events, and the connection is dropped once it returned.
			closed := make(chan struct{})
			go func() {
				defer close(closed)
				_ = s.conn.Close(websocket.StatusInvalidFramePayloadData, "text message is not UTF-8")
			}()
			s.tellEnded(errInvalidUTF8)
			<-closed
			s.abort()
			return
		}
		if s.closing.Load() {
			// The object closed the socket (or a handler failed, or the
			// instance is going): what the client sent before it saw the
			// close is no event any more. Reading on lets the closing
			// handshake finish.
			continue
		}
		if a := s.in.autoResponse.Load(); a != nil && typ == websocket.MessageText && string(data) == a.Request {
			s.autoRespond(a)
			continue
		}
		msg := durable.WebSocketMessage{Text: typ == websocket.MessageText, Data: data}
		if !s.deliver(func(ctx context.Context, obj durable.Object) error {
			return obj.(durable.WebSocketHandler).WebSocketMessage(ctx, s.ws, msg)
		}) {
			return
		}
	}
}

// autoRespond answers the auto-response's request on s without waking
// the object: no turn, no output gate (the reply shows nothing of the
// object's state), and the object's idle clock is not reset, so a
// client's keep-alive pings let it hibernate.
func (s *socket) autoRespond(a *durable.WebSocketAutoResponse) {
	if s.closing.Load() {
		return
	}
	s.ws.RecordAutoResponse(time.Now())
	s.in.m.metrics.websocketAutoResponses.Inc()
	s.enqueue(outFrame{msg: durable.WebSocketMessage{Text: true, Data: []byte(a.Response)}})
}

// SetWebSocketAutoResponse implements durable.WebSocketAutoResponder.
func (in *instance) SetWebSocketAutoResponse(a *durable.WebSocketAutoResponse) {
	in.autoResponse.Store(a)
}

// WebSocketAutoResponse implements durable.WebSocketAutoResponder.
func (in *instance) WebSocketAutoResponse() *durable.WebSocketAutoResponse {
	return in.autoResponse.Load()
}

// readEnded tells the object how the socket ended, unless the runtime or
// the object ended it, and drops the connection.
func (s *socket) readEnded(err error) {
	defer s.abort()
	s.tellEnded(err)
}

// tellEnded is readEnded without the drop.
func (s *socket) tellEnded(err error) {
	if s.closing.Load() {
		return
	}
	code, reason, clean := websocket.StatusAbnormalClosure, "", false
	var ce websocket.CloseError
	switch {
	case errors.As(err, &ce):
		code, reason, clean = ce.Code, ce.Reason, true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrClosedPipe), errors.Is(err, net.ErrClosed):
	default:
		s.deliver(func(ctx context.Context, obj durable.Object) error {
			if h, ok := obj.(durable.WebSocketErrorHandler); ok {
				return h.WebSocketError(ctx, s.ws, err)
			}
			return nil
		})
	}
	s.closing.Store(true)
	s.deliver(func(ctx context.Context, obj durable.Object) error {
		if h, ok := obj.(durable.WebSocketCloseHandler); ok {
			return h.WebSocketClose(ctx, s.ws, int(code), reason, clean)
		}
		return nil
	})
}

// deliver runs event as a turn of the instance. It reports false if the
// instance is gone (the socket closes with it).
func (s *socket) deliver(event func(ctx context.Context, obj durable.Object) error) bool {
	in := s.in
	// A reference, as a request holds one: eviction must not take the
	// instance while its event waits or runs — the socket may be gone by
	// then (the object closed it), so open sockets do not keep it.
	if !in.m.hold(in) {
		return false
	}
	defer in.m.release(in)
	prior, err := in.beginTurn(in.ctx, false)
	if err != nil {
		return false
	}
	var handlerErr error
	turnCtx, mark := in.markTurn(in.ctx)
	exc := in.runTurn(func() error {
		if err := in.activate(); err != nil { // the object may have hibernated
			return err
		}
		handlerErr = event(turnCtx, in.obj)
		return nil
	})
	mark.end()
	in.endTurn(prior, exc)
	in.m.touch(in)
	if handlerErr != nil {
		in.m.cfg.Logger.Warn("WebSocket handler failed; closing the socket", "class", in.class, "id", in.id.String(), "error", handlerErr)
		if !s.closing.Swap(true) {
			in.queueSend(s, outFrame{close: true, code: websocket.StatusInternalError, reason: "Durable Object WebSocket handler failed"})
		}
	}
	return exc == nil
}

// pendingSend is a frame an object sent, waiting for the output gate.
type pendingSend struct {
	s *socket
	f outFrame
}

// sendBatch is what one turn sent, released once after is durable (and,
// if verify, this node confirmed as the shard's leader).
type sendBatch struct {
	after  *commit
	verify bool
	sends  []pendingSend
}

// openOutbox starts collecting a turn's sends (caller holds the gate).
func (in *instance) openOutbox() {
	in.outMu.Lock()
	in.turns++
	in.outMu.Unlock()
}

// releaseOutbox closes the turn's outbox and queues what it holds behind
// last, the turn's commit (nil if none is in flight), and, if confirm (no
// commit of the turn's own is in flight, endTurn), a check that this node
// still leads.
func (in *instance) releaseOutbox(last *commit, confirm bool) {
	in.outMu.Lock()
	in.turns--
	sends := in.outbox
	in.outbox = nil
	in.outMu.Unlock()
	if len(sends) > 0 {
		in.pushBatch(sendBatch{after: last, verify: confirm, sends: sends})
	}
}

// queueSend sends f on s through the output gate: inside a turn, with the
// turn's other sends; outside one (WaitUntil work), behind the writes made
// so far.
func (in *instance) queueSend(s *socket, f outFrame) {
	in.outMu.Lock()
	if in.turns > 0 {
		in.outbox = append(in.outbox, pendingSend{s, f})
		in.outMu.Unlock()
		return
	}
	in.outMu.Unlock()
	last := in.storage.flush()
	in.pushBatch(sendBatch{after: last, verify: last == nil || last.isDone(), sends: []pendingSend{{s, f}}})
}

func (in *instance) pushBatch(b sendBatch) {
	in.outMu.Lock()
	in.releases = append(in.releases, b)
	in.outMu.Unlock()
	select {
	case in.releaseWake <- struct{}{}:
	default:
	}
}

// startReleaser starts the goroutine that releases sent frames in order,
// once per instance (at its first socket); it ends with the instance.
func (in *instance) startReleaser() {
	in.releaserOnce.Do(func() { go in.runReleaser() })
}

func (in *instance) runReleaser() {
	for {
		in.outMu.Lock()
		batches := in.releases
		in.releases = nil
		in.outMu.Unlock()
		for _, b := range batches {
			if !in.release(b) {
				return
			}
		}
		select {
		case <-in.releaseWake:
		case <-in.ctx.Done():
			return
		}
	}
}

// release waits for b's gate and hands its frames to their sockets. It
// reports false when the instance is gone; a batch whose commit failed is
// dropped (the failure resets the instance, which closes its sockets).
func (in *instance) release(b sendBatch) bool {
	if b.after != nil {
		if err := b.after.wait(in.ctx); err != nil {
			return in.ctx.Err() == nil
		}
	}
	if b.verify {
		if err := in.shard.verifyLeader(in.ctx); err != nil {
			return in.ctx.Err() == nil
		}
	}
	for _, p := range b.sends {
		p.s.enqueue(p.f)
	}
	return true
}
