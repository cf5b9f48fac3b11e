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
		f, err := os.OpenFile(filepath.Join(os.TempDir(), "roost-testnet-ports", fmt.Sprintf("block-%d.lock", b)), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if tryLock(f) {
			t.Errorf("block %d could be locked again", b)
		}
		f.Close()
	}
}
