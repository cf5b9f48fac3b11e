package durable

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
