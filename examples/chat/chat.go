// Package chat is a chat room on WebSockets, after Cloudflare's Durable
// Objects chat demo: each room is one object, every member of a room holds
// a WebSocket to it, and the object keeps the room's recent messages in its
// storage, so a newcomer sees them and nothing said is lost when the
// object moves to another node.
//
//	GET /                          a page with a small chat client
//	GET /rooms/ROOM/ws?user=NAME   a WebSocket into ROOM as NAME
//	GET /rooms/ROOM/messages       the room's recent messages, JSON
//
// On the socket, the client sends text messages (at most 1,000 bytes);
// the room answers with JSON events: {"backlog": [...]} on joining, then
// {"user", "text", "at"} for each message anyone sends, {"joined": NAME}
// and {"quit": NAME} as members come and go, {"error": ...} for a message
// it refuses.
//
// cmd/chat serves it: `chat dev`, then open http://127.0.0.1:8787/.
package chat

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/roostdb/roost/durable"
)

// Binding and ClassName name the rooms' namespace.
const (
	Binding   = "ROOMS"
	ClassName = "ChatRoom"
)

// Limits of the room.
const (
	MaxRoom    = 64   // bytes of a room name
	MaxUser    = 32   // bytes of a user name
	MaxText    = 1000 // bytes of a message
	KeepRecent = 100  // messages kept in storage and sent as backlog
)

//go:embed page.html
var page []byte

// App is what cmd/chat serves.
func App() *durable.App {
	return &durable.App{
		Name:     "chat",
		Worker:   Worker,
		Classes:  map[string]durable.Class{ClassName: NewRoom},
		Bindings: []durable.Binding{{Name: Binding, ClassName: ClassName}},
	}
}

// Worker serves the page and sends /rooms/ROOM/... to the room's object.
func Worker(w http.ResponseWriter, r *http.Request, env *durable.Env) {
	if r.URL.Path == "/" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
		return
	}
	// The room is one segment of the path as the client escaped it: the
	// page sends encodeURIComponent(room), so a room "a/b" is a%2Fb.
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/rooms/")
	escaped, action, _ := strings.Cut(rest, "/")
	room, err := url.PathUnescape(escaped)
	if !ok || err != nil || room == "" || len(room) > MaxRoom || (action != "ws" && action != "messages") {
		http.Error(w, fmt.Sprintf("not found: use /rooms/ROOM/ws or /rooms/ROOM/messages (ROOM: 1 to %d bytes)", MaxRoom), http.StatusNotFound)
		return
	}
	ns, err := env.Namespace(Binding)
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	resp, err := ns.Get(ns.IDFromName(room)).Fetch(r)
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	// For a WebSocket, WriteResponse carries it between the client and the
	// room until either closes.
	durable.WriteResponse(w, resp)
}

// Message is one message said in a room.
type Message struct {
	User string    `json:"user"`
	Text string    `json:"text"`
	At   time.Time `json:"at"`
}

// Room is the object of one chat room.
type Room struct {
	state *durable.State
	seq   uint64 // the last message's number; 0 until loaded
}

// NewRoom is the ChatRoom class.
func NewRoom(state *durable.State, _ *durable.Env) durable.Object {
	r := &Room{state: state}
	// Load the sequence before the first event, as a constructor in Workers
	// would with blockConcurrencyWhile.
	state.BlockConcurrencyWhile(func() error {
		keys, err := state.Storage.List(durable.ListOptions{Prefix: "msg/", Reverse: true, Limit: 1})
		if err != nil {
			return err
		}
		for _, kv := range keys {
			fmt.Sscanf(strings.TrimPrefix(kv.Key, "msg/"), "%d", &r.seq)
		}
		return nil
	})
	return r
}

func msgKey(seq uint64) string { return fmt.Sprintf("msg/%020d", seq) }

// ServeHTTP accepts members' sockets and lists the recent messages.
func (r *Room) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch {
	case strings.HasSuffix(req.URL.Path, "/messages"):
		recent, err := r.recent()
		if err != nil {
			durable.WriteError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(recent)
	case strings.HasSuffix(req.URL.Path, "/ws"):
		user := req.URL.Query().Get("user")
		if user == "" || len(user) > MaxUser || !utf8.ValidString(user) {
			http.Error(w, fmt.Sprintf("name yourself: ?user=NAME (1 to %d bytes)", MaxUser), http.StatusBadRequest)
			return
		}
		if !durable.IsWebSocketUpgrade(req) {
			http.Error(w, "this is a WebSocket endpoint", http.StatusUpgradeRequired)
			return
		}
		recent, err := r.recent()
		if err != nil {
			durable.WriteError(w, err)
			return
		}
		ws, err := r.state.AcceptWebSocket(w, req)
		if err != nil {
			// A failed handshake is answered already; anything else
			// (the room holds the most sockets an object may) is ours
			// to answer.
			if !errors.Is(err, durable.ErrNotWebSocketUpgrade) {
				durable.WriteError(w, err)
			}
			return
		}
		ws.SetAttachment(user)
		send(ws, map[string]any{"backlog": recent})
		r.broadcast(map[string]any{"joined": user})
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}

// recent returns the kept messages, oldest first.
func (r *Room) recent() ([]Message, error) {
	entries, err := r.state.Storage.List(durable.ListOptions{Prefix: "msg/"})
	if err != nil {
		return nil, err
	}
	out := make([]Message, 0, len(entries))
	for _, kv := range entries { // in key order: oldest first
		var m Message
		if json.Unmarshal(kv.Value, &m) == nil {
			out = append(out, m)
		}
	}
	return out, nil
}

// WebSocketMessage stores what a member said and tells everyone.
func (r *Room) WebSocketMessage(ctx context.Context, ws *durable.WebSocket, msg durable.WebSocketMessage) error {
	user, _ := ws.Attachment().(string)
	if !msg.Text || len(msg.Data) == 0 || len(msg.Data) > MaxText {
		return send(ws, map[string]any{"error": fmt.Sprintf("send text of 1 to %d bytes", MaxText)})
	}
	m := Message{User: user, Text: string(msg.Data), At: time.Now().UTC()}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	r.seq++
	if err := r.state.Storage.Put(msgKey(r.seq), b); err != nil {
		return err
	}
	if r.seq > KeepRecent {
		if _, err := r.state.Storage.Delete(msgKey(r.seq - KeepRecent)); err != nil {
			return err
		}
	}
	// The output gate holds these until the message is durable.
	r.broadcast(m)
	return nil
}

// WebSocketClose tells the others that a member left.
func (r *Room) WebSocketClose(ctx context.Context, ws *durable.WebSocket, code int, reason string, wasClean bool) error {
	user, _ := ws.Attachment().(string)
	r.broadcast(map[string]any{"quit": user})
	return nil
}

func (r *Room) broadcast(v any) {
	for _, ws := range r.state.GetWebSockets("") {
		send(ws, v) // a socket closing meanwhile is no concern of the others
	}
}

func send(ws *durable.WebSocket, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return ws.SendText(string(b))
}
