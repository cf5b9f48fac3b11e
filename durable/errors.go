package durable

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// Sentinel errors. Functions wrap them with context; test with errors.Is.
var (
	// ErrInvalidID: a string is not the form of any ID.
	ErrInvalidID = errors.New("invalid Durable Object ID")
	// ErrWrongNamespace: a well-formed ID that was not made by this namespace.
	ErrWrongNamespace = errors.New("Durable Object ID belongs to another namespace")
	// ErrUnknownBinding: no Durable Object namespace, KV namespace or var has this binding name.
	ErrUnknownBinding = errors.New("unknown binding")
	// ErrEmptyKey: a write names the empty key. It is refused because
	// ListOptions take "" for "not set": a stored "" could never be paged
	// past with StartAfter, nor excluded with Start or End.
	ErrEmptyKey = errors.New("empty storage key")
	// ErrKeyTooLarge: a storage key is longer than Limits.MaxKeyBytes.
	ErrKeyTooLarge = errors.New("storage key too large")
	// ErrValueTooLarge: a key and value together exceed Limits.MaxEntryBytes.
	ErrValueTooLarge = errors.New("storage value too large")
	// ErrTurnTooLarge: the writes not yet committed — a turn's, since its
	// last Sync — would exceed what one replicated commit carries (5 MiB
	// encoded). The write is refused; Sync commits what is pending so more
	// can follow.
	ErrTurnTooLarge = errors.New("storage writes of one turn too large")
	// ErrTooManyKeys: a multi-key operation names more than Limits.MaxBatchKeys keys.
	ErrTooManyKeys = errors.New("too many keys in one storage operation")
	// ErrInvalidOption: an option value makes no sense (say Start and
	// StartAfter together). Storage, KV and WebSocket calls share it, so its
	// text names none of them.
	ErrInvalidOption = errors.New("invalid option")
	// ErrNoAlarmHandler: SetAlarm was called by an object whose class has
	// no Alarm method (it is not an Alarmer), so the alarm could never be
	// delivered. Workers throws here too.
	ErrNoAlarmHandler = errors.New("Durable Object class has no Alarm handler")
	// ErrKVObjectsChanged: a KV binding gives its namespace another number
	// of objects than the namespace was first used with; its keys are only
	// found with that number. A deployment mistake, not the caller's.
	ErrKVObjectsChanged = errors.New("KV namespace's number of objects changed")
	// ErrTransactionRolledBack is returned by Transaction when fn called Rollback.
	ErrTransactionRolledBack = errors.New("transaction rolled back")
	// ErrCommitIndeterminate: the write may or may not have been committed
	// (leadership was lost while it was in flight); the object was reset.
	ErrCommitIndeterminate = errors.New("storage commit outcome unknown")
	// ErrCommitFailed: the turn certainly left nothing in storage, so
	// retrying is safe as far as storage goes: its write was not committed
	// (the object was reset), or it wrote nothing and its response was
	// withheld because the node could not confirm it still led the
	// object's shard (what it read may have been stale).
	ErrCommitFailed = errors.New("storage commit failed")
	// ErrNotDelivered: the request reached no object (the runtime could
	// not route it, and could not send its body again): nothing ran, and
	// retrying is safe. Not an overload: a caller should retry it.
	ErrNotDelivered = errors.New("request not delivered to its object")
	// ErrBadRequestBody: the client's request body broke off or was
	// malformed (a bad chunk, fewer bytes than its Content-Length) before
	// any object saw the request.
	ErrBadRequestBody = errors.New("request body could not be read")
	// ErrOverloaded: the object or node cannot take more work now; retry later.
	ErrOverloaded = errors.New("Durable Object is overloaded")
)

// Error is an exception thrown by an object (or by the runtime on its
// behalf) into the caller, as in Workers: the message, and whether retrying
// may help (Retryable) or the object was overloaded (Overloaded).
type Error struct {
	Message    string
	Retryable  bool
	Overloaded bool
	// Err is the cause, if known (for errors.Is); it is not sent over the wire.
	Err error
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.Err }

// IsRetryable reports whether err (or an Error it wraps) says that retrying may succeed.
func IsRetryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Retryable
}

// IsOverloaded reports whether err is or wraps an overload.
func IsOverloaded(err error) bool {
	var e *Error
	if errors.As(err, &e) && e.Overloaded {
		return true
	}
	return errors.Is(err, ErrOverloaded)
}

// HTTPStatus maps an error reaching the edge to an HTTP status: a malformed
// ID, one of another namespace or a broken request body is the client's
// fault (400); overload and
// a write that certainly did not commit (ErrCommitFailed) are 503, both
// safe to retry; anything else (an exception an object threw, an unknown
// binding, which is a deployment mistake, a commit of unknown outcome) is 500.
func HTTPStatus(err error) int {
	switch {
	case errors.Is(err, ErrInvalidID), errors.Is(err, ErrWrongNamespace), errors.Is(err, ErrBadRequestBody):
		return http.StatusBadRequest
	case IsOverloaded(err), errors.Is(err, ErrCommitFailed), errors.Is(err, ErrNotDelivered):
		// Each means the request had no effect and may be retried.
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// RetryAfterSeconds is the Retry-After a 503 from WriteError carries.
const RetryAfterSeconds = 1

// WriteError writes err as an HTTP response with the status of HTTPStatus
// and the error's message as a text body (plus Retry-After on overload).
func WriteError(w http.ResponseWriter, err error) {
	status := HTTPStatus(err)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintln(w, err.Error())
}
