package raftstore

import (
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// logTrimmer bounds a group's Raft log by bytes. hashicorp/raft trims by
// entry count only: it snapshots after SnapshotThreshold entries (checked
// every SnapshotInterval) and keeps TrailingLogs of them, which is right
// for the request path's entries of a few KiB and not for large ones: a
// group written with 20 MiB KV values kept its last 10,240 entries, and a
// QA run saw data dirs of 2–4 GB within minutes. So the trimmer counts the
// bytes the group's log stores; once they reach the larger of
// DefaultLogTrimBytes and the group's last snapshot (so that a snapshot,
// which copies the group's state, costs no more than the log it frees), it
// takes a snapshot with TrailingLogs lowered to about a quarter of
// DefaultLogTrimBytes' worth of entries, then puts TrailingLogs back. A
// follower further behind than that catches up from the snapshot.
type logTrimmer struct {
	r         *raft.Raft
	trimBytes int64 // at least this many bytes stored start a trim

	mu      sync.Mutex
	bytes   int64 // stored since the last trim began
	entries int64
	snapped int64 // the last snapshot's size

	// retryAt: after a failed trim (a full disk, say) none is tried before
	// this, so that a failing snapshot is not retried with every entry.
	retryAt time.Time

	kick chan struct{} // cap 1: a trim is wanted
	stop chan struct{}
	done chan struct{}
}

// DefaultLogTrimBytes is how many bytes of entries a group's log takes
// before it is trimmed (logTrimmer), unless its state is larger.
const DefaultLogTrimBytes = 64 << 20

// minTrailingLogs is the fewest entries a trim keeps.
const minTrailingLogs = 16

// trimRetryAfter is how long a failed trim holds back the next.
const trimRetryAfter = 10 * time.Second

func startLogTrimmer(r *raft.Raft, trimBytes int64) *logTrimmer {
	t := &logTrimmer{r: r, trimBytes: trimBytes, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go t.run()
	return t
}

// stored counts entries the group's log stored.
func (t *logTrimmer) stored(entries, bytes int) {
	t.mu.Lock()
	t.bytes += int64(bytes)
	t.entries += int64(entries)
	due := t.bytes >= max(t.trimBytes, t.snapped)
	t.mu.Unlock()
	if due {
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
}

// close stops the trimmer and waits for a trim under way.
func (t *logTrimmer) close() {
	close(t.stop)
	<-t.done
}

func (t *logTrimmer) run() {
	defer close(t.done)
	for {
		select {
		case <-t.stop:
			return
		case <-t.kick:
		}
		t.mu.Lock()
		bytes, entries := t.bytes, t.entries
		t.mu.Unlock()
		if entries == 0 || bytes < max(t.trimBytes, t.snapped) || time.Now().Before(t.retryAt) {
			continue
		}
		size, err := t.trim(max(minTrailingLogs, uint64(t.trimBytes/4/max(1, bytes/entries))))
		if err != nil {
			// Shut down, or the snapshot failed: the entries stored after
			// trimRetryAfter try again.
			t.retryAt = time.Now().Add(trimRetryAfter)
			continue
		}
		t.mu.Lock()
		t.bytes -= bytes
		t.entries -= entries
		if size > 0 {
			t.snapped = size
		}
		t.mu.Unlock()
	}
}

// trim snapshots the group keeping at most trailing entries of its log,
// and returns the snapshot's size (0 if raft had nothing new to snapshot).
func (t *logTrimmer) trim(trailing uint64) (int64, error) {
	rc := t.r.ReloadableConfig()
	if trailing < rc.TrailingLogs {
		lowered := rc
		lowered.TrailingLogs = trailing
		if err := t.r.ReloadConfig(lowered); err != nil {
			return 0, err
		}
		defer func() { _ = t.r.ReloadConfig(rc) }()
	}
	f := t.r.Snapshot()
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNothingNewToSnapshot) {
			return 0, nil
		}
		return 0, err
	}
	meta, rd, err := f.Open()
	if err != nil {
		return 0, nil // taken, and the log trimmed; only its size is unknown
	}
	_ = rd.Close()
	return meta.Size, nil
}
