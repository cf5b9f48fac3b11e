//go:build !linux

package node

import (
	"net"
	"time"
)

// setTCPUserTimeout does nothing where TCP_USER_TIMEOUT is not known, as
// gRPC's own setting does nothing there.
func setTCPUserTimeout(*net.TCPConn, time.Duration) error { return nil }
