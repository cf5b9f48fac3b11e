// Package raftstore keeps the state of every Raft group of a node in one
// Pebble database: each group's raft log and stable store, and each shard
// group's replicated object storage (keys, versions, alarms), plus the
// machinery to run a group (StartGroup) on hashicorp/raft.
//
// Store.NewEngine and ShardFSM.Machine run shard groups on the multiraft
// engine instead (docs/multiraft.md); nothing uses that path yet but its
// tests and benchmarks.
//
// # Why one Pebble
//
// A node hosts many groups. One database means one write-ahead log: the raft
// log appends of every group are synced with pebble.Sync and group-commit
// together, and the state machine's writes can be written NoSync because any
// later sync of the same, sequential WAL makes them durable too.
//
// # Key layout
//
// All numbers are fixed-width big-endian so byte order is numeric order.
// <group8> is the GroupID, <index8> a raft index, <obj32> an object ID, and
// <time8> an alarm time in unix milliseconds with its sign bit flipped
// (uint64(t) ^ 1<<63) so that negative times sort before positive ones.
//
//	r/<group8>/log/<index8>        raft log entry (hand-written codec, see logcodec.go)
//	r/<group8>/stable/<key>        raft StableStore (current term, vote, ...)
//	s/<group8>/o/<obj32>/<userkey> an object's user key → value
//	s/<group8>/v/<obj32>           an object's version (uint64); absent = 0
//	s/<group8>/a/<obj32>           an object's alarm time (<time8>)
//	s/<group8>/t/<time8>/<obj32>   alarm index by time (empty value)
//	s/<group8>/applied             the last raft index the shard FSM applied
//	s/<group8>/restoring           present while Restore is loading a snapshot
//	d/<group8>                     present while DeleteGroup removes the group
//
// Because <group8> is fixed-width, the ranges r/<group8>/ and s/<group8>/ of
// different groups never overlap: a group's whole state machine is the range
// [s/<group8>/, s/<group8>0) ('0' is '/'+1), which is what snapshots copy,
// and what Restore deletes. Snapshot streams carry keys relative to that
// prefix, so a snapshot can be loaded into another group and can never write
// outside the group it is restored into. Likewise [r/<group8>/, r/<group8>0)
// is the group's raft log and stable store; DeleteGroup deletes both ranges.
//
// # Invariants
//
//   - The FSM writes an entry's operations and the applied index in one
//     batch, so after a crash the state is exactly "every entry up to applied".
//     Entries at or below applied are skipped, which makes replaying the log
//     after a restart harmless; raft is run with NoSnapshotRestoreOnStart.
//   - Raft truncates its log only after a snapshot; ShardFSM.Snapshot syncs the
//     WAL before it returns, so the log is never truncated past what the FSM
//     has made durable.
//   - An ObjectBatch applies only if the object's stored version is
//     Version-1 and then sets it to Version; otherwise nothing of it applies.
//     This fences writes that were derived from a turn whose commit failed.
//   - An interrupted Restore leaves the restoring marker. While it is there
//     the FSM refuses entries and snapshots, and StartGroup lets raft restore
//     the group's latest snapshot on start instead of trusting a half-loaded
//     state. A failed FSM write likewise stops the FSM until a restart, since
//     applying later entries would skip the failed one.
//   - A group is deleted whole or not at all, as far as a later start can
//     tell: DeleteGroup removes its Pebble ranges in one synced batch with
//     the d/ marker, then its snapshot directory, then the marker, and Open
//     finishes any deletion the marker says was interrupted. Leftover
//     snapshots would otherwise make raft take their index as applied and
//     their configuration as the group's, over an empty state machine.
package raftstore
