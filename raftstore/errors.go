package raftstore

import "errors"

// Sentinel errors. Functions wrap them with context; test with errors.Is.
var (
	// ErrNotFound is what StableStore returns for a missing key. Its text
	// must be exactly "not found": hashicorp/raft compares err.Error() with
	// that string, so it is returned unwrapped.
	ErrNotFound = errors.New("not found")
	// ErrCorruptEntry: bytes that are not a valid encoded Entry.
	ErrCorruptEntry = errors.New("raftstore: corrupt entry")
	// ErrInvalidEntry: an Entry that cannot be encoded (unknown op kind, a
	// field the op does not carry, version 0).
	ErrInvalidEntry = errors.New("raftstore: invalid entry")
	// ErrCorruptLog: a stored raft log entry that cannot be decoded.
	ErrCorruptLog = errors.New("raftstore: corrupt raft log entry")
	// ErrCorruptState: a stored state value (version, alarm, applied index,
	// stable uint64) of the wrong shape.
	ErrCorruptState = errors.New("raftstore: corrupt stored state")
	// ErrCorruptSnapshot: a snapshot stream that is malformed or fails its checksum.
	ErrCorruptSnapshot = errors.New("raftstore: corrupt snapshot")
	// ErrInvalidGroupID: a string that is not a group ID.
	ErrInvalidGroupID = errors.New("raftstore: invalid group ID")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("raftstore: store closed")
	// ErrStoreDamaged: the store's directory holds files but Pebble finds
	// no database in it (its manifest or the marker naming it is gone).
	// Open refuses rather than create a new database there, which would
	// delete the old one's tables.
	ErrStoreDamaged = errors.New("raftstore: the store's files are there but its manifest is not")
	// ErrStoreStalled: every write has waited on Pebble while its flushes
	// or compactions fail (Options.OnStalled).
	ErrStoreStalled = errors.New("raftstore: storage writes stalled")
	// ErrGroupRunning: StartGroup for a group that is already running on
	// this Store, or DeleteGroup for one that is running.
	ErrGroupRunning = errors.New("raftstore: group already running")
	// ErrInvalidConfig: a GroupConfig that lacks something required.
	ErrInvalidConfig = errors.New("raftstore: invalid group config")
	// ErrFSMFailed: the shard FSM could not write an entry. It then refuses
	// every later entry (applying them would skip the failed one); restarting
	// the group re-applies from the log.
	ErrFSMFailed = errors.New("raftstore: shard FSM failed")
	// ErrPeerStreamBroke and ErrPeerSilent are why a peer was reported
	// lost (TransportConfig.PeerLost): its heartbeat stream to this node
	// broke, or carried nothing for SilenceTimeout.
	ErrPeerStreamBroke = errors.New("its heartbeat stream broke")
	ErrPeerSilent      = errors.New("its heartbeat stream went silent")
)
