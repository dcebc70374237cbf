package nbd

import (
	"net"

	"golang.org/x/sys/unix"
)

// SendBuffer returns SO_SNDBUF of d's first connection, a Unix socket.
func SendBuffer(d *Device) (int, error) {
	rc, err := d.conns[0].nc.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var serr error
	if err := rc.Control(func(fd uintptr) { n, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF) }); err != nil {
		return 0, err
	}
	return n, serr
}
