package linearize

import (
	"fmt"
	"sort"
)

// Loss describes one key whose final count contradicts its history.
type Loss struct {
	Key   string
	Final int // the count read back after the run
	// MaxAcked is the highest count any call on the key returned: an
	// increment's new count or a read's value.
	MaxAcked int
	// Attempts is how many increments were not marked Failed, that is how
	// many could have taken effect.
	Attempts int
	// Lost: MaxAcked > Final, a count that was acknowledged (or observed)
	// has been rolled back. Phantom: Final > Attempts, more increments took
	// effect than were ever sent. A key can be both.
	Lost, Phantom bool
}

func (l Loss) String() string {
	var what string
	switch {
	case l.Lost && l.Phantom:
		what = "lost and phantom writes"
	case l.Lost:
		what = "lost acknowledged write"
	default:
		what = "phantom write"
	}
	return fmt.Sprintf("%q: %s (final %d, max acknowledged %d, %d increments attempted)",
		l.Key, what, l.Final, l.MaxAcked, l.Attempts)
}

// Losses compares final, the count of each key read back after the run,
// with the recorded history. It reports, sorted by key, every key where an
// acknowledged count exceeds the final count (a lost write) or the final
// count exceeds the number of increments that could have taken effect (a
// phantom write). Keys absent from final are not judged; keys in final that
// were never recorded have had no increments attempted.
func Losses(r *Recorder, final map[string]int) []Loss {
	byKey := r.snapshot()
	var out []Loss
	for key, f := range final {
		l := Loss{Key: key, Final: f}
		for _, rc := range byKey[key] {
			if rc.outcome == okay {
				l.MaxAcked = max(l.MaxAcked, rc.value)
			}
			if rc.kind == Increment && rc.outcome != failed {
				l.Attempts++
			}
		}
		l.Lost = l.MaxAcked > f
		l.Phantom = f > l.Attempts
		if l.Lost || l.Phantom {
			out = append(out, l)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Key < out[b].Key })
	return out
}

// LostWrites returns the keys, sorted, for which Losses reports a lost or
// phantom write.
func LostWrites(r *Recorder, final map[string]int) []string {
	var keys []string
	for _, l := range Losses(r, final) {
		keys = append(keys, l.Key)
	}
	return keys
}
