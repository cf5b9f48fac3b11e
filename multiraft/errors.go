package multiraft

import "errors"

// Sentinel errors. Functions wrap them with context; test with errors.Is.
var (
	// ErrNotLeader: this node does not lead the group, so the proposal,
	// read or change was not started. It never reached the log: retrying
	// elsewhere cannot apply it twice.
	ErrNotLeader = errors.New("multiraft: not the leader")
	// ErrLeadershipLost: this node lost the group's leadership (or the
	// group stopped) while a proposal was in flight. The entry may or may
	// not be committed later: the outcome is unknown.
	ErrLeadershipLost = errors.New("multiraft: leadership lost; the outcome is unknown")
	// ErrClosed: the Engine was closed.
	ErrClosed = errors.New("multiraft: engine closed")
	// ErrGroupExists: StartGroup for a group that is already running.
	ErrGroupExists = errors.New("multiraft: group already running")
	// ErrNoGroup: a group that is not running on this engine.
	ErrNoGroup = errors.New("multiraft: no such group")
	// ErrConfChangePending: another configuration change of the group has
	// not been applied yet; raft takes one at a time. Retry later.
	ErrConfChangePending = errors.New("multiraft: a configuration change is pending")
	// ErrInvalidConfig: a Config or GroupConfig that lacks something
	// required or holds a value out of range.
	ErrInvalidConfig = errors.New("multiraft: invalid config")
	// ErrCorruptState: stored bytes of the wrong shape.
	ErrCorruptState = errors.New("multiraft: corrupt stored state")
	// ErrTooLarge: a proposal larger than Config.MaxEntryBytes.
	ErrTooLarge = errors.New("multiraft: proposal too large")
)
