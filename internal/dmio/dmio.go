// Package dmio is the engine's I/O layer, the user-space counterpart of the
// kernel's dm-io as kcopyd uses it (spec §7): a request reads one region
// into a buffer, or writes one buffer (or zeroes) to up to MaxRegions
// regions in parallel, and completes once, after every region is done, with
// one error per region.
//
// Requests run on a fixed set of goroutines owned by an Engine, so issuing
// I/O allocates nothing. Regions longer than a device's MaxTransfer are
// split. Write-zeroes uses the device's native operation when the caller
// asks for it and falls back to writing from a shared zero buffer when the
// device says at run time that it cannot (dm-io would fail the region
// instead, spec §3.3).
package dmio

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/internal/bufpool"
)

// MaxRegions is the most regions one request may carry.
const MaxRegions = 8

// zeroes is the shared source of zero writes; never written to.
var zeroes = bufpool.Alloc(1 << 20)

// Zeroes returns a read-only view of the shared zero buffer, n bytes long
// (n at most 1 MiB). Callers must not write to it.
func Zeroes(n int) []byte { return zeroes[:n] }

// Op is the kind of a request.
type Op uint8

// Request kinds.
const (
	OpRead        Op = iota // read Regions[0] into Buf
	OpWrite                 // write Buf to every region
	OpWriteZeroes           // make every region read as zeroes
	OpCopyRange             // copy Src to every region without a buffer (device.RangeCopier)
)

func (o Op) String() string {
	switch o {
	case OpRead:
		return "read"
	case OpWrite:
		return "write"
	case OpWriteZeroes:
		return "write-zeroes"
	case OpCopyRange:
		return "copy-range"
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// Region is a byte range of a device.
type Region struct {
	Dev      device.Device
	Off, Len int64
}

// Range is a byte range without a device.
type Range struct{ Off, Len int64 }

// Request is one I/O request. The caller owns it and may reuse it after
// Notify has been called.
type Request struct {
	Op      Op
	Regions [MaxRegions]Region
	N       int    // regions in use; 1 for OpRead
	Buf     []byte // OpRead: len(Buf) == Regions[0].Len; OpWrite: the data

	// Native, for OpWriteZeroes, uses device.WriteZeroer; otherwise zeroes
	// are written from memory.
	Native bool

	// Src, for OpCopyRange, is the range every region is copied from, as
	// long as each region. A region whose device is not a
	// device.RangeCopier, or refuses this source, fails with an error
	// wrapping device.ErrNotSupported; the caller then copies through
	// memory.
	Src Region

	// Salvage, for OpRead, re-reads a failed region block by block, each
	// failing block twice, so that only the blocks that cannot be read
	// are zero-filled and reported in Bad. Without it a failed read
	// zero-fills the whole buffer.
	Salvage bool

	// Notify runs once, on an I/O goroutine, when every region is done. It
	// must not block for long.
	Notify func(*Request)

	// Results, valid in Notify.
	Errs [MaxRegions]error // per region; nil = success
	Bad  []Range           // OpRead with an error: device ranges zero-filled

	pending atomic.Int32
	started [MaxRegions]started // the Completer of each region started through a device.Starter
}

// started completes one region of a request that a device.Starter
// started. It lives inside the Request, so starting a region allocates
// nothing.
type started struct {
	e *Engine
	r *Request
	i int
}

// Complete implements device.Completer. Anything but the whole region
// done without error (a short count, an error) is done again by an I/O
// goroutine the ordinary way, which retries short transfers, salvages
// reads and reports errors as *device.IOError; requests are idempotent, so
// doing one twice is safe.
func (s *started) Complete(n int, err error) {
	r, i := s.r, s.i
	if err != nil || int64(n) != r.Regions[i].Len {
		s.e.tasks <- task{r, i}
		return
	}
	r.regionDone(i, nil)
}

type task struct {
	r *Request
	i int
}

// Engine runs requests on a fixed pool of goroutines.
type Engine struct {
	tasks chan task
	wg    sync.WaitGroup
}

// New starts an engine with the given number of I/O goroutines.
func New(workers int) *Engine {
	if workers < 1 {
		workers = 1
	}
	e := &Engine{tasks: make(chan task, 4*workers)}
	e.wg.Add(workers)
	for range workers {
		go e.run()
	}
	return e
}

// Submit starts r. It blocks only while the engine's queue is full. r must
// not be touched again until its Notify runs.
func (e *Engine) Submit(r *Request) {
	n := r.N
	if r.Op == OpRead {
		n = 1
	}
	if n < 1 || n > MaxRegions {
		panic(fmt.Sprintf("dmio: request with %d regions", n))
	}
	for i := range n {
		r.Errs[i] = nil
	}
	r.Bad = r.Bad[:0]
	r.pending.Store(int32(n))
	for i := range n {
		if !e.start(r, i) {
			e.tasks <- task{r, i}
		}
	}
}

// start starts region i of r on its device when the device is a
// device.Starter and the region needs one transfer, and reports whether it
// did.
func (e *Engine) start(r *Request, i int) bool {
	if r.Op != OpRead && r.Op != OpWrite {
		return false
	}
	reg := r.Regions[i]
	s, ok := reg.Dev.(device.Starter)
	if !ok {
		return false
	}
	if m := device.LimitsOf(reg.Dev).MaxTransfer; m > 0 && reg.Len > m {
		return false
	}
	r.started[i] = started{e, r, i}
	if r.Op == OpRead {
		return s.StartReadAt(r.Buf[:reg.Len], reg.Off, &r.started[i])
	}
	return s.StartWriteAt(r.Buf[:reg.Len], reg.Off, &r.started[i])
}

// regionDone records region i's result and completes r after its last
// region.
func (r *Request) regionDone(i int, err error) {
	r.Errs[i] = err
	if r.pending.Add(-1) == 0 {
		r.Notify(r)
	}
}

// Close stops the engine's goroutines. Every submitted request must have
// completed first.
func (e *Engine) Close() {
	close(e.tasks)
	e.wg.Wait()
}

func (e *Engine) run() {
	defer e.wg.Done()
	for t := range e.tasks {
		r := t.r
		reg := r.Regions[t.i]
		var err error
		switch r.Op {
		case OpRead:
			err = read(r, reg)
		case OpWrite:
			err = writeAll(reg, r.Buf[:reg.Len])
		case OpWriteZeroes:
			err = writeZeroes(reg, r.Native)
		case OpCopyRange:
			err = copyRange(r.Src, reg)
		}
		r.regionDone(t.i, err)
	}
}

// ErrBadLimits is returned for a region of a device whose limits contradict
// each other, so that no request could be issued: a MaxTransfer or a
// MaxWriteZeroes that is positive but smaller than OffsetAlign.
var ErrBadLimits = errors.New("dmio: device limits allow no request (MaxTransfer or MaxWriteZeroes below OffsetAlign)")

// CheckLimits returns ErrBadLimits, wrapped with the device's name and
// figures, when dev's limits allow no request; nil otherwise.
func CheckLimits(dev device.Device) error {
	l := device.LimitsOf(dev)
	a := int64(max(l.OffsetAlign, 1))
	if (l.MaxTransfer > 0 && l.MaxTransfer < a) || (l.MaxWriteZeroes > 0 && l.MaxWriteZeroes < a) {
		return fmt.Errorf("%w: %s has MaxTransfer %d, MaxWriteZeroes %d, OffsetAlign %d",
			ErrBadLimits, device.Name(dev), l.MaxTransfer, l.MaxWriteZeroes, a)
	}
	return nil
}

// step returns the largest piece size for dev: limit (MaxTransfer or
// MaxWriteZeroes, 0 for unlimited) rounded down to the offset alignment and
// capped at max. It fails rather than return 0, which would loop forever.
func step(dev device.Device, limit, max int64) (int64, error) {
	if limit <= 0 || limit >= max {
		return max, nil
	}
	s := limit
	if a := int64(device.LimitsOf(dev).OffsetAlign); a > 1 {
		s -= s % a
	}
	if s <= 0 {
		return 0, CheckLimits(dev)
	}
	return s, nil
}

func readAll(dev device.Device, p []byte, off int64) error {
	s, err := step(dev, device.LimitsOf(dev).MaxTransfer, int64(len(p)))
	if err != nil {
		return err
	}
	for len(p) > 0 {
		n := min(int64(len(p)), s)
		got, err := dev.ReadAt(p[:n], off)
		if int64(got) == n {
			err = nil // io.ReaderAt may return io.EOF with a full read
		} else if err == nil || errors.Is(err, io.EOF) {
			err = &device.IOError{Op: device.OpRead, Dev: device.Name(dev), Off: off, Len: n, Err: io.ErrUnexpectedEOF}
		}
		if err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

func writeAll(reg Region, p []byte) error {
	s, err := step(reg.Dev, device.LimitsOf(reg.Dev).MaxTransfer, int64(len(p)))
	if err != nil {
		return err
	}
	off := reg.Off
	for len(p) > 0 {
		n := min(int64(len(p)), s)
		if err := writeFull(reg.Dev, p[:n], off); err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// writeFull writes p at off. A short write is a failure even when the
// device returns no error (breaking io.WriterAt's contract): the bytes
// after the count are not on the device, so success would be a lie.
func writeFull(dev device.Device, p []byte, off int64) error {
	got, err := dev.WriteAt(p, off)
	if err == nil && got < len(p) {
		err = &device.IOError{Op: device.OpWrite, Dev: device.Name(dev), Off: off + int64(got), Len: int64(len(p) - got), Err: io.ErrShortWrite}
	}
	return err
}

func read(r *Request, reg Region) error {
	buf := r.Buf[:reg.Len]
	err := readAll(reg.Dev, buf, reg.Off)
	if err == nil {
		return nil
	}
	if !r.Salvage {
		clear(buf)
		r.Bad = append(r.Bad, Range{reg.Off, reg.Len})
		return err
	}
	// Re-read block by block; keep what reads, zero what does not.
	l := device.LimitsOf(reg.Dev)
	bs := int64(max(4096, l.OffsetAlign, l.LogicalBlockSize))
	for o := int64(0); o < reg.Len; {
		// The first block ends on a block boundary of the device.
		n := min(bs-(reg.Off+o)%bs, reg.Len-o)
		// A block counts as unreadable only when a second try fails
		// too, so one transient error does not zero good data.
		if readAll(reg.Dev, buf[o:o+n], reg.Off+o) != nil && readAll(reg.Dev, buf[o:o+n], reg.Off+o) != nil {
			clear(buf[o : o+n])
			if k := len(r.Bad); k > 0 && r.Bad[k-1].Off+r.Bad[k-1].Len == reg.Off+o {
				r.Bad[k-1].Len += n
			} else {
				r.Bad = append(r.Bad, Range{reg.Off + o, n})
			}
		}
		o += n
	}
	if len(r.Bad) == 0 {
		// Every block read on the second try: the failure was transient.
		return nil
	}
	return err
}

// copyRange copies src to dst with dst's device.RangeCopier, until done or
// an error.
func copyRange(src, dst Region) error {
	rc, ok := dst.Dev.(device.RangeCopier)
	if !ok {
		return device.ErrNotSupported
	}
	for off := int64(0); off < dst.Len; {
		n, err := rc.CopyRange(src.Dev, src.Off+off, dst.Off+off, dst.Len-off)
		off += n
		if err != nil {
			return err
		}
		if n == 0 {
			return &device.IOError{Op: device.OpCopyRange, Dev: device.Name(dst.Dev), Off: dst.Off + off, Len: dst.Len - off, Err: io.ErrUnexpectedEOF}
		}
	}
	return nil
}

func writeZeroes(reg Region, native bool) error {
	if native {
		z, ok := reg.Dev.(device.WriteZeroer)
		if ok {
			err := nativeZeroes(z, reg)
			if !errors.Is(err, device.ErrNotSupported) {
				return err
			}
		}
	}
	s, err := step(reg.Dev, device.LimitsOf(reg.Dev).MaxTransfer, int64(len(zeroes)))
	if err != nil {
		return err
	}
	for off, end := reg.Off, reg.Off+reg.Len; off < end; {
		n := min(end-off, s)
		if err := writeFull(reg.Dev, zeroes[:n], off); err != nil {
			return err
		}
		off += n
	}
	return nil
}

func nativeZeroes(z device.WriteZeroer, reg Region) error {
	limit := device.LimitsOf(reg.Dev).MaxWriteZeroes
	if limit <= 0 {
		return device.ErrNotSupported
	}
	s, err := step(reg.Dev, limit, reg.Len)
	if err != nil {
		return err
	}
	for off, end := reg.Off, reg.Off+reg.Len; off < end; {
		n := min(end-off, s)
		if err := z.WriteZeroes(off, n); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// CanWriteZeroes reports whether dev has a native write-zeroes.
func CanWriteZeroes(dev device.Device) bool {
	_, ok := dev.(device.WriteZeroer)
	return ok && device.LimitsOf(dev).MaxWriteZeroes > 0
}
