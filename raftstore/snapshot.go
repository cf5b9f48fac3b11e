package raftstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// Snapshot stream, version 1:
//
//	magic "RSNP" | version(1)
//	record*: uvarint len(key) (≥ 1) | key | uvarint len(value) | value
//	uvarint 0 (end of records) | uvarint record count
//	crc32c(4, big-endian) of every byte before it
//
// Keys are relative to the group's s/<group8>/ prefix, so a stream can be
// loaded into any group and can only ever write inside it.
var snapshotMagic = [5]byte{'R', 'S', 'N', 'P', 1}

// Bounds on what a stream may claim, so garbage cannot make Restore
// allocate without limit. Real keys are at most a few KiB (durable.Limits)
// and values a few MiB.
const (
	maxSnapshotKey   = 1 << 20
	maxSnapshotValue = 256 << 20
	// restoreBatchBytes bounds the Pebble batches Restore writes.
	restoreBatchBytes = 4 << 20
)

// Snapshot captures the group's state as a Pebble snapshot. It first syncs
// Pebble's WAL, so everything applied so far is durable before raft, seeing
// the snapshot, truncates the log it could otherwise be rebuilt from.
func (f *ShardFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.s.acquire(); err != nil {
		return nil, err
	}
	defer f.s.mu.RUnlock()
	if err := f.load(); err != nil {
		return nil, err
	}
	if f.failed != nil {
		// A snapshot of a state the FSM does not vouch for (a failed write,
		// a half-done restore) would let raft truncate the log that can
		// repair it, and spread it to followers.
		return nil, f.failed
	}
	// An empty synced write syncs the WAL, and with it every earlier
	// NoSync write of the FSM.
	if err := f.s.db.LogData(nil, pebble.Sync); err != nil {
		return nil, fmt.Errorf("raftstore: syncing before snapshot of group %s: %w", f.g, err)
	}
	return &shardSnapshot{s: f.s, ks: f.ks, snap: f.s.db.NewSnapshot()}, nil
}

var _ raft.FSMSnapshot = (*shardSnapshot)(nil)

type shardSnapshot struct {
	s    *Store
	ks   keyspace
	snap *pebble.Snapshot
	once sync.Once
}

// Persist streams the group's key/value pairs to sink.
func (sn *shardSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := sn.write(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (sn *shardSnapshot) write(w io.Writer) error {
	if err := sn.s.acquire(); err != nil {
		return err
	}
	defer sn.s.mu.RUnlock()
	it, err := sn.snap.NewIter(&pebble.IterOptions{LowerBound: sn.ks.statePrefix, UpperBound: sn.ks.stateEnd})
	if err != nil {
		return fmt.Errorf("raftstore: snapshot iterator: %w", err)
	}
	crc := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 64<<10)
	_, _ = bw.Write(snapshotMagic[:])
	var n uint64
	var hdr []byte
	for ok := it.First(); ok; ok = it.Next() {
		rel := it.Key()[len(sn.ks.statePrefix):]
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("raftstore: snapshot read: %w", err)
		}
		hdr = binary.AppendUvarint(hdr[:0], uint64(len(rel)))
		_, _ = bw.Write(hdr)
		_, _ = bw.Write(rel)
		hdr = binary.AppendUvarint(hdr[:0], uint64(len(v)))
		_, _ = bw.Write(hdr)
		_, _ = bw.Write(v)
		n++
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("raftstore: snapshot iterator: %w", err)
	}
	hdr = binary.AppendUvarint(hdr[:0], 0)
	hdr = binary.AppendUvarint(hdr, n)
	_, _ = bw.Write(hdr)
	// bufio keeps the first write error; Flush reports it.
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("raftstore: writing snapshot: %w", err)
	}
	if _, err := w.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32())); err != nil {
		return fmt.Errorf("raftstore: writing snapshot: %w", err)
	}
	return nil
}

// Release closes the Pebble snapshot (once; not after the Store closed).
func (sn *shardSnapshot) Release() {
	sn.once.Do(func() {
		if sn.s.acquire() != nil {
			return // the database is gone, and its snapshots with it
		}
		defer sn.s.mu.RUnlock()
		_ = sn.snap.Close()
	})
}

// Restore replaces the group's state with a snapshot stream. It deletes the
// group's range and sets the restoring marker in one synced batch, loads the
// stream in bounded batches, and removes the marker in a final synced batch.
// If it fails or is interrupted, the marker stays: the FSM refuses entries
// and StartGroup has raft restore from its snapshot store on the next start.
func (f *ShardFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.s.acquire(); err != nil {
		return err
	}
	defer f.s.mu.RUnlock()
	// Whatever happens, the cached applied index and failure are re-read.
	f.loaded = false
	if err := f.restore(rc); err != nil {
		return fmt.Errorf("raftstore: restoring group %s: %w", f.g, err)
	}
	return f.load()
}

func (f *ShardFSM) restore(rc io.Reader) error {
	b := f.s.db.NewBatch()
	if err := b.DeleteRange(f.ks.statePrefix, f.ks.stateEnd, nil); err != nil {
		b.Close()
		return err
	}
	if err := b.Set(f.ks.restoring, nil, nil); err != nil {
		b.Close()
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		b.Close()
		return err
	}
	b.Close()

	b = f.s.db.NewBatch()
	defer func() { b.Close() }()
	err := readSnapshotStream(rc, &f.ks, func(key, val []byte) error {
		if err := b.Set(key, val, nil); err != nil {
			return err
		}
		if b.Len() < restoreBatchBytes {
			return nil
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			return err
		}
		b.Close()
		b = f.s.db.NewBatch()
		return nil
	})
	if err != nil {
		return err
	}
	// The marker goes with the last records, synced: from here the state
	// is complete and durable.
	if err := b.Delete(f.ks.restoring, nil); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}

// readSnapshotStream reads a snapshot stream, handing set each key (made
// absolute in ks's group) and value, then checks the record count and the
// checksum. set must copy what it keeps.
func readSnapshotStream(rc io.Reader, ks *keyspace, set func(key, val []byte) error) error {
	r := &crcReader{r: bufio.NewReaderSize(rc, 64<<10), crc: crc32.New(crc32.MakeTable(crc32.Castagnoli))}
	var magic [len(snapshotMagic)]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return corruptSnapshot(err)
	}
	if magic != snapshotMagic {
		return fmt.Errorf("%w: bad header %q", ErrCorruptSnapshot, magic[:])
	}
	var n uint64
	var key, val []byte
	for {
		klen, err := binary.ReadUvarint(r)
		if err != nil {
			return corruptSnapshot(err)
		}
		if klen == 0 {
			break
		}
		if klen > maxSnapshotKey {
			return fmt.Errorf("%w: key of %d bytes", ErrCorruptSnapshot, klen)
		}
		key = append(key[:0], ks.statePrefix...)
		key = append(key, make([]byte, klen)...)
		if _, err := io.ReadFull(r, key[len(ks.statePrefix):]); err != nil {
			return corruptSnapshot(err)
		}
		vlen, err := binary.ReadUvarint(r)
		if err != nil {
			return corruptSnapshot(err)
		}
		if vlen > maxSnapshotValue {
			return fmt.Errorf("%w: value of %d bytes", ErrCorruptSnapshot, vlen)
		}
		if uint64(cap(val)) < vlen {
			val = make([]byte, vlen)
		}
		val = val[:vlen]
		if _, err := io.ReadFull(r, val); err != nil {
			return corruptSnapshot(err)
		}
		if err := set(key, val); err != nil {
			return err
		}
		n++
	}
	count, err := binary.ReadUvarint(r)
	if err != nil {
		return corruptSnapshot(err)
	}
	if count != n {
		return fmt.Errorf("%w: %d records, trailer says %d", ErrCorruptSnapshot, n, count)
	}
	want := r.crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(r.r, sum[:]); err != nil {
		return corruptSnapshot(err)
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return fmt.Errorf("%w: checksum %08x, computed %08x", ErrCorruptSnapshot, got, want)
	}
	if extra, _ := r.r.Read(make([]byte, 1)); extra != 0 {
		return fmt.Errorf("%w: bytes after the checksum", ErrCorruptSnapshot)
	}
	return nil
}

func corruptSnapshot(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %w", ErrCorruptSnapshot, err)
}

// crcReader checksums what is read through it.
type crcReader struct {
	r   *bufio.Reader
	crc hash.Hash32
	one [1]byte
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	_, _ = c.crc.Write(p[:n])
	return n, err
}

func (c *crcReader) ReadByte() (byte, error) {
	v, err := c.r.ReadByte()
	if err == nil {
		c.one[0] = v
		_, _ = c.crc.Write(c.one[:])
	}
	return v, err
}

var _ io.ByteReader = (*crcReader)(nil)
