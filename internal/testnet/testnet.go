// Package testnet hands tests loopback addresses for servers that must
// restart at the same address (cluster nodes keep their addresses in Raft
// configurations and the cluster map).
package testnet

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
)

// Ports are chosen below Linux's ephemeral range (32768 and up): a port the
// kernel handed out with :0 and the test released can be taken by any
// outgoing connection before the node restarts on it; these cannot.
const (
	lowPort  = 20000
	numPorts = 12000
)

// FreeAddr returns a 127.0.0.1 address whose port is free for TCP and UDP
// (gossip uses both) at the time of the call.
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 200 {
		addr := fmt.Sprintf("127.0.0.1:%d", lowPort+rand.IntN(numPorts))
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
		return addr
	}
	t.Fatal("testnet: no free loopback port found")
	return ""
}
