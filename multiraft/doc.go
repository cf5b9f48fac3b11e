// Package multiraft runs every Raft group of a node from one loop, on
// etcd-io/raft's RawNode, with the groups' logs and state in one Pebble
// database.
//
// # Why
//
// hashicorp/raft (package raftstore) runs each group on its own goroutines:
// every entry of every group is its own log write and sync, its own
// AppendEntries to each follower and its own apply. With one increment in
// flight per shard, as under load spread over many objects, that per-entry
// cost is most of a write's CPU (docs/raftstore.md, "What the spread
// target would take"). The Engine instead gathers, in each round of its
// loop, the work of every group that has some and does it together:
//
//   - one Pebble batch, synced once, holds every group's new entries and
//     hard states;
//   - one Transport.Send per peer carries every group's messages to it;
//   - one Pebble batch, not synced, holds every group's applied entries
//     and applied indexes.
//
// # Status
//
// The engine is being built to take the shard groups over from raftstore;
// nothing in node or placement uses it yet (docs/multiraft.md says what is
// built and what is not).
//
// # Key layout
//
// Every key of a group begins with m/<group8>/ (big-endian group id), so a
// group's keys are one range and never overlap raftstore's r/, s/ and d/:
//
//	m/<group8>/h          raft HardState (term, vote, commit), written when
//	                      the term or vote changes; the commit index is
//	                      raised to the applied index when it is loaded
//	m/<group8>/c          ConfState as of the applied index (written with
//	                      the configuration changes and snapshots)
//	m/<group8>/a          applied index (8 bytes)
//	m/<group8>/s          SnapshotMetadata of the log's start: the entry
//	                      before the first one kept (index, term, ConfState)
//	m/<group8>/l/<index8> log entry (raftpb.Entry)
//
// # Invariants
//
//   - Entries and the HardState of a round are synced before any message
//     of that round leaves and before its committed entries are applied:
//     a follower acknowledges only what it has on disk, and a leader counts
//     itself in a quorum only for what it has on disk.
//   - A group's applied entries, its applied index and its ConfState are
//     written in one batch, so after a crash the state machine is exactly
//     "every entry up to applied"; raft is started with that applied index
//     and hands the entries after it to the state machine again.
//   - The log is compacted only up to the applied index, and a snapshot a
//     peer needs is taken of the state machine at the applied index, in the
//     loop, before that round's entries are applied.
//   - Only the loop touches a RawNode, a group's storage and the waiters of
//     its proposals; everything else reaches them through the loop's
//     channels.
package multiraft
