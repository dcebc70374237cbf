package cloneserver

import (
	"net"
	"sync"
)

// countingListener counts the connections it accepted that are still
// open, so that Serve can wait for the last client to leave.
type countingListener struct {
	net.Listener
	mu struct {
		sync.Mutex
		open   int
		idleCh chan struct{} // closed while open == 0
	}
}

func newCountingListener(l net.Listener) *countingListener {
	c := &countingListener{Listener: l}
	c.mu.idleCh = make(chan struct{})
	close(c.mu.idleCh)
	return c
}

// Accept implements net.Listener.
func (l *countingListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.open == 0 {
		l.mu.idleCh = make(chan struct{})
	}
	l.mu.open++
	return &countedConn{Conn: nc, l: l}, nil
}

// done counts a connection closed.
func (l *countingListener) done() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.open--; l.mu.open == 0 {
		close(l.mu.idleCh)
	}
}

// idle returns a channel that is closed once no accepted connection is
// open (at once when none is now).
func (l *countingListener) idle() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.idleCh
}

// countedConn tells its listener when it is closed, once.
type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

// Close implements net.Conn.
func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.l.done)
	return err
}
