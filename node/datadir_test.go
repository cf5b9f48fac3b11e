package node

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roostdb/roost/durable"
)

// A data dir is put back only as far as the node made it: an absent one
// is removed, an empty one emptied, and one that held anything is left. A
// file another program put there while the node ran (a data dir given as
// ".", the working directory) is kept, and so is the dir that holds it,
// even one the node made.
func TestDataDirOriginRestore(t *testing.T) {
	mkdir := func(dir string) error { return os.Mkdir(dir, 0o755) }
	for _, tt := range []struct {
		name      string
		prepare   func(dir string) error
		others    []string // written during the run by another program
		want      dataDirOrigin
		wantAfter []string // entries left after restore; nil: the dir is gone
	}{
		{"absent", func(string) error { return nil }, nil, dataDirAbsent, nil},
		{"empty", mkdir, nil, dataDirEmpty, []string{}},
		{"held", func(dir string) error {
			if err := mkdir(dir); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, "mine"), nil, 0o644)
		}, nil, dataDirHeld, []string{"layout.json", "mine", "node.json", "pebble"}},
		{"absent, another's file", func(string) error { return nil }, []string{"roost.toml"}, dataDirAbsent, []string{"roost.toml"}},
		{"empty, another's file", mkdir, []string{"roost.toml"}, dataDirEmpty, []string{"roost.toml"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if err := tt.prepare(dir); err != nil {
				t.Fatal(err)
			}
			origin := dataDirOriginOf(dir)
			if origin != tt.want {
				t.Fatalf("origin %v, want %v", origin, tt.want)
			}
			// What a first start writes, and what others wrote meanwhile.
			if err := os.MkdirAll(filepath.Join(dir, "pebble"), 0o755); err != nil {
				t.Fatal(err)
			}
			for _, f := range append([]string{"node.json", "layout.json", "pebble/000001.log"}, tt.others...) {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := origin.restore(dir); err != nil {
				t.Fatal(err)
			}
			entries, err := os.ReadDir(dir)
			if tt.wantAfter == nil {
				if !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("dir still there: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			names := []string{}
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if !slices.Equal(names, tt.wantAfter) {
				t.Fatalf("left %v, want %v", names, tt.wantAfter)
			}
		})
	}
}

// Close puts a refused node's data dir back once: a second Close (an
// embedder's deferred Close after Run) leaves alone what a node started
// on the same dir since has written there.
func TestCloseRestoresDataDirOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	n := startNode(t, dir, nil)
	if n.newDataDir != dataDirAbsent {
		t.Fatalf("origin %v, want absent", n.newDataDir)
	}
	n.undoDataDir.Store(true) // as refuseFirstStart does
	closeNode(t, n)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused node's data dir is still there: %v", err)
	}
	next := startNode(t, dir, nil) // the corrected start, on the same dir
	defer closeNode(t, next)
	n.Close(context.Background())
	if _, err := os.Stat(filepath.Join(dir, "layout.json")); err != nil {
		t.Fatalf("a second Close of the refused node removed the next node's data: %v", err)
	}
}

// A first start that fails because the gossip address is taken (gossip
// binds only with the cluster, after the data dir is written) leaves the
// data dir as it was: absent. Before, it was left bound to the node's ID,
// shard count and id key.
func TestFailedFirstStartLeavesTheDataDir(t *testing.T) {
	taken, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := DefaultClusterConfig("b1")
	cfg.DataDir = filepath.Join(t.TempDir(), "fresh")
	cfg.HTTPAddr, cfg.AdminAddr, cfg.GRPCAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	cfg.GossipAddr = taken.LocalAddr().String()
	cfg.Logger = quietLogger
	n, err := New(cfg, testApp())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err == nil {
		n.Close(context.Background())
		t.Fatal("started with its gossip address taken")
	}
	if _, err := os.Stat(cfg.DataDir); !errors.Is(err, fs.ErrNotExist) {
		entries, _ := os.ReadDir(cfg.DataDir)
		t.Fatalf("the data dir after a failed first start: %v, holding %d entries; want it absent as before", err, len(entries))
	}
}

// TestStoppedWhileJoiningLeavesTheDataDir: a node stopped during its first
// join, before it met any node, puts its new data dir back as it was, as
// the refusal after joinPatience does; before, it stayed bound to the
// node's ID and shard count, and a restart with other flags was refused.
func TestStoppedWhileJoiningLeavesTheDataDir(t *testing.T) {
	cfg := DefaultClusterConfig("b1")
	cfg.DataDir = filepath.Join(t.TempDir(), "fresh")
	cfg.HTTPAddr, cfg.AdminAddr, cfg.GRPCAddr, cfg.GossipAddr = freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	cfg.Join = []string{freeAddr(t)} // nobody there
	cfg.Logger = quietLogger
	n, err := New(cfg, testApp())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "node.json")); err != nil {
		t.Fatalf("the joining node wrote no identity: %v", err)
	}
	time.Sleep(1500 * time.Millisecond) // a failed join or two
	if err := n.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.DataDir); !errors.Is(err, fs.ErrNotExist) {
		entries, _ := os.ReadDir(cfg.DataDir)
		t.Fatalf("the data dir of a node stopped while joining: %v, holding %d entries; want it absent as before", err, len(entries))
	}
}

// TestCheckLayout: a data dir's layout is written at its first start and
// checked at every later one; a store without its layout is refused, the
// dir left as it was, rather than given the layout of whatever start came
// first (found by QA: a start with the wrong --shards, refused at its
// join, left a layout that then refused the right one).
func TestCheckLayout(t *testing.T) {
	want := layout{Shards: 16, IDKey: durable.KeyFingerprint("")}
	for _, tt := range []struct {
		name     string
		files    map[string]string // relative path: contents
		wantErr  string            // "" for none
		is       error             // the sentinel wantErr comes with
		writesIt bool              // layout.json written by the check
	}{
		{"a new data dir", nil, "", nil, true},
		{"the same layout", map[string]string{"layout.json": `{"shards":16}`, "pebble/000001.log": "x"}, "", nil, false},
		{"another shard count", map[string]string{"layout.json": `{"shards":32}`}, "was created with 32 shards", ErrDataDirMismatch, false},
		{"a store without its layout", map[string]string{"pebble/000001.log": "x", "node.json": "{}"}, "holds a store but no layout.json", ErrNodeStateLost, false},
		{"an empty store dir", map[string]string{"pebble/": ""}, "", nil, true},
		{"a corrupt layout", map[string]string{"layout.json": `{"shar`}, "is corrupt", ErrDataDirMismatch, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, body := range tt.files {
				p := filepath.Join(dir, name)
				if strings.HasSuffix(name, "/") {
					if err := os.MkdirAll(p, 0o755); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, statErr := os.Stat(filepath.Join(dir, "layout.json"))
			err := checkLayout(dir, want)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr != "" && (!errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("%v, want %v saying %q", err, tt.is, tt.wantErr)
			}
			_, after := os.Stat(filepath.Join(dir, "layout.json"))
			if wrote := statErr != nil && after == nil; wrote != tt.writesIt {
				t.Fatalf("layout.json written: %v, want %v", wrote, tt.writesIt)
			}
		})
	}
}

// A store whose manifest is lost is refused with ErrNodeStateLost and what
// to do, its files left as they are (raftstore.ErrStoreDamaged), rather
// than replaced by a new, empty store.
func TestDamagedStoreIsRefused(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir, cfg.HTTPAddr, cfg.AdminAddr, cfg.Shards, cfg.Logger = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", 4, quietLogger
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "pebble"), 0o755); err != nil {
		t.Fatal(err)
	}
	table := filepath.Join(cfg.DataDir, "pebble", "000005.sst")
	if err := os.WriteFile(table, []byte("a table whose manifest is lost"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(layout{Shards: cfg.Shards, IDKey: durable.KeyFingerprint(cfg.IDKey)})
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "layout.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := New(cfg, testApp())
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	if err == nil {
		closeNode(t, n)
	}
	if !errors.Is(err, ErrNodeStateLost) || !strings.Contains(err.Error(), "Restore the data dir") {
		t.Fatalf("start on a store without its manifest: %v; want ErrNodeStateLost saying what to do", err)
	}
	if _, serr := os.Stat(table); serr != nil {
		t.Fatalf("the refused start removed the store's table: %v", serr)
	}
}
