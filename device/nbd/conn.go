package nbd

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
)

// Transmission bounds: what a server can make one reply cost the client.
const (
	maxErrorChunk  = 64 << 10 // payload of one error chunk
	maxDescriptors = 1 << 17  // block descriptors kept from one reply
	maxSpans       = 1 << 16  // disjoint pieces of one read reply
	readBufSize    = 256 << 10
)

// request is one NBD command in flight. The submitting goroutine fills the
// first group of fields and waits on done; the connection's reader
// goroutine alone fills the rest, sets err and closes done, after which it
// never touches the request again.
type request struct {
	typ    uint16
	flags  uint16
	off    uint64
	length uint32
	data   []byte // CmdRead: destination (len == length); CmdWrite: payload
	done   chan struct{}
	err    error

	// Reply state, owned by the reader goroutine.
	spans     spans // read: ranges received, relative to off
	status    []proto.BlockDescriptor
	gotStatus bool
	srvErr    *ServerError
}

// conn is one NBD connection in the transmission phase.
type conn struct {
	nc      net.Conn      // the socket: closed to stop everything
	w       io.Writer     // the stream requests are written to (nc or TLS)
	vec     bool          // w is nc and supports writev through net.Buffers
	r       *bufio.Reader // the reply stream, read only by the reader goroutine
	ex      *export
	timeout time.Duration

	wmu sync.Mutex // serialises whole requests (header and payload) on w

	mu struct {
		sync.Mutex
		pending  map[uint64]*request // by cookie
		cookie   uint64              // last cookie used; cookies are never reused
		err      error               // set once: the connection takes no new requests
		draining bool                // the server said ESHUTDOWN: disconnect when idle
	}

	slots        chan struct{} // one token per request in flight
	load         atomic.Int64  // requests holding a slot
	lastProgress atomic.Int64  // unix nanoseconds of the last byte received or first request sent
	dead         chan struct{} // closed when the socket is closed
	deadOnce     sync.Once
	readerDone   chan struct{}
}

// newConn starts the reader (and, with a timeout, the watchdog) goroutine
// of a connection whose handshake is complete. rw is the negotiated stream.
func newConn(nc net.Conn, rw io.ReadWriter, ex *export, maxInFlight int, timeout time.Duration) *conn {
	c := &conn{
		nc:         nc,
		w:          rw,
		ex:         ex,
		timeout:    timeout,
		slots:      make(chan struct{}, maxInFlight),
		dead:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	if x, ok := rw.(net.Conn); ok && x == nc {
		c.vec = true
	}
	c.r = bufio.NewReaderSize(progressReader{rw, &c.lastProgress}, readBufSize)
	c.mu.pending = make(map[uint64]*request)
	c.lastProgress.Store(time.Now().UnixNano())
	go c.readLoop()
	if timeout > 0 {
		go c.watchdog()
	}
	return c
}

// progressReader records when bytes arrive, for the timeout.
type progressReader struct {
	r    io.Reader
	last *atomic.Int64
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// broken returns the reason the connection takes no new requests, or nil.
func (c *conn) broken() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.err
}

// shut stops new requests with err (first reason wins) and closes the
// socket, which makes the reader goroutine fail every pending request and
// exit. Safe from any goroutine.
func (c *conn) shut(err error) {
	c.mu.Lock()
	if c.mu.err == nil || c.mu.draining {
		c.mu.err = err
		c.mu.draining = false
	}
	c.mu.Unlock()
	c.deadOnce.Do(func() {
		close(c.dead)
		c.nc.Close()
	})
}

// submit registers req and sends it. It blocks while the connection has
// MaxInFlight requests in flight. On a nil return the request is in flight
// and its completion will be signalled on req.done (always, even if the
// connection breaks); on an error nothing was sent and req.done is never
// closed.
func (c *conn) submit(req *request) error {
	select {
	case c.slots <- struct{}{}:
	case <-c.dead:
		return c.broken()
	}
	c.load.Add(1)
	c.mu.Lock()
	if err := c.mu.err; err != nil {
		c.mu.Unlock()
		c.release()
		return err
	}
	if len(c.mu.pending) == 0 {
		c.lastProgress.Store(time.Now().UnixNano())
	}
	c.mu.cookie++
	cookie := c.mu.cookie
	c.mu.pending[cookie] = req
	c.mu.Unlock()

	var hdr [proto.RequestSize]byte
	(&proto.Request{Flags: req.flags, Type: req.typ, Cookie: cookie, Offset: req.off, Length: req.length}).Put(&hdr)
	var payload []byte
	if req.typ == proto.CmdWrite {
		payload = req.data
	}
	c.wmu.Lock()
	err := c.send(hdr[:], payload)
	c.wmu.Unlock()
	if err != nil {
		// The reader completes the request when it sees the closed socket.
		c.shut(fmt.Errorf("%w: sending a request: %w", ErrDisconnected, err))
	}
	return nil
}

// send writes one request. Callers hold wmu.
func (c *conn) send(hdr, payload []byte) error {
	if len(payload) == 0 {
		_, err := c.w.Write(hdr)
		return err
	}
	if c.vec {
		bufs := net.Buffers{hdr, payload}
		_, err := bufs.WriteTo(c.nc)
		return err
	}
	if _, err := c.w.Write(hdr); err != nil {
		return err
	}
	_, err := c.w.Write(payload)
	return err
}

func (c *conn) release() {
	c.load.Add(-1)
	<-c.slots
}

// complete finishes the request with cookie. Reader goroutine only.
func (c *conn) complete(cookie uint64, req *request, err error) {
	c.mu.Lock()
	delete(c.mu.pending, cookie)
	disc := c.mu.draining && len(c.mu.pending) == 0
	c.mu.Unlock()
	req.err = err
	close(req.done)
	c.release()
	if disc {
		c.disconnect()
	}
}

// disconnect sends NBD_CMD_DISC (soft disconnect); the server then closes
// the connection. Errors are ignored: the socket is going away anyway.
func (c *conn) disconnect() {
	var hdr [proto.RequestSize]byte
	(&proto.Request{Type: proto.CmdDisc}).Put(&hdr)
	c.wmu.Lock()
	_ = c.send(hdr[:], nil)
	c.wmu.Unlock()
}

// watchdog drops the connection when requests are pending and nothing has
// arrived for the timeout.
func (c *conn) watchdog() {
	tick := max(c.timeout/4, 10*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-c.dead:
			return
		case now := <-t.C:
			last := time.Unix(0, c.lastProgress.Load())
			if c.load.Load() > 0 && now.Sub(last) > c.timeout {
				c.shut(fmt.Errorf("%w: %w (no reply for %v)", ErrDisconnected, ErrTimeout, c.timeout))
				return
			}
		}
	}
}

// readLoop is the reader goroutine: it dispatches replies until the
// connection ends, then fails every pending request with the reason.
func (c *conn) readLoop() {
	defer close(c.readerDone)
	err := c.readReplies()
	c.shut(err)
	c.mu.Lock()
	err = c.mu.err // the first reason, if something else broke the connection
	pending := c.mu.pending
	c.mu.pending = make(map[uint64]*request)
	c.mu.Unlock()
	for _, req := range pending {
		req.err = err
		close(req.done)
		c.release()
	}
}

func (c *conn) lost(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: the server closed the connection", ErrDisconnected)
	}
	return fmt.Errorf("%w: %w", ErrDisconnected, err)
}

func violation(format string, args ...any) error {
	return fmt.Errorf("%w: %w: %s", ErrDisconnected, ErrProtocol, fmt.Sprintf(format, args...))
}

// readReplies reads and dispatches replies; it returns why it stopped.
func (c *conn) readReplies() error {
	var hdr [proto.StructuredHeaderSize]byte
	for {
		if _, err := io.ReadFull(c.r, hdr[:4]); err != nil {
			return c.lost(err)
		}
		var err error
		switch m := proto.Uint32(hdr[:4]); m {
		case proto.MagicSimpleReply:
			if _, err := io.ReadFull(c.r, hdr[4:proto.SimpleReplySize]); err != nil {
				return c.lost(err)
			}
			err = c.simple(hdr[:proto.SimpleReplySize])
		case proto.MagicStructured:
			if !c.ex.structured {
				return violation("structured reply without negotiation")
			}
			if _, err := io.ReadFull(c.r, hdr[4:]); err != nil {
				return c.lost(err)
			}
			err = c.chunk(hdr[:])
		default:
			return violation("bad reply magic %#08x", m)
		}
		if err != nil {
			return err
		}
	}
}

func (c *conn) lookup(cookie uint64) *request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.pending[cookie]
}

func (c *conn) serverErr(e *ServerError) {
	if e.Errno == ESHUTDOWN {
		// The protocol asks for a soft disconnect: take no new requests,
		// send NBD_CMD_DISC once the pending ones are answered.
		c.mu.Lock()
		if c.mu.err == nil {
			c.mu.err = fmt.Errorf("%w: the server is shutting down", ErrDisconnected)
			c.mu.draining = true
		}
		c.mu.Unlock()
	}
}

func (c *conn) simple(b []byte) error {
	sr, err := proto.ParseSimpleReply(b)
	if err != nil {
		return violation("%v", err)
	}
	req := c.lookup(sr.Cookie)
	if req == nil {
		return violation("simple reply for unknown cookie %#x", sr.Cookie)
	}
	if c.ex.structured && req.typ == proto.CmdRead {
		return violation("simple reply to a read after structured replies were negotiated")
	}
	if sr.Error != 0 {
		e := &ServerError{Errno: Errno(sr.Error)}
		c.serverErr(e)
		c.complete(sr.Cookie, req, e)
		return nil
	}
	switch req.typ {
	case proto.CmdRead:
		if _, err := io.ReadFull(c.r, req.data); err != nil {
			return c.lost(err)
		}
	case proto.CmdBlockStatus:
		return violation("simple success reply to a block status request")
	}
	c.complete(sr.Cookie, req, nil)
	return nil
}

// within returns the position of [off, off+n) relative to req, checking
// that it lies inside the request.
func within(req *request, off uint64, n uint64) (uint32, error) {
	if n == 0 || off < req.off || off-req.off > uint64(req.length) || n > uint64(req.length)-(off-req.off) {
		return 0, violation("chunk [%d, +%d) outside the request [%d, +%d)", off, n, req.off, req.length)
	}
	return uint32(off - req.off), nil
}

func (c *conn) chunk(b []byte) error {
	ch, err := proto.ParseChunk(b)
	if err != nil {
		return violation("%v", err)
	}
	req := c.lookup(ch.Cookie)
	if req == nil {
		return violation("chunk for unknown cookie %#x", ch.Cookie)
	}
	switch ch.Type {
	case proto.ReplyTypeNone:
	case proto.ReplyTypeOffsetData:
		if req.typ != proto.CmdRead {
			return violation("data chunk in the reply to command %d", req.typ)
		}
		var ob [8]byte
		if _, err := io.ReadFull(c.r, ob[:]); err != nil {
			return c.lost(err)
		}
		n := uint64(ch.Length) - 8
		rel, err := within(req, proto.Uint64(ob[:]), n)
		if err != nil {
			return err
		}
		if err := req.spans.add(rel, rel+uint32(n)); err != nil {
			return err
		}
		if _, err := io.ReadFull(c.r, req.data[rel:rel+uint32(n)]); err != nil {
			return c.lost(err)
		}
	case proto.ReplyTypeOffsetHole:
		if req.typ != proto.CmdRead {
			return violation("hole chunk in the reply to command %d", req.typ)
		}
		var hb [proto.OffsetHoleLen]byte
		if _, err := io.ReadFull(c.r, hb[:]); err != nil {
			return c.lost(err)
		}
		off, size, err := proto.ParseOffsetHole(hb[:])
		if err != nil {
			return violation("%v", err)
		}
		rel, err := within(req, off, uint64(size))
		if err != nil {
			return err
		}
		if err := req.spans.add(rel, rel+size); err != nil {
			return err
		}
		clear(req.data[rel : rel+size])
	case proto.ReplyTypeBlockStatus:
		if err := c.blockStatus(req, ch); err != nil {
			return err
		}
	default: // error chunks; ParseChunk rejected unknown non-error types
		if ch.Length > maxErrorChunk {
			return violation("error chunk of %d bytes", ch.Length)
		}
		p := make([]byte, ch.Length)
		if _, err := io.ReadFull(c.r, p); err != nil {
			return c.lost(err)
		}
		ec, err := proto.ParseErrorChunk(ch.Type, p)
		if err != nil {
			return violation("%v", err)
		}
		e := &ServerError{Errno: Errno(ec.Error), Message: ec.Message}
		if ec.HasOffset {
			if ec.Offset < req.off || ec.Offset-req.off >= uint64(req.length) {
				return violation("error offset %d outside the request [%d, +%d)", ec.Offset, req.off, req.length)
			}
			e.Offset, e.HasOffset = int64(ec.Offset), true
		}
		if req.srvErr == nil {
			req.srvErr = e
		}
		c.serverErr(e)
	}
	if !ch.Done() {
		return nil
	}
	if req.srvErr != nil {
		c.complete(ch.Cookie, req, req.srvErr)
		return nil
	}
	switch req.typ {
	case proto.CmdRead:
		if got := req.spans.total; got != req.length {
			return violation("read reply claims success with %d of %d bytes", got, req.length)
		}
	case proto.CmdBlockStatus:
		if !req.gotStatus {
			return violation("block status reply without a status chunk")
		}
	}
	c.complete(ch.Cookie, req, nil)
	return nil
}

func (c *conn) blockStatus(req *request, ch proto.Chunk) error {
	if req.typ != proto.CmdBlockStatus {
		return violation("block status chunk in the reply to command %d", req.typ)
	}
	if req.gotStatus {
		return violation("second block status chunk in one reply")
	}
	var idb [4]byte
	if _, err := io.ReadFull(c.r, idb[:]); err != nil {
		return c.lost(err)
	}
	if id := proto.Uint32(idb[:]); !c.ex.hasMeta || id != c.ex.metaID {
		return violation("block status for metadata context %d, negotiated %d", id, c.ex.metaID)
	}
	count := (ch.Length - 4) / proto.BlockDescriptorSize
	if count > maxDescriptors {
		return violation("block status chunk with %d descriptors", count)
	}
	req.status = make([]proto.BlockDescriptor, 0, count)
	var buf [64 * proto.BlockDescriptorSize]byte
	for left := int(count); left > 0; {
		k := min(left, 64)
		p := buf[:k*proto.BlockDescriptorSize]
		if _, err := io.ReadFull(c.r, p); err != nil {
			return c.lost(err)
		}
		for i := range k {
			d, err := proto.ParseBlockDescriptor(p[i*proto.BlockDescriptorSize : (i+1)*proto.BlockDescriptorSize])
			if err != nil {
				return violation("%v", err)
			}
			req.status = append(req.status, d)
		}
		left -= k
	}
	req.gotStatus = true
	return nil
}

// spans is a sorted set of disjoint half-open ranges [lo, hi), used to
// check that read chunks neither overlap nor leave gaps.
type spans struct {
	s     [][2]uint32
	total uint32
}

// add inserts [lo, hi), merging with neighbours; it fails if the range
// overlaps one already present.
func (s *spans) add(lo, hi uint32) error {
	i := sort.Search(len(s.s), func(i int) bool { return s.s[i][1] > lo })
	if i < len(s.s) && s.s[i][0] < hi {
		return violation("read chunk [+%d, +%d) overlaps [+%d, +%d)", lo, hi, s.s[i][0], s.s[i][1])
	}
	s.total += hi - lo
	mergeLeft := i > 0 && s.s[i-1][1] == lo
	mergeRight := i < len(s.s) && s.s[i][0] == hi
	switch {
	case mergeLeft && mergeRight:
		s.s[i-1][1] = s.s[i][1]
		s.s = append(s.s[:i], s.s[i+1:]...)
	case mergeLeft:
		s.s[i-1][1] = hi
	case mergeRight:
		s.s[i][0] = lo
	default:
		if len(s.s) >= maxSpans {
			return violation("read reply split into more than %d pieces", maxSpans)
		}
		s.s = append(s.s, [2]uint32{})
		copy(s.s[i+1:], s.s[i:])
		s.s[i] = [2]uint32{lo, hi}
	}
	return nil
}

// closeConn sends NBD_CMD_DISC and closes the socket, then waits for the
// reader goroutine. Pending requests fail with err.
//
// polite is false when requests may still be in flight (Close timed out);
// then the socket is closed at once, since a writer may be stuck on it.
func (c *conn) closeConn(err error, polite bool) {
	c.mu.Lock()
	alive := c.mu.err == nil
	if alive {
		c.mu.err = err
	}
	c.mu.Unlock()
	if alive && polite {
		c.disconnect()
		if t, ok := c.w.(*tls.Conn); ok {
			c.wmu.Lock()
			_ = t.CloseWrite() // close_notify before the socket goes
			c.wmu.Unlock()
		}
	}
	c.shut(err)
	<-c.readerDone
}
