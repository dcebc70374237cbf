package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
)

// Compile-time proof of the capabilities.
var (
	_ device.Device      = (*Device)(nil)
	_ device.Limiter     = (*Device)(nil)
	_ device.WriteZeroer = (*Device)(nil)
	_ device.Discarder   = (*Device)(nil)
	_ device.Flusher     = (*Device)(nil)
	_ device.Extenter    = (*Device)(nil)
	_ device.Identifier  = (*Device)(nil)
)

const (
	// defaultZeroMax is the longest write-zeroes or trim request when the
	// server advertises no maximum block size.
	defaultZeroMax = 1 << 30
	// maxStatusLen is the longest block status request.
	maxStatusLen = 1 << 30
	// closeWait bounds Close's wait for operations in progress when
	// Config.Timeout is zero.
	closeWait = 30 * time.Second
)

// Device is an NBD export opened by Open. It implements device.Device and
// the optional device.Limiter, WriteZeroer, Discarder, Flusher, Extenter
// and Identifier interfaces. All methods are safe for concurrent use; each
// call may have many NBD requests in flight, and many calls may run at
// once, spread over the connections.
type Device struct {
	uri    *URI
	name   string
	conns  []*conn
	ex     export // of the first connection; every connection agrees
	cfgRO  bool
	limits device.Limits
	align  int64 // OffsetAlign, at least 1
	maxIO  int64 // longest read or write request
	maxZ   int64 // longest write-zeroes or trim request
	notes  []string
	next   atomic.Uint32 // round-robin start for connection choice

	mu struct {
		sync.Mutex
		closed bool
		active int           // calls in progress
		idle   chan struct{} // closed when active drops to 0 after Close began
	}
}

// Info describes what the server advertised and what was negotiated.
type Info struct {
	Export      string
	Description string // NBD_INFO_DESCRIPTION, may be empty
	Size        int64

	// Transmission flags.
	ReadOnly       bool // the server marks the export read-only
	CanFlush       bool
	CanFUA         bool
	CanTrim        bool
	CanWriteZeroes bool
	CanFastZero    bool
	CanMultiConn   bool
	CanDF          bool
	CanCache       bool
	Rotational     bool

	// Block size constraints (NBD_INFO_BLOCK_SIZE); all zero when the
	// server advertised none.
	MinBlock, PreferredBlock, MaxBlock uint32

	StructuredReplies bool // NBD_OPT_STRUCTURED_REPLY accepted
	BaseAllocation    bool // base:allocation selected: Extents asks the server
	FixedNewstyle     bool
	UsedExportName    bool // NBD_OPT_GO unsupported; NBD_OPT_EXPORT_NAME used
	TLS               bool
	Connections       int
}

// Open connects to the NBD location (see ParseURI) and negotiates the
// export named in it. ctx bounds dialling and the handshake of every
// connection; it has no effect once Open returned. cfg may be nil.
//
// Errors are *device.IOError with Op device.OpOpen wrapping, among others,
// ErrBadURI, ErrUnknownExport, ErrOldstyle, ErrTLSRequired,
// ErrTLSUnavailable, ErrRefused, ErrProtocol, a *tls.CertificateVerificationError
// for a server certificate that does not verify, or the dial error. On
// error every connection made is closed.
func Open(ctx context.Context, location string, cfg *Config) (*Device, error) {
	u, err := ParseURI(location)
	if err != nil {
		return nil, &device.IOError{Op: device.OpOpen, Dev: location, Err: err}
	}
	return OpenURI(ctx, u, cfg)
}

// OpenURI is Open for a parsed location. u is copied.
func OpenURI(ctx context.Context, u *URI, cfg *Config) (*Device, error) {
	uc := *u
	d := &Device{uri: &uc, name: uc.String()}
	c := cfg.withDefaults()
	d.cfgRO = c.ReadOnly
	fail := func(err error) (*Device, error) {
		for _, cn := range d.conns {
			cn.closeConn(device.ErrClosed, true)
		}
		return nil, &device.IOError{Op: device.OpOpen, Dev: d.name, Err: err}
	}

	var tc *tls.Config
	if uc.TLS {
		var err error
		if tc, err = c.tlsConfig(&uc); err != nil {
			return fail(err)
		}
	}
	first, err := dial(ctx, &uc, tc, &c)
	if err != nil {
		return fail(err)
	}
	d.conns = append(d.conns, first)
	d.ex = *first.ex

	n := c.Connections
	if n > 1 && d.ex.flags&proto.FlagCanMultiConn == 0 {
		d.note(c.Logf, "the server does not advertise NBD_FLAG_CAN_MULTI_CONN: using 1 connection instead of %d", n)
		n = 1
	}
	if n > 1 {
		extra := make([]*conn, n-1)
		errs := make([]error, n-1)
		var wg sync.WaitGroup
		for i := range extra {
			wg.Go(func() { extra[i], errs[i] = dial(ctx, &uc, tc, &c) })
		}
		wg.Wait()
		for i, cn := range extra {
			if cn != nil {
				d.conns = append(d.conns, cn)
				if errs[i] == nil && !sameExport(cn.ex, &d.ex) {
					errs[i] = fmt.Errorf("%w: connection %d negotiated a different export (size %d flags %#x) than the first (size %d flags %#x)",
						ErrProtocol, i+2, cn.ex.size, cn.ex.flags, d.ex.size, d.ex.flags)
				}
			}
		}
		if err := errors.Join(errs...); err != nil {
			return fail(err)
		}
	}
	d.setLimits(&c)
	return d, nil
}

func sameExport(a, b *export) bool {
	return a.size == b.size && a.flags == b.flags && a.blockSize == b.blockSize &&
		a.structured == b.structured && a.hasMeta == b.hasMeta
}

func (d *Device) note(logf func(string, ...any), format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	d.notes = append(d.notes, s)
	if logf != nil {
		logf("nbd: %s: %s", d.name, s)
	}
}

// setSendBuffer sets the send buffer of uc to n bytes: with
// SO_SNDBUFFORCE where the process may (CAP_NET_ADMIN; it is not capped
// at net.core.wmem_max), else with SO_SNDBUF. Best effort: a refusal
// leaves the kernel's default.
func setSendBuffer(uc *net.UnixConn, n int) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, n)
		}
	})
}

// dial opens one connection and runs the handshake.
func dial(ctx context.Context, u *URI, tc *tls.Config, c *Config) (*conn, error) {
	network, addr := u.network()
	var dl net.Dialer
	nc, err := dl.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if uc, ok := nc.(*net.UnixConn); ok && c.SocketBuffer > 0 {
		setSendBuffer(uc, c.SocketBuffer)
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	var startTLS func() (io.ReadWriter, error)
	if tc != nil {
		startTLS = func() (io.ReadWriter, error) {
			t := tls.Client(nc, tc)
			if err := t.HandshakeContext(ctx); err != nil {
				return nil, fmt.Errorf("nbd: TLS handshake: %w", err)
			}
			return t, nil
		}
	}
	rw, ex, err := handshake(nc, u.Export, startTLS)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		nc.Close()
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return newConn(nc, rw, ex, c.MaxInFlight, c.Timeout), nil
}

func (d *Device) setLimits(c *Config) {
	bs := d.ex.blockSize
	d.align = 1
	if bs.Min > 1 {
		d.align = int64(bs.Min)
	}
	alignDown := func(n int64) int64 { return max(n-n%d.align, d.align) }
	d.maxIO = int64(c.MaxRequest)
	if bs.Max != 0 && bs.Max != 0xffffffff {
		d.maxIO = min(d.maxIO, int64(bs.Max))
	}
	d.maxIO = alignDown(d.maxIO)
	d.maxZ = defaultZeroMax
	if bs.Max != 0 && bs.Max != 0xffffffff {
		d.maxZ = int64(bs.Max)
	}
	d.maxZ = alignDown(d.maxZ)

	l := device.Limits{LogicalBlockSize: int(d.align), MaxTransfer: d.maxIO}
	if d.align > 1 {
		l.OffsetAlign = int(d.align)
	}
	if !d.ReadOnly() {
		if d.ex.flags&proto.FlagSendWriteZeroes != 0 {
			l.MaxWriteZeroes = d.maxZ
		}
		if d.ex.flags&proto.FlagSendTrim != 0 {
			l.MaxDiscard = d.maxZ
		}
	}
	d.limits = l
}

// Size implements device.Device. It is the export size negotiated at Open.
func (d *Device) Size() int64 { return d.ex.size }

// Limits implements device.Limiter. OffsetAlign is the server's minimum
// block size when it advertises one above 1; MaxTransfer is the largest
// single NBD read or write (the server's maximum block size, at most
// 32 MiB), although ReadAt and WriteAt split longer calls themselves;
// MaxWriteZeroes and MaxDiscard are zero when the server does not offer
// the command or the device is read-only.
func (d *Device) Limits() device.Limits { return d.limits }

// ReadOnly reports whether writes are refused: Config.ReadOnly was set or
// the server marks the export read-only (NBD_FLAG_READ_ONLY). Callers
// that need to write should check it right after Open to fail early.
func (d *Device) ReadOnly() bool {
	return d.cfgRO || d.ex.flags&proto.FlagReadOnly != 0
}

// String returns the location in canonical form (see URI.String); it
// holds no secrets.
func (d *Device) String() string { return d.name }

// Identity implements device.Identifier: "nbd:" followed by the
// normalised location (transport address and export, without TLS
// settings). Two handles to the same export through different host names
// for the same server are not recognised as equal.
func (d *Device) Identity() string { return d.uri.identity() }

// Notes returns remarks made while opening, such as a reduction of the
// number of connections.
func (d *Device) Notes() []string { return append([]string(nil), d.notes...) }

// Info returns what was negotiated with the server.
func (d *Device) Info() Info {
	f := d.ex.flags
	return Info{
		Export:            d.uri.Export,
		Description:       d.ex.description,
		Size:              d.ex.size,
		ReadOnly:          f&proto.FlagReadOnly != 0,
		CanFlush:          f&proto.FlagSendFlush != 0,
		CanFUA:            f&proto.FlagSendFUA != 0,
		CanTrim:           f&proto.FlagSendTrim != 0,
		CanWriteZeroes:    f&proto.FlagSendWriteZeroes != 0,
		CanFastZero:       f&proto.FlagSendWriteZeroes != 0 && f&proto.FlagSendFastZero != 0,
		CanMultiConn:      f&proto.FlagCanMultiConn != 0,
		CanDF:             f&proto.FlagSendDF != 0,
		CanCache:          f&proto.FlagSendCache != 0,
		Rotational:        f&proto.FlagRotational != 0,
		MinBlock:          d.ex.blockSize.Min,
		PreferredBlock:    d.ex.blockSize.Preferred,
		MaxBlock:          d.ex.blockSize.Max,
		StructuredReplies: d.ex.structured,
		BaseAllocation:    d.ex.hasMeta,
		FixedNewstyle:     d.ex.fixedNewstyle,
		UsedExportName:    d.ex.usedExportOpt,
		TLS:               d.ex.tls,
		Connections:       len(d.conns),
	}
}

func (d *Device) ioErr(op device.Op, off, n int64, err error) error {
	return &device.IOError{Op: op, Dev: d.name, Off: off, Len: n, Err: err}
}

// enter registers a call in progress; it fails once Close has begun.
func (d *Device) enter() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.closed {
		return device.ErrClosed
	}
	d.mu.active++
	return nil
}

func (d *Device) leave() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mu.active--
	if d.mu.closed && d.mu.active == 0 && d.mu.idle != nil {
		close(d.mu.idle)
		d.mu.idle = nil
	}
}

// submit sends req on the least loaded live connection, trying the others
// if the chosen one broke before the request went out.
func (d *Device) submit(req *request) error {
	var last error
	for range d.conns {
		c := d.pick()
		if c == nil {
			break
		}
		err := c.submit(req)
		if err == nil {
			return nil
		}
		last = err
	}
	if last == nil {
		last = d.conns[0].broken()
	}
	if last == nil {
		last = ErrDisconnected
	}
	return last
}

// pick returns the live connection with the fewest requests in flight,
// starting the search at a rotating index so that ties are spread.
func (d *Device) pick() *conn {
	n := len(d.conns)
	if n == 1 {
		return d.conns[0]
	}
	start := int(d.next.Add(1))
	var best *conn
	var bestLoad int64
	for i := range n {
		c := d.conns[(start+i)%n]
		select {
		case <-c.dead:
			continue
		default:
		}
		if l := c.load.Load(); best == nil || l < bestLoad {
			best, bestLoad = c, l
		}
	}
	return best
}

// do runs one command over [off, off+length), split into requests of at
// most maxLen bytes that are all in flight at once. p, when not nil, is
// the read destination or write source (len(p) == length). It returns the
// number of bytes done without error from the start of the range, and the
// first failure as an *device.IOError for the failing request's range.
func (d *Device) do(op device.Op, typ, flags uint16, p []byte, off, length, maxLen int64) (int64, error) {
	n := int((length + maxLen - 1) / maxLen)
	reqs := make([]request, n)
	sent := 0
	var sendErr error
	for i := range reqs {
		r := &reqs[i]
		pos := int64(i) * maxLen
		l := min(maxLen, length-pos)
		*r = request{typ: typ, flags: flags, off: uint64(off + pos), length: uint32(l), done: make(chan struct{})}
		if p != nil {
			r.data = p[pos : pos+l]
		}
		if sendErr = d.submit(r); sendErr != nil {
			break
		}
		sent++
	}
	var done int64
	var first error
	for i := range sent {
		r := &reqs[i]
		<-r.done
		if r.err != nil && first == nil {
			first = d.ioErr(op, int64(r.off), int64(r.length), d.wrap(r.err))
		}
		if first == nil {
			done += int64(r.length)
		}
	}
	if first == nil && sendErr != nil {
		r := &reqs[sent]
		first = d.ioErr(op, int64(r.off), int64(r.length), sendErr)
	}
	return done, first
}

// wrap adds device sentinels to server errors where the contract asks for
// them.
func (d *Device) wrap(err error) error {
	var se *ServerError
	if errors.As(err, &se) && se.Errno == EPERM && d.ReadOnly() {
		return fmt.Errorf("%w: %w", device.ErrReadOnly, err)
	}
	return err
}

// ReadAt implements device.Device. A read starting at or beyond Size
// returns 0, io.EOF; one crossing Size returns the bytes before Size and
// io.EOF. off and len(p) must be multiples of Limits().OffsetAlign. Long
// reads are split into requests of Limits().MaxTransfer bytes, all in
// flight at once. On error n counts the bytes read without error from the
// start; the error is an *device.IOError for the failing request, wrapping
// a *ServerError (server-reported errors such as EIO), ErrDisconnected
// (connection lost: later calls use the other connections or fail at
// once), or ErrProtocol.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, d.ioErr(device.OpRead, off, int64(len(p)), fmt.Errorf("%w: negative offset", device.ErrOutOfRange))
	}
	if d.align > 1 && (off%d.align != 0 || int64(len(p))%d.align != 0) {
		return 0, d.ioErr(device.OpRead, off, int64(len(p)),
			fmt.Errorf("%w: [%d, +%d) is not a multiple of %d bytes", device.ErrAlignment, off, len(p), d.align))
	}
	if off >= d.ex.size {
		return 0, io.EOF
	}
	n := int64(len(p))
	eof := n > d.ex.size-off
	if eof {
		n = d.ex.size - off
	}
	if n == 0 {
		return 0, nil
	}
	if err := d.enter(); err != nil {
		return 0, d.ioErr(device.OpRead, off, n, err)
	}
	defer d.leave()
	got, err := d.do(device.OpRead, proto.CmdRead, 0, p[:n], off, n, d.maxIO)
	if err != nil {
		return int(got), err
	}
	if eof {
		return int(n), io.EOF
	}
	return int(n), nil
}

// WriteAt implements device.Device. A write crossing Size fails with
// device.ErrOutOfRange, a misaligned one with device.ErrAlignment, and any
// write to a read-only device (see ReadOnly) with device.ErrReadOnly, all
// without I/O. Long writes are split into requests of Limits().MaxTransfer
// bytes; on error n counts the bytes the server acknowledged from the
// start, and the bytes of later requests may or may not have been
// written.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	if err := d.checkWrite(device.OpWrite, off, int64(len(p))); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := d.enter(); err != nil {
		return 0, d.ioErr(device.OpWrite, off, int64(len(p)), err)
	}
	defer d.leave()
	got, err := d.do(device.OpWrite, proto.CmdWrite, 0, p, off, int64(len(p)), d.maxIO)
	return int(got), err
}

func (d *Device) checkWrite(op device.Op, off, n int64) error {
	if d.ReadOnly() {
		why := "the export is read-only on the server"
		if d.cfgRO {
			why = "opened read-only"
		}
		return d.ioErr(op, off, n, fmt.Errorf("%w: %s", device.ErrReadOnly, why))
	}
	if err := device.CheckRange(off, n, d.ex.size, int(d.align)); err != nil {
		return d.ioErr(op, off, n, err)
	}
	return nil
}

// ZeroFlags modify WriteZeroesFlags.
type ZeroFlags uint

const (
	// ZeroFast sets NBD_CMD_FLAG_FAST_ZERO: the server must fail at once
	// with ENOTSUP (reported as device.ErrNotSupported) instead of zeroing
	// slowly. Refused without I/O when the server does not advertise
	// NBD_FLAG_SEND_FAST_ZERO.
	ZeroFast ZeroFlags = 1 << iota
	// ZeroNoHole sets NBD_CMD_FLAG_NO_HOLE: the range must stay allocated.
	ZeroNoHole
)

// WriteZeroes implements device.WriteZeroer with NBD_CMD_WRITE_ZEROES,
// allowing the server to punch holes. It is WriteZeroesFlags(off, length, 0).
func (d *Device) WriteZeroes(off, length int64) error {
	return d.WriteZeroesFlags(off, length, 0)
}

// WriteZeroesFlags zeroes length bytes at off with NBD_CMD_WRITE_ZEROES,
// split into requests of Limits().MaxWriteZeroes bytes. It fails with
// device.ErrNotSupported without I/O when the server does not offer the
// command (or fast zeroing, for ZeroFast), and with device.ErrNotSupported
// wrapping the server's ENOTSUP when a fast zero was refused; with
// device.ErrReadOnly, ErrOutOfRange or ErrAlignment without I/O as for
// WriteAt. On other errors part of the range may have been zeroed.
func (d *Device) WriteZeroesFlags(off, length int64, flags ZeroFlags) error {
	if err := d.checkWrite(device.OpWriteZeroes, off, length); err != nil {
		return err
	}
	if d.ex.flags&proto.FlagSendWriteZeroes == 0 {
		return d.ioErr(device.OpWriteZeroes, off, length,
			fmt.Errorf("%w: the server does not offer NBD_CMD_WRITE_ZEROES", device.ErrNotSupported))
	}
	var cf uint16
	if flags&ZeroFast != 0 {
		if d.ex.flags&proto.FlagSendFastZero == 0 {
			return d.ioErr(device.OpWriteZeroes, off, length,
				fmt.Errorf("%w: the server does not offer fast zeroing", device.ErrNotSupported))
		}
		cf |= proto.CmdFlagFastZero
	}
	if flags&ZeroNoHole != 0 {
		cf |= proto.CmdFlagNoHole
	}
	if length == 0 {
		return nil
	}
	if err := d.enter(); err != nil {
		return d.ioErr(device.OpWriteZeroes, off, length, err)
	}
	defer d.leave()
	_, err := d.do(device.OpWriteZeroes, proto.CmdWriteZeroes, cf, nil, off, length, d.maxZ)
	var se *ServerError
	if cf&proto.CmdFlagFastZero != 0 && errors.As(err, &se) && se.Errno == ENOTSUP {
		var ioe *device.IOError
		errors.As(err, &ioe)
		ioe.Err = fmt.Errorf("%w: %w", device.ErrNotSupported, ioe.Err)
	}
	return err
}

// Discard implements device.Discarder with NBD_CMD_TRIM, split into
// requests of Limits().MaxDiscard bytes. The server may ignore it. It
// fails with device.ErrNotSupported without I/O when the server does not
// offer trim, and with ErrReadOnly, ErrOutOfRange or ErrAlignment as
// WriteAt.
func (d *Device) Discard(off, length int64) error {
	if err := d.checkWrite(device.OpDiscard, off, length); err != nil {
		return err
	}
	if d.ex.flags&proto.FlagSendTrim == 0 {
		return d.ioErr(device.OpDiscard, off, length,
			fmt.Errorf("%w: the server does not offer NBD_CMD_TRIM", device.ErrNotSupported))
	}
	if length == 0 {
		return nil
	}
	if err := d.enter(); err != nil {
		return d.ioErr(device.OpDiscard, off, length, err)
	}
	defer d.leave()
	_, err := d.do(device.OpDiscard, proto.CmdTrim, 0, nil, off, length, d.maxZ)
	return err
}

// Flush implements device.Flusher with one NBD_CMD_FLUSH. With several
// connections this relies on NBD_FLAG_CAN_MULTI_CONN, which the server
// advertised (else only one connection is used): a flush on one connection
// covers writes completed on all of them. It returns nil without I/O when
// the server does not advertise NBD_FLAG_SEND_FLUSH (it has no volatile
// cache to flush) or the device is read-only.
func (d *Device) Flush() error {
	if d.ex.flags&proto.FlagSendFlush == 0 || d.ReadOnly() {
		return nil
	}
	if err := d.enter(); err != nil {
		return d.ioErr(device.OpFlush, 0, 0, err)
	}
	defer d.leave()
	req := request{typ: proto.CmdFlush, done: make(chan struct{})}
	if err := d.submit(&req); err != nil {
		return d.ioErr(device.OpFlush, 0, 0, err)
	}
	<-req.done
	if req.err != nil {
		return d.ioErr(device.OpFlush, 0, 0, req.err)
	}
	return nil
}

// Extents implements device.Extenter with NBD_CMD_BLOCK_STATUS on the
// base:allocation context: a hole that reads as zeroes is Hole and Zero, a
// zero range is Zero, and everything else, including a hole the server
// does not promise reads as zeroes, is data. When the server did not
// negotiate base:allocation the whole range is reported as data. The
// range must lie inside the device (else device.ErrOutOfRange); it need
// not be aligned. The list may end early when the server describes less.
func (d *Device) Extents(off, length int64) ([]device.Extent, error) {
	if off < 0 || off >= d.ex.size || length <= 0 || length > d.ex.size-off {
		return nil, d.ioErr(device.OpExtents, off, length,
			fmt.Errorf("%w: extents of [%d, +%d) on a device of %d bytes", device.ErrOutOfRange, off, length, d.ex.size))
	}
	end := off + length
	if !d.ex.hasMeta {
		return []device.Extent{{Off: off, Len: length}}, nil
	}
	if err := d.enter(); err != nil {
		return nil, d.ioErr(device.OpExtents, off, length, err)
	}
	defer d.leave()

	// Ask for an aligned range, then clip the answer to [off, end).
	lo := off - off%d.align
	hi := min(d.ex.size, (end+d.align-1)/d.align*d.align)
	n := min(hi-lo, maxStatusLen)
	req := request{typ: proto.CmdBlockStatus, off: uint64(lo), length: uint32(n), done: make(chan struct{})}
	if err := d.submit(&req); err != nil {
		return nil, d.ioErr(device.OpExtents, lo, n, err)
	}
	<-req.done
	if req.err != nil {
		return nil, d.ioErr(device.OpExtents, lo, n, req.err)
	}
	var ext []device.Extent
	pos := lo
	for _, s := range req.status {
		if pos >= end {
			break
		}
		a, b := max(pos, off), min(pos+int64(s.Length), end)
		pos += int64(s.Length)
		if a >= b {
			continue
		}
		e := device.Extent{Off: a, Len: b - a}
		if s.Status&proto.StateZero != 0 {
			e.Zero = true
			e.Hole = s.Status&proto.StateHole != 0
		}
		if k := len(ext) - 1; k >= 0 && ext[k].Hole == e.Hole && ext[k].Zero == e.Zero {
			ext[k].Len += e.Len
			continue
		}
		ext = append(ext, e)
	}
	if len(ext) == 0 {
		// The server answered only for bytes before off (descriptors
		// shorter than the block size): report one block as data.
		ext = []device.Extent{{Off: off, Len: min(end, lo+d.align) - off}}
	}
	return ext, nil
}

// Close implements io.Closer. It refuses new calls with device.ErrClosed,
// waits for calls in progress (at most Config.Timeout, or 30 s when that is
// zero, after which their requests fail with device.ErrClosed), sends
// NBD_CMD_DISC on every connection and closes them. It returns nil; a
// second call is a no-op.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		return nil
	}
	d.mu.closed = true
	var idle chan struct{}
	if d.mu.active > 0 {
		idle = make(chan struct{})
		d.mu.idle = idle
	}
	d.mu.Unlock()
	polite := true
	if idle != nil {
		wait := closeWait
		if d.conns[0].timeout > 0 {
			wait = d.conns[0].timeout
		}
		t := time.NewTimer(wait)
		select {
		case <-idle:
		case <-t.C:
			polite = false
		}
		t.Stop()
	}
	for _, c := range d.conns {
		c.closeConn(device.ErrClosed, polite)
	}
	return nil
}
