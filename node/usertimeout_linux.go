package node

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// setTCPUserTimeout bounds how long data written to c may stay
// unacknowledged before the kernel gives the connection up.
func setTCPUserTimeout(c *net.TCPConn, timeout time.Duration) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(timeout/time.Millisecond))
	}); err != nil {
		return err
	}
	return serr
}
