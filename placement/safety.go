package placement

import (
	"fmt"
	"slices"
)

// Quorum is the size of a majority of n replicas.
func Quorum(n int) int { return n/2 + 1 }

// SafeChange reports whether a shard's replica set may go from cur to next
// in one step. The rule protects committed data: an entry committed under
// cur is on a majority of cur, so the replicas kept must meet every
// majority of cur — |kept| > |cur| - Quorum(|cur|). With single-replica
// steps that comes down to:
//
//   - next is non-empty and has no duplicates;
//   - at most one replica is added and at most one removed;
//   - a replica is removed only from a set of two or more, so a lone
//     replica is moved by adding the new one first ({A} → {A,B} → {B}).
//
// A step that adds one and removes one ({A,B,C} → {A,B,D}) is allowed: the
// shard leader carries it out as add (as non-voter, catch up, promote),
// then remove, so the group never has fewer up-to-date voters than before.
func SafeChange(cur, next []NodeID) error {
	if len(next) == 0 {
		return fmt.Errorf("%w: a shard needs at least one replica", ErrUnsafe)
	}
	for i, id := range next {
		if slices.Contains(next[:i], id) {
			return fmt.Errorf("%w: replica %s listed twice", ErrUnsafe, id)
		}
	}
	var added, removed []NodeID
	for _, id := range next {
		if !slices.Contains(cur, id) {
			added = append(added, id)
		}
	}
	for _, id := range cur {
		if !slices.Contains(next, id) {
			removed = append(removed, id)
		}
	}
	if len(added) > 1 {
		return fmt.Errorf("%w: adds %d replicas %v in one step; add one at a time", ErrUnsafe, len(added), added)
	}
	if len(removed) > 1 {
		return fmt.Errorf("%w: removes %d replicas %v in one step; remove one at a time", ErrUnsafe, len(removed), removed)
	}
	kept := len(cur) - len(removed)
	if len(removed) > 0 && kept <= len(cur)-Quorum(len(cur)) {
		return fmt.Errorf("%w: removing %s would leave %d of %d replicas, which may miss committed entries; add the new replica first",
			ErrUnsafe, removed[0], kept, len(cur))
	}
	return nil
}
