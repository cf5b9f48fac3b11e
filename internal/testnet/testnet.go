// Package testnet hands tests loopback addresses for servers that must
// restart at the same address (cluster nodes keep their addresses in Raft
// configurations and the cluster map).
package testnet

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
)

// Ports are chosen below Linux's ephemeral range (32768 and up): a port the
// kernel handed out with :0 and the test released can be taken by any
// outgoing connection before the node restarts on it; these cannot.
const (
	lowPort  = 20000
	numPorts = 12000
)

// handedOut remembers the ports already given to this test process: a port
// is not bound until its node starts, so a free-looking port may already be
// promised to another node of the same cluster.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// FreeAddr returns a 127.0.0.1 address whose port is free for TCP and UDP
// (gossip uses both) at the time of the call, and never the same one twice
// in a test process.
func FreeAddr(t testing.TB) string {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 200 {
		port := lowPort + rand.IntN(numPorts)
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
	t.Fatal("testnet: no free loopback port found")
	return ""
}
