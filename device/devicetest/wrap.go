package devicetest

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/kcopyd/kcopyd/device"
)

// ErrLimit is returned by a Strict device for a request longer than its
// MaxTransfer, MaxWriteZeroes or MaxDiscard, and for WriteZeroes or
// Discard on a device whose limits say it has neither.
var ErrLimit = errors.New("devicetest: request breaks the device's limits")

// StrictDevice is returned by Strict.
type StrictDevice struct {
	tb  testing.TB
	d   device.Device
	lim device.Limits
}

var (
	_ device.Device      = (*StrictDevice)(nil)
	_ device.Limiter     = (*StrictDevice)(nil)
	_ device.WriteZeroer = (*StrictDevice)(nil)
	_ device.Discarder   = (*StrictDevice)(nil)
	_ device.Flusher     = (*StrictDevice)(nil)
	_ device.Extenter    = (*StrictDevice)(nil)
	_ device.Identifier  = (*StrictDevice)(nil)
	_ device.Wrapper     = (*StrictDevice)(nil)
)

// Strict wraps d so that it has the limits lim and enforces them the way a
// device with those constraints does: a request that breaks OffsetAlign or
// MemAlign fails with an error wrapping device.ErrAlignment, and one
// longer than MaxTransfer, MaxWriteZeroes or MaxDiscard with ErrLimit,
// both without reaching d. Use it to run code written for block devices
// opened with O_DIRECT against a device.Mem, and to catch callers that do
// not respect a device's limits.
//
// When tb is not nil, every such request also fails the test with
// tb.Errorf: a caller that honours Limits never issues one. Pass nil when
// misaligned requests are expected, as in the conformance suite.
//
// MaxWriteZeroes and MaxDiscard are set to zero when d lacks the
// capability. Strict does not change d's size, so lim.OffsetAlign should
// divide d.Size().
func Strict(tb testing.TB, d device.Device, lim device.Limits) *StrictDevice {
	if lim.MemAlign > 4096 || lim.MemAlign&(lim.MemAlign-1) != 0 || lim.OffsetAlign < 0 {
		panic(fmt.Sprintf("devicetest.Strict: bad limits %+v", lim))
	}
	if _, ok := d.(device.WriteZeroer); !ok || device.LimitsOf(d).MaxWriteZeroes == 0 {
		lim.MaxWriteZeroes = 0
	}
	if _, ok := d.(device.Discarder); !ok || device.LimitsOf(d).MaxDiscard == 0 {
		lim.MaxDiscard = 0
	}
	return &StrictDevice{tb: tb, d: d, lim: lim}
}

// String returns "strict(<name of the wrapped device>)".
func (s *StrictDevice) String() string { return "strict(" + device.Name(s.d) + ")" }

// Unwrap implements device.Wrapper.
func (s *StrictDevice) Unwrap() device.Device { return s.d }

// Size implements device.Device.
func (s *StrictDevice) Size() int64 { return s.d.Size() }

// Limits implements device.Limiter. It returns the limits given to Strict.
func (s *StrictDevice) Limits() device.Limits { return s.lim }

// Identity implements device.Identifier with the wrapped device's
// identity.
func (s *StrictDevice) Identity() string { return device.IdentityOf(s.d) }

// Close implements device.Device by closing the wrapped device.
func (s *StrictDevice) Close() error { return s.d.Close() }

// reject builds the error for a request that breaks the limits and
// reports it to the test.
func (s *StrictDevice) reject(op device.Op, off, length int64, err error) error {
	err = &device.IOError{Op: op, Dev: s.String(), Off: off, Len: length, Err: err}
	if s.tb != nil {
		s.tb.Helper()
		s.tb.Errorf("devicetest.Strict: a caller broke the device's limits %+v: %v", s.lim, err)
	}
	return err
}

// check validates a request of length bytes at off with buffer p (nil
// when the request has none) against the alignment and max.
func (s *StrictDevice) check(off, length int64, p []byte, max int64) error {
	if a := int64(s.lim.OffsetAlign); a > 1 && (off%a != 0 || length%a != 0) {
		return fmt.Errorf("%w: [%d, +%d) is not a multiple of %d bytes", device.ErrAlignment, off, length, a)
	}
	if !IsAligned(p, s.lim.MemAlign) {
		return fmt.Errorf("%w: buffer address %#x is not a multiple of %d", device.ErrAlignment, addr(p), s.lim.MemAlign)
	}
	if max > 0 && length > max {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrLimit, length, max)
	}
	return nil
}

// ReadAt implements device.Device.
func (s *StrictDevice) ReadAt(p []byte, off int64) (int, error) {
	if err := s.check(off, int64(len(p)), p, s.lim.MaxTransfer); err != nil {
		return 0, s.reject(device.OpRead, off, int64(len(p)), err)
	}
	return s.d.ReadAt(p, off)
}

// WriteAt implements device.Device.
func (s *StrictDevice) WriteAt(p []byte, off int64) (int, error) {
	if err := s.check(off, int64(len(p)), p, s.lim.MaxTransfer); err != nil {
		return 0, s.reject(device.OpWrite, off, int64(len(p)), err)
	}
	return s.d.WriteAt(p, off)
}

// WriteZeroes implements device.WriteZeroer. When Limits().MaxWriteZeroes
// is zero it rejects every call with ErrLimit.
func (s *StrictDevice) WriteZeroes(off, length int64) error {
	if s.lim.MaxWriteZeroes == 0 {
		return s.reject(device.OpWriteZeroes, off, length, fmt.Errorf("%w: WriteZeroes on a device with MaxWriteZeroes 0", ErrLimit))
	}
	if err := s.check(off, length, nil, s.lim.MaxWriteZeroes); err != nil {
		return s.reject(device.OpWriteZeroes, off, length, err)
	}
	return s.d.(device.WriteZeroer).WriteZeroes(off, length)
}

// Discard implements device.Discarder. When Limits().MaxDiscard is zero it
// rejects every call with ErrLimit.
func (s *StrictDevice) Discard(off, length int64) error {
	if s.lim.MaxDiscard == 0 {
		return s.reject(device.OpDiscard, off, length, fmt.Errorf("%w: Discard on a device with MaxDiscard 0", ErrLimit))
	}
	if err := s.check(off, length, nil, s.lim.MaxDiscard); err != nil {
		return s.reject(device.OpDiscard, off, length, err)
	}
	return s.d.(device.Discarder).Discard(off, length)
}

// Flush implements device.Flusher: it flushes the wrapped device when that
// is a Flusher, and otherwise only checks that it is open.
func (s *StrictDevice) Flush() error {
	if f, ok := s.d.(device.Flusher); ok {
		return f.Flush()
	}
	if _, err := s.d.ReadAt(nil, 0); err != nil {
		return &device.IOError{Op: device.OpFlush, Dev: s.String(), Err: err}
	}
	return nil
}

// Extents implements device.Extenter with the wrapped device's extents,
// or, when it has none, one data extent over the whole range.
func (s *StrictDevice) Extents(off, length int64) ([]device.Extent, error) {
	if e, ok := s.d.(device.Extenter); ok {
		return e.Extents(off, length)
	}
	if _, err := s.d.ReadAt(nil, 0); err != nil {
		return nil, &device.IOError{Op: device.OpExtents, Dev: s.String(), Off: off, Len: length, Err: err}
	}
	if err := device.CheckRange(off, length, s.Size(), 1); err != nil || length == 0 {
		if err == nil {
			err = fmt.Errorf("%w: empty range", device.ErrOutOfRange)
		}
		return nil, &device.IOError{Op: device.OpExtents, Dev: s.String(), Off: off, Len: length, Err: err}
	}
	return []device.Extent{{Off: off, Len: length}}, nil
}

// minimal is returned by Minimal.
type minimal struct{ d device.Device }

// Minimal returns a device that does what d does but has none of the
// optional capabilities: it implements only device.Device and
// device.Wrapper, the way iotest.OneByteReader hides io.WriterTo. Code
// that uses WriteZeroes, Discard, Flush or Extents when a device offers
// them can test its fallbacks with it. It keeps d's limits on alignment
// and transfer size only by passing requests through to d: wrap it in
// Strict to expose them.
func Minimal(d device.Device) device.Device { return minimal{d} }

func (m minimal) ReadAt(p []byte, off int64) (int, error)  { return m.d.ReadAt(p, off) }
func (m minimal) WriteAt(p []byte, off int64) (int, error) { return m.d.WriteAt(p, off) }
func (m minimal) Close() error                             { return m.d.Close() }
func (m minimal) Size() int64                              { return m.d.Size() }
func (m minimal) Unwrap() device.Device                    { return m.d }
func (m minimal) String() string                           { return "minimal(" + device.Name(m.d) + ")" }

// shortIO is returned by ShortIO.
type shortIO struct {
	d device.Device
	n int
}

// ShortIO returns a device whose ReadAt and WriteAt transfer at most n
// bytes per call: a longer request transfers its first n bytes and then
// fails with an *device.IOError wrapping io.ErrUnexpectedEOF (reads) or
// io.ErrShortWrite (writes), as a device that loses a request half-way
// does. The contract holds (a short transfer comes with an error), so code
// under test must report the failure rather than loop or trust the count.
// n should respect d's alignment. ShortIO keeps d's limits and no other
// capability.
func ShortIO(d device.Device, n int) device.Device {
	if n <= 0 {
		panic(fmt.Sprintf("devicetest.ShortIO: transfer size %d", n))
	}
	return shortIO{d, n}
}

func (s shortIO) Close() error          { return s.d.Close() }
func (s shortIO) Size() int64           { return s.d.Size() }
func (s shortIO) Unwrap() device.Device { return s.d }
func (s shortIO) Limits() device.Limits { return device.LimitsOf(s.d) }
func (s shortIO) String() string        { return fmt.Sprintf("short%d(%s)", s.n, device.Name(s.d)) }

func (s shortIO) ReadAt(p []byte, off int64) (int, error) {
	if len(p) <= s.n {
		return s.d.ReadAt(p, off)
	}
	n, err := s.d.ReadAt(p[:s.n], off)
	if err == nil {
		err = &device.IOError{Op: device.OpRead, Dev: s.String(), Off: off, Len: int64(len(p)), Err: io.ErrUnexpectedEOF}
	}
	return n, err
}

func (s shortIO) WriteAt(p []byte, off int64) (int, error) {
	if len(p) <= s.n {
		return s.d.WriteAt(p, off)
	}
	// A write crossing the end must still write nothing.
	if err := device.CheckRange(off, int64(len(p)), s.d.Size(), 1); err != nil {
		return 0, &device.IOError{Op: device.OpWrite, Dev: s.String(), Off: off, Len: int64(len(p)), Err: err}
	}
	n, err := s.d.WriteAt(p[:s.n], off)
	if err == nil {
		err = &device.IOError{Op: device.OpWrite, Dev: s.String(), Off: off, Len: int64(len(p)), Err: io.ErrShortWrite}
	}
	return n, err
}
