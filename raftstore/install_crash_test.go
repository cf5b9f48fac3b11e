package raftstore

import (
	"os"
	"path/filepath"
	"testing"
)

// copyTree copies the directory src to dst (which must not exist).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A follower that installs a leader's snapshot first finalizes it in its
// snapshot store (raft's installSnapshot closes the sink) and only then
// hands it to ShardFSM.Restore. A crash between the two leaves a snapshot
// newer than the state machine, with no restoring marker. With
// NoSnapshotRestoreOnStart raft then takes the snapshot's index as applied
// and replays only what follows it: the entries the snapshot stood for are
// never applied here. The next start must restore that snapshot.
func TestStartAfterCrashBeforeInstalledSnapshotRestore(t *testing.T) {
	const workers = 4
	leaderDir, followerDir := t.TempDir(), filepath.Join(t.TempDir(), "follower")

	// The follower's state: the group as it was after version 2.
	s := openAt(t, leaderDir)
	g := startSingle(t, s, 3, newTransport(t, "n1"), func(c *GroupConfig) { c.Tune = fast })
	proposeAll(t, g.Raft(), workers, 1, 2)
	if err := g.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	copyTree(t, leaderDir, followerDir)

	// The leader goes on to version 5 and snapshots.
	s = openAt(t, leaderDir)
	g = startSingle(t, s, 3, newTransport(t, "n1"), func(c *GroupConfig) { c.Tune = fast })
	proposeAll(t, g.Raft(), workers, 3, 5)
	if err := g.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if err := g.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The follower received that snapshot and finalized it in its snapshot
	// store, then crashed before Restore wrote anything.
	snaps := filepath.Join("snapshots", "3")
	if err := os.RemoveAll(filepath.Join(followerDir, snaps)); err != nil {
		t.Fatal(err)
	}
	copyTree(t, filepath.Join(leaderDir, snaps), filepath.Join(followerDir, snaps))

	s2, g2 := reopenSingle(t, followerDir, 3)
	checkObjects(t, s2, 3, workers, 5)
	proposeAll(t, g2.Raft(), workers, 6, 6)
	checkObjects(t, s2, 3, workers, 6)
}
