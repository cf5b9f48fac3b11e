package raftstore

import (
	"fmt"
	"strconv"
)

// GroupID names a Raft group of the node: the meta group or a shard.
type GroupID uint64

// String is the decimal form, used in logs and snapshot directory names.
func (g GroupID) String() string { return strconv.FormatUint(uint64(g), 10) }

// ParseGroupID parses the String form.
func ParseGroupID(s string) (GroupID, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	// Only the canonical form is accepted ("7", not "007"), so a group has
	// exactly one name and one snapshot directory.
	if err != nil || GroupID(v).String() != s {
		return 0, fmt.Errorf("%w: %q", ErrInvalidGroupID, s)
	}
	return GroupID(v), nil
}
