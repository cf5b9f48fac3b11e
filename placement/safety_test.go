package placement

import (
	"errors"
	"testing"
)

func ids(s ...string) []NodeID {
	out := make([]NodeID, len(s))
	for i, v := range s {
		out[i] = NodeID(v)
	}
	return out
}

func TestSafeChange(t *testing.T) {
	for _, tc := range []struct {
		cur, next []NodeID
		ok        bool
	}{
		{ids("a", "b", "c"), ids("a", "b", "c"), true},
		{ids("a", "b", "c"), ids("c", "b", "a"), true},
		{ids("a", "b", "c"), ids("a", "b", "c", "d"), true},
		{ids("a", "b", "c"), ids("a", "b", "d"), true},  // replace one
		{ids("a", "b", "c"), ids("a", "b"), true},       // remove one
		{ids("a", "b", "c"), ids("a"), false},           // remove two
		{ids("a", "b", "c"), ids("a", "d", "e"), false}, // replace two
		{ids("a", "b", "c"), ids("d", "e", "f"), false},
		{ids("a", "b", "c"), ids("a", "b", "c", "d", "e"), false}, // add two
		{ids("a", "b"), ids("a"), true},                           // a pair keeps one that has every commit
		{ids("a", "b"), ids("a", "c"), true},
		{ids("a"), ids("a", "b"), true},
		{ids("a"), ids("b"), false}, // a lone replica must be added to first
		{ids("a"), nil, false},
		{ids("a", "b", "c"), ids("a", "a", "b"), false},
		{ids("a", "b", "c", "d", "e"), ids("a", "b", "c", "d"), true},
		{ids("a", "b", "c", "d", "e"), ids("a", "b", "c"), false},
	} {
		err := SafeChange(tc.cur, tc.next)
		if tc.ok != (err == nil) {
			t.Errorf("SafeChange(%v, %v) = %v, want ok=%v", tc.cur, tc.next, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrUnsafe) {
			t.Errorf("SafeChange(%v, %v) = %v, not ErrUnsafe", tc.cur, tc.next, err)
		}
	}
}

// TestSafeChangeKeepsACommittedCopy checks the rule against its purpose by
// brute force: for every allowed change, every majority of cur (a set that
// may hold a committed entry alone) meets the kept replicas.
func TestSafeChangeKeepsACommittedCopy(t *testing.T) {
	all := ids("a", "b", "c", "d", "e", "f")
	for n := 1; n <= 5; n++ {
		cur := all[:n]
		// every subset of cur plus at most one extra node
		for mask := 0; mask < 1<<n; mask++ {
			for extra := -1; extra < 1; extra++ {
				var next []NodeID
				for i := 0; i < n; i++ {
					if mask&(1<<i) != 0 {
						next = append(next, cur[i])
					}
				}
				if extra == 0 {
					next = append(next, all[5])
				}
				if SafeChange(cur, next) != nil {
					continue
				}
				for maj := 0; maj < 1<<n; maj++ {
					size, meets := 0, false
					for i := 0; i < n; i++ {
						if maj&(1<<i) != 0 {
							size++
							if mask&(1<<i) != 0 {
								meets = true
							}
						}
					}
					if size >= Quorum(n) && !meets {
						t.Fatalf("SafeChange allowed %v → %v, which drops the whole majority %b", cur, next, maj)
					}
				}
			}
		}
	}
}
