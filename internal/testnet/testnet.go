// Package testnet hands tests loopback addresses for servers that must
// restart at the same address (cluster nodes keep their addresses in Raft
// configurations and the cluster map).
package testnet

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Ports are chosen below Linux's ephemeral range (32768 and up): a port the
// kernel handed out with :0 and the test released can be taken by any
// outgoing connection before the node restarts on it; these cannot.
//
// The range is cut into blocks, and a test process hands out ports only
// from blocks it holds a lock on (lockBlock): test processes run side by
// side (go test runs packages in parallel), and a port one of them has
// handed out is free between a node's stop and its restart, when another
// process could otherwise take it.
const (
	lowPort   = 20000
	numPorts  = 12000
	blockSize = 200
	numBlocks = numPorts / blockSize
	// claimAfter is how many picks in a row may fail (taken by something
	// else, or handed out already) before the process claims another block.
	claimAfter = 40
)

// handedOut remembers the ports already given to this test process: a port
// is not bound until its node starts, so a free-looking port may already be
// promised to another node of the same cluster. blocks are the blocks this
// process holds; their lock files stay open until it exits.
var handedOut = struct {
	sync.Mutex
	ports  map[int]bool
	blocks []int
	locks  []*os.File
}{ports: map[int]bool{}}

// FreeAddr returns a 127.0.0.1 address whose port is free for TCP and UDP
// (gossip uses both) at the time of the call, never the same one twice in
// a test process, and never one another test process using this package
// may hand out.
func FreeAddr(t testing.TB) string {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for failed := 0; ; failed++ {
		if len(handedOut.blocks) == 0 || failed > 0 && failed%claimAfter == 0 {
			if err := claimBlock(); err != nil {
				t.Fatalf("testnet: %v", err)
			}
		}
		b := handedOut.blocks[rand.IntN(len(handedOut.blocks))]
		port := lowPort + b*blockSize + rand.IntN(blockSize)
		if handedOut.ports[port] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		handedOut.ports[port] = true
		return addr
	}
}

// lockDir holds the blocks' lock files, shared by every user's test
// processes.
var lockDir = filepath.Join(os.TempDir(), "roost-testnet-ports")

// claimBlock adds to handedOut.blocks a block no other live process holds.
// handedOut is locked. The lock files are opened read-only (flock needs no
// more), so that one another user made (0644 after the umask) serves as
// well, and the dir is made writable by all (sticky, as /tmp) when this
// process creates it; a block whose file cannot be opened is passed over.
func claimBlock() error {
	dir := lockDir
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return err
		}
		os.Chmod(dir, 0o777|os.ModeSticky) // the umask took group and other write
	}
	var openErr error
	held := make(map[int]bool, len(handedOut.blocks))
	for _, b := range handedOut.blocks {
		held[b] = true
	}
	for _, b := range rand.Perm(numBlocks) {
		if held[b] {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("block-%d.lock", b)), os.O_CREATE|os.O_RDONLY, 0o666)
		if err != nil {
			openErr = err
			continue
		}
		if !tryLock(f) {
			f.Close()
			continue
		}
		handedOut.blocks = append(handedOut.blocks, b)
		handedOut.locks = append(handedOut.locks, f)
		return nil
	}
	if openErr != nil {
		return fmt.Errorf("no port block free to lock: %w", openErr)
	}
	return fmt.Errorf("every one of the %d port blocks is held by this or another test process", numBlocks)
}
