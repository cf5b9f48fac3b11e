package jobqueue

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// A method the queue does not take is answered 405 with the methods it
// does, as RFC 9110 asks of a 405 (found by QA: no Allow header).
func TestQueueNamesItsMethods(t *testing.T) {
	w := httptest.NewRecorder()
	(&Queue{}).ServeHTTP(w, httptest.NewRequest(http.MethodDelete, "/?queue=q", nil))
	if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, POST" {
		t.Fatalf("DELETE: %d, Allow %q; want 405 and Allow \"GET, POST\"", w.Code, w.Header().Get("Allow"))
	}
}
