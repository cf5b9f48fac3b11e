package durable

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

func TestHTTPStatusAndWriteError(t *testing.T) {
	k := DeriveNamespaceKey("Counter", "")
	_, invalid := ParseID(k, "nope")
	_, wrongNS := ParseID(k, IDFromName(DeriveNamespaceKey("Chat", ""), "A").String())
	_, unknownBinding := NewEnv(EnvConfig{}).Namespace("COUNTER")

	tests := []struct {
		desc       string
		err        error
		status     int
		retryAfter bool
	}{
		{"invalid ID", invalid, http.StatusBadRequest, false},
		{"bare ErrInvalidID", ErrInvalidID, http.StatusBadRequest, false},
		{"wrapped invalid ID", fmt.Errorf("worker: %w", invalid), http.StatusBadRequest, false},
		{"wrong namespace", wrongNS, http.StatusBadRequest, false},
		{"ErrOverloaded", ErrOverloaded, http.StatusServiceUnavailable, true},
		{"wrapped ErrOverloaded", fmt.Errorf("shard 3: %w", ErrOverloaded), http.StatusServiceUnavailable, true},
		{"*Error overloaded", &Error{Message: "too busy", Overloaded: true}, http.StatusServiceUnavailable, true},
		{"wrapped *Error overloaded", fmt.Errorf("fetch: %w", &Error{Message: "too busy", Overloaded: true}), http.StatusServiceUnavailable, true},
		{"*Error thrown", &Error{Message: "boom"}, http.StatusInternalServerError, false},
		{"*Error retryable", &Error{Message: "try again", Retryable: true}, http.StatusInternalServerError, false},
		{"plain error", errors.New("something broke"), http.StatusInternalServerError, false},
		{"unknown binding (deployment mistake)", unknownBinding, http.StatusInternalServerError, false},
		{"commit indeterminate", fmt.Errorf("put: %w", ErrCommitIndeterminate), http.StatusInternalServerError, false},
		{"commit failed (no effect, retry)", &Error{Message: "reset", Retryable: true, Err: fmt.Errorf("shard 2: %w", ErrCommitFailed)}, http.StatusServiceUnavailable, true},
		{"key too large", fmt.Errorf("put: %w", ErrKeyTooLarge), http.StatusInternalServerError, false},
		{"not delivered (nothing ran, retry)", &Error{Message: "body too large to re-send", Retryable: true, Err: ErrNotDelivered}, http.StatusServiceUnavailable, true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if tc.err == nil {
				t.Fatal("test case has no error")
			}
			if got := HTTPStatus(tc.err); got != tc.status {
				t.Fatalf("HTTPStatus(%v) = %d, want %d", tc.err, got, tc.status)
			}
			rec := httptest.NewRecorder()
			WriteError(rec, tc.err)
			if rec.Code != tc.status {
				t.Fatalf("WriteError status = %d, want %d", rec.Code, tc.status)
			}
			ra := rec.Header().Get("Retry-After")
			if tc.retryAfter {
				if n, err := strconv.Atoi(ra); err != nil || n <= 0 || n != RetryAfterSeconds {
					t.Fatalf("Retry-After = %q, want %d", ra, RetryAfterSeconds)
				}
			} else if ra != "" {
				t.Fatalf("Retry-After = %q on a %d", ra, tc.status)
			}
			if body := rec.Body.String(); strings.TrimRight(body, "\n") != tc.err.Error() {
				t.Fatalf("body = %q, want the message %q", body, tc.err.Error())
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Fatalf("Content-Type = %q", ct)
			}
		})
	}
}

func TestErrorFlags(t *testing.T) {
	cause := errors.New("disk on fire")
	e := &Error{Message: "exception: disk on fire", Retryable: true, Err: cause}
	wrapped := fmt.Errorf("fetch: %w", e)
	if !IsRetryable(wrapped) {
		t.Error("IsRetryable(wrapped retryable) = false")
	}
	if IsOverloaded(wrapped) {
		t.Error("IsOverloaded(retryable only) = true")
	}
	if !errors.Is(wrapped, cause) {
		t.Error("*Error does not unwrap to its cause")
	}
	if e.Error() != "exception: disk on fire" {
		t.Errorf("Error() = %q", e.Error())
	}
	if IsRetryable(errors.New("x")) || IsOverloaded(errors.New("x")) {
		t.Error("plain error has flags")
	}
	if IsRetryable(nil) || IsOverloaded(nil) {
		t.Error("nil error has flags")
	}
	// An *Error caused by ErrOverloaded is an overload even without the flag.
	if !IsOverloaded(&Error{Message: "busy", Err: ErrOverloaded}) {
		t.Error("IsOverloaded(*Error wrapping ErrOverloaded) = false")
	}
}
