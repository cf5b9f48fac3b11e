package linearize

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Outcome is how one counter request over HTTP ended, as HTTPCounter.Do
// recorded it.
type Outcome int

const (
	OutcomeOk      Outcome = iota // 200 with the count: recorded Ok
	OutcomeFailed                 // 503, or the connection was refused: the object did not run
	OutcomeUnknown                // anything else: it may or may not have taken effect
	OutcomeBadBody                // 200 whose body is not the counter's sentence (recorded Unknown)
	NumOutcomes
)

func (o Outcome) String() string {
	switch o {
	case OutcomeOk:
		return "ok"
	case OutcomeFailed:
		return "failed"
	case OutcomeUnknown:
		return "unknown"
	case OutcomeBadBody:
		return "bad body"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// HTTPCounter sends the counter's requests to nodes' app listeners and
// records every one in a Recorder, with the outcome the node's contract
// allows the client to conclude.
type HTTPCounter struct {
	rec     *Recorder
	hc      *http.Client
	timeout time.Duration
}

// NewHTTPCounter returns a client recording in rec whose requests give up
// after timeout (their outcome is then unknown).
func NewHTTPCounter(rec *Recorder, timeout time.Duration) *HTTPCounter {
	return &HTTPCounter{
		rec:     rec,
		hc:      &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}},
		timeout: timeout,
	}
}

// CloseIdleConnections closes the client's kept-alive connections.
func (c *HTTPCounter) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// Do sends one increment or read of key to the app listener at base
// ("http://host:port"), bracketed by the recorder as client, and returns
// how it ended, the count (for OutcomeOk) and otherwise what went wrong.
//
// The outcome follows the node's contract: 200 carries the count, 503 is
// sent before the object runs, and anything else (another status, a
// transport error, the timeout) may or may not have taken effect. A
// refused connection never reached the node. One subtlety: net/http
// silently resends a GET on a fresh connection when a reused one fails
// before the first response byte, which may be after the node ran it; a
// request that needed more than one connection is therefore unknown
// whatever its answer.
func (c *HTTPCounter) Do(client int, base string, kind Kind, key string) (Outcome, int, string) {
	path := "/increment"
	if kind == Read {
		path = "/"
	}
	call := c.rec.Begin(client, key, Op{Kind: kind})
	defer call.Unknown() // no-op once an outcome is recorded
	var conns atomic.Int32
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { conns.Add(1) }}
	ctx, cancel := context.WithTimeout(httptrace.WithClientTrace(context.Background(), trace), c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", base+path+"?name="+url.QueryEscape(key), nil)
	if err != nil {
		panic(err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		detail := err.Error()
		if ue, ok := err.(*url.Error); ok {
			detail = ue.Err.Error() // without the URL, which names the key
		}
		if conns.Load() == 0 && errors.Is(err, syscall.ECONNREFUSED) {
			call.Failed()
			return OutcomeFailed, 0, detail
		}
		return OutcomeUnknown, 0, detail
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return OutcomeUnknown, 0, err.Error()
	case conns.Load() > 1:
		return OutcomeUnknown, 0, fmt.Sprintf("resent by net/http: %d %q", resp.StatusCode, body)
	case resp.StatusCode == http.StatusServiceUnavailable:
		call.Failed()
		return OutcomeFailed, 0, string(body)
	case resp.StatusCode != http.StatusOK:
		return OutcomeUnknown, 0, fmt.Sprintf("%d %q", resp.StatusCode, body)
	}
	n, err := strconv.Atoi(strings.TrimPrefix(string(body), fmt.Sprintf("Durable Object '%s' count: ", key)))
	if err != nil {
		return OutcomeBadBody, 0, string(body)
	}
	call.Ok(n)
	return OutcomeOk, n, ""
}
