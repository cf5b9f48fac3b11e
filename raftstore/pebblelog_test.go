package raftstore

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestPebbleErrorsLimited: an error Pebble reports over and over (a full
// disk, no file descriptors left) makes one line a second, the next with
// the count held back; another error still gets its own line.
func TestPebbleErrorsLimited(t *testing.T) {
	var buf bytes.Buffer
	l := newPebbleLogger(hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Error}))
	for i := range 1000 {
		l.Errorf("background error: %d", i)
	}
	l.Errorf("another error")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "background error: 0") || !strings.Contains(lines[1], "another error") {
		t.Fatalf("1000 repeats of one error and one other logged as:\n%s", buf.String())
	}
}
