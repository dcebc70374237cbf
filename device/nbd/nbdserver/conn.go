package nbdserver

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
)

// ioBufSize is the size of the buffered reader and writer of a connection
// in transmission.
const ioBufSize = 64 << 10

// conn is one client connection: option haggling, then transmission. One
// reader goroutine (the one running serve) reads requests; each request
// is handled on its own goroutine, and replies are written whole under
// wmu, so they may leave in any order but never interleave.
type conn struct {
	s   *Server
	raw net.Conn // the socket: deadlines are set on it

	smu    sync.Mutex // guards stream
	stream net.Conn   // raw, or its TLS layer after NBD_OPT_STARTTLS
	rw     io.ReadWriter

	neg negotiated

	stopOnce sync.Once
	stop     chan struct{} // closed by stopReading

	budget   *budget
	inflight sync.WaitGroup // requests being handled

	wmu struct {
		sync.Mutex
		bw  *bufio.Writer
		err error // first write error; later replies are dropped
	}
}

// sendBuffer is the send buffer asked for a Unix-socket connection
// (SO_SNDBUF, capped by net.core.wmem_max): with the kernel's 208 KiB a
// 256 KiB read reply went out in two to three writes, 955 of 10,449
// failing with EAGAIN for 1 GiB read by nbdcopy. TCP keeps autotuning.
const sendBuffer = 4 << 20

func newConn(s *Server, nc net.Conn) *conn {
	if uc, ok := nc.(*net.UnixConn); ok {
		_ = uc.SetWriteBuffer(sendBuffer) // best effort
	}
	return &conn{
		s: s, raw: nc, stream: nc, rw: nc,
		stop:   make(chan struct{}),
		budget: newBudget(s.opts.MaxInFlight, s.opts.MaxInFlightBytes),
	}
}

// serve runs the connection to its end and closes it.
func (c *conn) serve() {
	defer c.close()
	if err := c.handshake(); err != nil {
		if !errors.Is(err, errAborted) && !c.stopped() {
			c.s.logf("nbdserver: %s: negotiation ended: %v", c.raw.RemoteAddr(), err)
		}
		return
	}
	c.transmit()
}

// setStream switches to the TLS layer.
func (c *conn) setStream(tc net.Conn) {
	c.smu.Lock()
	defer c.smu.Unlock()
	c.stream, c.rw = tc, tc
}

// write sends b during option haggling.
func (c *conn) write(b []byte) error {
	if _, err := c.rw.Write(b); err != nil {
		return fmt.Errorf("writing to the client: %w", err)
	}
	return nil
}

// stopped reports whether Shutdown asked the connection to stop.
func (c *conn) stopped() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// stopReading makes the reader stop at the next request boundary (or in
// the middle of a request, whose payload is then dropped unanswered);
// requests already read are still answered.
func (c *conn) stopReading() {
	c.stopOnce.Do(func() {
		close(c.stop)
		c.raw.SetReadDeadline(time.Now())
	})
}

// close closes the connection (TLS first, when up). Safe to call twice.
// It does not block on a reply stuck writing to a client that does not
// read: tls.Conn.Close then skips close_notify and closes the socket.
func (c *conn) close() {
	c.stopReading()
	c.smu.Lock()
	defer c.smu.Unlock()
	c.stream.Close()
	c.raw.Close()
}

// transmit reads requests until the client disconnects, breaks the
// protocol or the server stops, then waits for the requests in flight to
// be answered.
func (c *conn) transmit() {
	br := bufio.NewReaderSize(c.rw, ioBufSize)
	c.wmu.bw = bufio.NewWriterSize(c.rw, ioBufSize)
	defer c.inflight.Wait()
	var hdr [proto.RequestSize]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if !errors.Is(err, io.EOF) && !c.stopped() {
				c.s.logf("nbdserver: %s: reading a request: %v", c.raw.RemoteAddr(), err)
			}
			return
		}
		r, err := proto.ParseRequest(hdr[:])
		if err != nil {
			// Nothing can be trusted after a bad magic: hang up.
			c.s.logf("nbdserver: %s: %v", c.raw.RemoteAddr(), err)
			return
		}
		if r.Type == proto.CmdDisc || !c.accept(br, r) {
			return
		}
	}
}

// accept validates r, reads its payload and starts handling it. It
// reports false when the connection must stop reading.
func (c *conn) accept(br *bufio.Reader, r proto.Request) bool {
	var payload int64 // bytes of data following the header
	if r.Type == proto.CmdWrite {
		payload = int64(r.Length)
	}
	if e := c.check(r); e != 0 {
		if payload > 0 {
			if _, err := io.CopyN(io.Discard, br, payload); err != nil {
				return false
			}
		}
		c.replyError(r, e)
		return true
	}
	cost := payload
	if r.Type == proto.CmdRead {
		cost = int64(r.Length)
	}
	if !c.budget.acquire(cost, c.stop) {
		return false
	}
	buf := c.s.getBuf(int(payload))
	if _, err := io.ReadFull(br, buf.b); err != nil {
		c.s.putBuf(buf)
		c.budget.release(cost)
		return false
	}
	c.inflight.Add(1)
	go func() {
		defer c.inflight.Done()
		defer c.budget.release(cost)
		defer c.s.putBuf(buf)
		c.handle(r, buf.b)
	}()
	return true
}

// send writes one reply made of parts, whole, and flushes it. After a
// write error the connection is closed, which stops the reader; later
// replies are dropped. send may change the slice parts (not the bytes it
// refers to).
func (c *conn) send(parts ...[]byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wmu.err != nil {
		return
	}
	var err error
	if c.vectored(parts) {
		// A large reply on the plain socket: one writev of header and
		// data, not a buffer's worth and then the rest.
		bufs := net.Buffers(parts)
		_, err = bufs.WriteTo(c.rw)
	} else {
		for _, p := range parts {
			if _, err = c.wmu.bw.Write(p); err != nil {
				break
			}
		}
		if err == nil {
			err = c.wmu.bw.Flush()
		}
	}
	if err != nil {
		c.wmu.err = err
		c.raw.Close()
	}
}

// vectored reports whether parts go out with one writev: they are longer
// than the write buffer, which is empty, and the stream is the socket
// itself (TLS has no writev). Callers hold wmu.
func (c *conn) vectored(parts [][]byte) bool {
	if len(parts) < 2 || c.wmu.bw.Buffered() != 0 || c.rw != c.raw {
		return false
	}
	var n int
	for _, p := range parts {
		n += len(p)
	}
	return n > ioBufSize
}

// replyError answers r with error value e: an error chunk for reads and
// block status when structured replies are on, a simple reply otherwise.
func (c *conn) replyError(r proto.Request, e uint32) {
	if c.neg.structured && (r.Type == proto.CmdRead || r.Type == proto.CmdBlockStatus) {
		c.send(proto.AppendErrorChunk(nil, r.Cookie, e, proto.ErrnoName(e)))
		return
	}
	c.send(proto.AppendSimpleReply(nil, e, r.Cookie))
}

// reply answers r with e (0 for success) and no payload.
func (c *conn) reply(r proto.Request, e uint32) {
	if e != 0 {
		c.replyError(r, e)
		return
	}
	c.send(proto.AppendSimpleReply(nil, 0, r.Cookie))
}
