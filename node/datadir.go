package node

import (
	"errors"
	"os"
	"path/filepath"
)

// dataDirOrigin is how a node's data dir was when Start began: absent,
// empty, or holding data. A node refused at its first join (another
// cluster, another shard count, a live member's ID) never held any of the
// cluster's data, yet its start wrote its identity and layout there; the
// refusal should change nothing, so Close puts such a data dir back the
// way it was (refuseFirstStart) and the same dir works for the next try.
type dataDirOrigin int

const (
	dataDirHeld   dataDirOrigin = iota // it held something: never undone
	dataDirAbsent                      // Start created it
	dataDirEmpty                       // it existed, empty
)

// dataDirOriginOf tells how dir is now. A dir it cannot list counts as
// held (never undone): the node may still be able to use it, and Start
// reports what it cannot do.
func dataDirOriginOf(dir string) dataDirOrigin {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return dataDirAbsent
	case err == nil && len(entries) == 0:
		return dataDirEmpty
	}
	return dataDirHeld
}

// dataDirEntries are what a node writes in its data dir: its identity,
// its layout and its store (Start), and the record of its removal.
var dataDirEntries = []string{"node.json", "layout.json", "pebble", removedMarker}

// restore removes what the node wrote to a data dir that was absent or
// empty: its own entries only, so that a file another program put there
// meanwhile (a data dir given as ".", the working directory) is kept, and
// the dir itself only if it was absent and nothing else is in it now.
// Only Close calls it, once the store is closed; the store's lock kept any
// other node out of the dir until then.
func (o dataDirOrigin) restore(dir string) error {
	if o == dataDirHeld {
		return nil
	}
	var errs []error
	for _, name := range dataDirEntries {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, name)))
	}
	if o == dataDirAbsent {
		if entries, err := os.ReadDir(dir); err == nil && len(entries) == 0 {
			errs = append(errs, os.Remove(dir))
		}
	}
	return errors.Join(errs...)
}
