package testnet

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Ports come from blocks this process holds, distinct, and a block held
// here cannot be locked through another open file (as another process
// would try).
func TestFreeAddrFromHeldBlocks(t *testing.T) {
	seen := map[string]bool{}
	for range 3 * blockSize / 2 { // more than one block holds
		addr := FreeAddr(t)
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		b := (port - lowPort) / blockSize
		held := false
		for _, hb := range handedOut.blocks {
			held = held || hb == b
		}
		if port < lowPort || !held {
			t.Fatalf("%s is not in a block this process holds (%v)", addr, handedOut.blocks)
		}
	}
	if len(handedOut.blocks) < 2 {
		t.Fatalf("%d ports from %d block(s)", len(seen), len(handedOut.blocks))
	}
	for _, b := range handedOut.blocks {
		f, err := os.Open(filepath.Join(lockDir, fmt.Sprintf("block-%d.lock", b)))
		if err != nil {
			t.Fatal(err)
		}
		if tryLock(f) {
			t.Errorf("block %d could be locked again", b)
		}
		f.Close()
	}
}

// Lock files this user may not write (another user's, 0644 after the
// umask) still serve: the first user to run the tests made them, and
// every later user's FreeAddr failed with "permission denied".
func TestFreeAddrWithAnotherUsersLockFiles(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may write any file: run as another user")
	}
	handedOut.Lock()
	blocks, locks, dir := handedOut.blocks, handedOut.locks, lockDir
	handedOut.blocks, handedOut.locks, lockDir = nil, nil, t.TempDir()
	handedOut.Unlock()
	t.Cleanup(func() {
		handedOut.Lock()
		defer handedOut.Unlock()
		for _, f := range handedOut.locks {
			f.Close()
		}
		handedOut.blocks, handedOut.locks, lockDir = blocks, locks, dir
	})
	for b := range numBlocks {
		if err := os.WriteFile(filepath.Join(lockDir, fmt.Sprintf("block-%d.lock", b)), nil, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	addr := FreeAddr(t)
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	if len(handedOut.blocks) != 1 || (port-lowPort)/blockSize != handedOut.blocks[0] {
		t.Fatalf("%s, blocks held %v", addr, handedOut.blocks)
	}
}
