package multiraft

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Config is an Engine's configuration. Start from DefaultConfig.
type Config struct {
	// NodeID is this node's Raft id in every group: non-zero, and unique
	// among the nodes that share groups.
	NodeID uint64
	// DB holds every group's log and state. The caller opens and closes it;
	// it must outlive the Engine. Other data may share it: the engine's keys
	// all begin with "m/".
	DB *pebble.DB
	// Transport carries messages to other nodes.
	Transport Transport
	// TickInterval is the length of one raft tick, for every group.
	TickInterval time.Duration
	// HeartbeatTicks is how many ticks pass between a leader's heartbeats.
	HeartbeatTicks int
	// ElectionTicks is how many ticks a follower waits without hearing from
	// a leader before it campaigns; raft randomises it over
	// [ElectionTicks, 2*ElectionTicks). It must exceed HeartbeatTicks.
	ElectionTicks int
	// MaxEntryBytes bounds a proposal's size. The peers' transport must
	// take a message of MaxMsgBytes plus one such entry (ServerOptions).
	MaxEntryBytes int
	// MaxMsgBytes bounds the entries one append message carries (one entry
	// is always sent, whatever its size).
	MaxMsgBytes uint64
	// MaxInflightMsgs bounds the append messages in flight to one follower.
	MaxInflightMsgs int
	// RoundInterval holds a round back until this long after the last
	// synced round that carried several groups' work, so that the next
	// round gathers more of it and its one sync and Send a peer serve more
	// groups (the engine's group commit; raftstore's SyncWindow is
	// hashicorp/raft's). A round after one that carried a single group is
	// not held back: one busy group alone waits for nothing. 0 turns it off.
	RoundInterval time.Duration
	// LogRetention is how many applied entries a group keeps in its log
	// (and in memory) so that a lagging follower can catch up from the log
	// rather than a snapshot. The log is compacted when it holds twice that.
	LogRetention uint64
	// Logger receives the engine's and raft's messages; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with the timing chosen for failover
// within about a second on a local network: 50 ms ticks, heartbeats every
// other tick (etcd's ratio of one heartbeat to ten ticks of election
// timeout), elections after 10-20 ticks (0.5-1 s) of silence. Heartbeats
// every tick cost an idle engine of 64 groups about two thirds more CPU
// (docs/multiraft.md). NodeID, DB and Transport must still be set.
func DefaultConfig() Config {
	return Config{
		TickInterval:    50 * time.Millisecond,
		HeartbeatTicks:  2,
		ElectionTicks:   10,
		MaxEntryBytes:   5 << 20, // raftstore's bound on a shard entry
		MaxMsgBytes:     1 << 20,
		MaxInflightMsgs: 256,
		RoundInterval:   500 * time.Microsecond,
		LogRetention:    1024,
	}
}

// Validate reports the first thing wrong with c.
func (c Config) Validate() error {
	switch {
	case c.NodeID == 0:
		return fmt.Errorf("%w: NodeID must be non-zero", ErrInvalidConfig)
	case c.DB == nil:
		return fmt.Errorf("%w: DB is required", ErrInvalidConfig)
	case c.Transport == nil:
		return fmt.Errorf("%w: Transport is required", ErrInvalidConfig)
	case c.TickInterval <= 0:
		return fmt.Errorf("%w: TickInterval must be positive, not %v", ErrInvalidConfig, c.TickInterval)
	case c.HeartbeatTicks < 1:
		return fmt.Errorf("%w: HeartbeatTicks must be at least 1, not %d", ErrInvalidConfig, c.HeartbeatTicks)
	case c.ElectionTicks <= c.HeartbeatTicks:
		return fmt.Errorf("%w: ElectionTicks (%d) must exceed HeartbeatTicks (%d)", ErrInvalidConfig, c.ElectionTicks, c.HeartbeatTicks)
	case c.MaxEntryBytes < 1:
		return fmt.Errorf("%w: MaxEntryBytes must be at least 1, not %d", ErrInvalidConfig, c.MaxEntryBytes)
	case c.MaxMsgBytes < 1:
		return fmt.Errorf("%w: MaxMsgBytes must be at least 1", ErrInvalidConfig)
	case c.MaxInflightMsgs < 1:
		return fmt.Errorf("%w: MaxInflightMsgs must be at least 1, not %d", ErrInvalidConfig, c.MaxInflightMsgs)
	case c.RoundInterval < 0:
		return fmt.Errorf("%w: RoundInterval must not be negative, not %v", ErrInvalidConfig, c.RoundInterval)
	case c.LogRetention < 1:
		return fmt.Errorf("%w: LogRetention must be at least 1", ErrInvalidConfig)
	}
	return nil
}
