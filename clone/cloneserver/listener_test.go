package cloneserver

import (
	"net"
	"path/filepath"
	"testing"
)

// isClosed reports whether ch is closed now.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestCountingListener: idle is closed with no connection open, open from
// the first accepted connection until the last one is closed, and a
// connection closed twice counts once.
func TestCountingListener(t *testing.T) {
	inner, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	l := newCountingListener(inner)
	defer l.Close()
	if !isClosed(l.idle()) {
		t.Fatal("idle is open before any connection")
	}
	var conns []net.Conn
	for range 2 {
		c, err := net.Dial("unix", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, sc)
	}
	idle := l.idle()
	conns[0].Close()
	conns[0].Close()
	if isClosed(idle) || isClosed(l.idle()) {
		t.Fatal("idle closed with a connection still open")
	}
	conns[1].Close()
	if !isClosed(idle) || !isClosed(l.idle()) {
		t.Fatal("idle open with every connection closed")
	}
}
