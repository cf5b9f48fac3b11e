package durable

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestCheckWebSocketTags(t *testing.T) {
	long := strings.Repeat("x", MaxWebSocketTagLength)
	for _, tc := range []struct {
		tags []string
		ok   bool
	}{
		{nil, true},
		{[]string{"a", long}, true},
		{make([]string, MaxWebSocketTags), false}, // empty tags
		{[]string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}, true},
		{[]string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"}, false},
		{[]string{long + "x"}, false},
		{[]string{""}, false},
	} {
		err := CheckWebSocketTags(tc.tags)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidWebSocketTags)) {
			t.Errorf("CheckWebSocketTags(%d tags) = %v, want ok=%v", len(tc.tags), err, tc.ok)
		}
	}
}

func TestIsWebSocketUpgrade(t *testing.T) {
	for _, tc := range []struct {
		conn, upgrade string
		want          bool
	}{
		{"Upgrade", "websocket", true},
		{"keep-alive, Upgrade", "WebSocket", true},
		{"upgrade", "h2c", false},
		{"keep-alive", "websocket", false},
		{"", "", false},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if tc.conn != "" {
			r.Header.Set("Connection", tc.conn)
		}
		if tc.upgrade != "" {
			r.Header.Set("Upgrade", tc.upgrade)
		}
		if got := IsWebSocketUpgrade(r); got != tc.want {
			t.Errorf("Connection %q Upgrade %q: %v, want %v", tc.conn, tc.upgrade, got, tc.want)
		}
	}
}

func TestWriteResponsePlain(t *testing.T) {
	rec := httptest.NewRecorder()
	resp := &http.Response{StatusCode: 418, Header: http.Header{"X-A": {"b"}}, Body: io.NopCloser(strings.NewReader("teapot"))}
	if err := WriteResponse(rec, resp); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 418 || rec.Body.String() != "teapot" || rec.Header().Get("X-A") != "b" {
		t.Fatalf("got %d %q %v", rec.Code, rec.Body.String(), rec.Header())
	}
}

// A 101 takes over the client's connection and carries bytes both ways.
func TestWriteResponseSplicesA101(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		objEnd, peerEnd := net.Pipe()
		go func() { // the "object": echoes in upper case until closed
			defer objEnd.Close()
			buf := make([]byte, 64)
			for {
				n, err := objEnd.Read(buf)
				if err != nil {
					return
				}
				objEnd.Write([]byte(strings.ToUpper(string(buf[:n]))))
			}
		}()
		WriteResponse(w, &http.Response{StatusCode: http.StatusSwitchingProtocols, Header: http.Header{"Upgrade": {"echo"}, "Connection": {"Upgrade"}}, Body: peerEnd})
	}))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "echo" {
		t.Fatalf("response %v, %v", resp, err)
	}
	io.WriteString(conn, "hello")
	buf := make([]byte, 5)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "HELLO" {
		t.Fatalf("through the splice: %q %v", buf, err)
	}
}

func TestWriteResponseRefusesA101WithoutConnection(t *testing.T) {
	rec := httptest.NewRecorder()
	err := WriteResponse(rec, &http.Response{StatusCode: 101, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(""))})
	if err == nil || rec.Code != 500 {
		t.Fatalf("err %v, code %d", err, rec.Code)
	}
}

func TestWebSocketAutoResponseCheck(t *testing.T) {
	long := strings.Repeat("x", MaxWebSocketAutoResponse+1)
	for _, tc := range []struct {
		name string
		a    WebSocketAutoResponse
		ok   bool
	}{
		{"ping and pong", WebSocketAutoResponse{"ping", "pong"}, true},
		{"an empty response", WebSocketAutoResponse{"ping", ""}, true},
		{"both at the limit", WebSocketAutoResponse{long[1:], long[1:]}, true},
		{"no request", WebSocketAutoResponse{"", "pong"}, false},
		{"request too long", WebSocketAutoResponse{long, "pong"}, false},
		{"response too long", WebSocketAutoResponse{"ping", long}, false},
	} {
		err := tc.a.check()
		if tc.ok != (err == nil) || err != nil && !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// plainRuntime is a StateRuntime without auto-responses, as a test's may be.
type plainRuntime struct{}

func (plainRuntime) BlockConcurrencyWhile(fn func() error) error { return fn() }
func (plainRuntime) WaitUntil(func(context.Context))             {}
func (plainRuntime) AcceptWebSocket(http.ResponseWriter, *http.Request, []string) (*WebSocket, error) {
	return nil, ErrNotWebSocketUpgrade
}
func (plainRuntime) WebSockets(string) []*WebSocket { return nil }

// autoRuntime keeps the auto-response, as roost's runtime does.
type autoRuntime struct {
	plainRuntime
	a *WebSocketAutoResponse
}

func (r *autoRuntime) SetWebSocketAutoResponse(a *WebSocketAutoResponse) { r.a = a }
func (r *autoRuntime) WebSocketAutoResponse() *WebSocketAutoResponse     { return r.a }

func TestStateWebSocketAutoResponse(t *testing.T) {
	plain := NewState(ID{}, nil, plainRuntime{})
	if err := plain.SetWebSocketAutoResponse(&WebSocketAutoResponse{"ping", "pong"}); !errors.Is(err, ErrNoAutoResponse) {
		t.Fatalf("a runtime without auto-responses: %v", err)
	}
	if a := plain.WebSocketAutoResponse(); a != nil {
		t.Fatalf("a runtime without auto-responses has %+v", a)
	}

	rt := &autoRuntime{}
	st := NewState(ID{}, nil, rt)
	pair := &WebSocketAutoResponse{"ping", "pong"}
	if err := st.SetWebSocketAutoResponse(pair); err != nil {
		t.Fatal(err)
	}
	pair.Response = "changed by its caller"
	if got := st.WebSocketAutoResponse(); got == nil || *got != (WebSocketAutoResponse{"ping", "pong"}) {
		t.Fatalf("after setting ping/pong and changing the caller's copy: %+v", got)
	}
	if err := st.SetWebSocketAutoResponse(&WebSocketAutoResponse{"", "pong"}); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("an empty request: %v", err)
	}
	if got := st.WebSocketAutoResponse(); got == nil || got.Request != "ping" {
		t.Fatalf("a refused change changed it: %+v", got)
	}
	ws := NewWebSocket(nil, nil)
	if _, ok := st.WebSocketAutoResponseTimestamp(ws); ok {
		t.Fatal("a socket never answered has a timestamp")
	}
	at := time.Unix(1_800_000_000, 0)
	ws.RecordAutoResponse(at)
	if got, ok := st.WebSocketAutoResponseTimestamp(ws); !ok || !got.Equal(at) {
		t.Fatalf("timestamp %v %v, want %v", got, ok, at)
	}
	if err := st.SetWebSocketAutoResponse(nil); err != nil || st.WebSocketAutoResponse() != nil {
		t.Fatalf("removing it: %v, left %+v", err, st.WebSocketAutoResponse())
	}
}
