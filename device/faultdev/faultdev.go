// Package faultdev wraps a device.Device and injects faults into its
// operations: errors, silently dropped writes and delays, decided per
// operation by composable Injectors.
//
// Faults come from wrapping a device, never from global state, so every
// package's tests can break the devices they hand to the code under test:
//
//	inj := faultdev.Writes(faultdev.OnIndex(3)) // fail the fourth write
//	dev := faultdev.Wrap(device.NewMem(1<<20), inj)
//
// A sweep fails each operation in turn: run the scenario once with
// OnIndex(-1), which never fires, read Seen as N, then run it N more times
// with OnIndex(i).
//
// # Injected errors
//
// An injected failure is a *device.IOError naming the operation and its
// range, whose Err wraps ErrInjected (and the error the injector chose, if
// any): errors.Is(err, faultdev.ErrInjected) tells it from a real failure.
//
// # Capabilities
//
// A Device has the methods of every optional capability (WriteZeroes,
// Discard, Flush, Extents, Identity, Limits), but reports in Limits only
// what the wrapped device has: MaxWriteZeroes and MaxDiscard are 0 when the
// wrapped device is not a device.WriteZeroer or device.Discarder, and the
// methods then fail with device.ErrNotSupported, so that callers using
// device.LimitsOf fall back exactly as they would on the wrapped device.
package faultdev

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/kcopyd/kcopyd/device"
)

// Device is a device.Device that consults an Injector before each
// operation and passes the operations it does not fault to the wrapped
// device. It keeps the wrapped device's contract: it is safe for concurrent
// use as far as the wrapped device is, its Size and alignment are the
// wrapped device's, and a dropped write is still checked against Size.
//
// ReadAt, WriteAt, WriteZeroes, Discard, Flush and Extents are each one
// operation for the injector; Close, Size, Limits and Identity are not.
type Device struct {
	dev   device.Device
	inj   Injector
	sleep func(time.Duration)

	seen     atomic.Int64 // operations passed to the injector
	injected atomic.Int64 // operations failed or dropped
	closed   atomic.Bool
}

var (
	_ device.Device      = (*Device)(nil)
	_ device.Limiter     = (*Device)(nil)
	_ device.WriteZeroer = (*Device)(nil)
	_ device.Discarder   = (*Device)(nil)
	_ device.Flusher     = (*Device)(nil)
	_ device.Extenter    = (*Device)(nil)
	_ device.Identifier  = (*Device)(nil)
	_ device.Wrapper     = (*Device)(nil)
	_ fmt.Stringer       = (*Device)(nil)
)

// Option configures a Device.
type Option func(*Device)

// WithSleep makes the Device wait for injected delays with sleep instead of
// time.Sleep, so that tests can record delays or drive a fake clock.
func WithSleep(sleep func(time.Duration)) Option {
	return func(d *Device) { d.sleep = sleep }
}

// Wrap returns a Device that injects the faults inj decides into dev's
// operations. A nil inj injects nothing (the Device still counts
// operations). Closing the Device closes dev.
func Wrap(dev device.Device, inj Injector, opts ...Option) *Device {
	if dev == nil {
		panic("faultdev.Wrap: nil device")
	}
	d := &Device{dev: dev, inj: inj, sleep: time.Sleep}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Unwrap implements device.Wrapper.
func (d *Device) Unwrap() device.Device { return d.dev }

// Seen returns the number of operations the Device has passed to its
// injector so far, faulted or not.
func (d *Device) Seen() int64 { return d.seen.Load() }

// Injected returns the number of operations the Device has failed or
// dropped so far. Delays alone are not counted.
func (d *Device) Injected() int64 { return d.injected.Load() }

// String returns "faultdev(<name of the wrapped device>)".
func (d *Device) String() string { return "faultdev(" + device.Name(d.dev) + ")" }

// Size implements device.Device.
func (d *Device) Size() int64 { return d.dev.Size() }

// Limits implements device.Limiter. It returns the wrapped device's limits,
// with MaxWriteZeroes and MaxDiscard forced to 0 when the wrapped device
// lacks the capability.
func (d *Device) Limits() device.Limits {
	l := device.LimitsOf(d.dev)
	if _, ok := d.dev.(device.WriteZeroer); !ok {
		l.MaxWriteZeroes = 0
	}
	if _, ok := d.dev.(device.Discarder); !ok {
		l.MaxDiscard = 0
	}
	return l
}

// Identity implements device.Identifier: it is the identity of the wrapped
// device, since both address the same storage.
func (d *Device) Identity() string { return device.IdentityOf(d.dev) }

// decide consults the injector about op and sleeps any delay. It returns
// the fault to apply.
func (d *Device) decide(kind device.Op, off, length int64) Fault {
	d.seen.Add(1)
	if d.inj == nil {
		return Fault{}
	}
	f := d.inj.Inject(Op{Kind: kind, Off: off, Len: length})
	if f.Delay > 0 {
		d.sleep(f.Delay)
	}
	if f.Err != nil || f.Drop && kind != device.OpRead && kind != device.OpExtents || f.Short && (kind == device.OpRead || kind == device.OpWrite) {
		d.injected.Add(1)
	}
	return f
}

// short returns how many bytes of an n-byte read or write a Short fault
// lets through: half, rounded down to the wrapped device's OffsetAlign.
func (d *Device) short(n int) int {
	h := n / 2
	if a := device.LimitsOf(d.dev).OffsetAlign; a > 1 {
		h -= h % a
	}
	return h
}

// shortIO runs a Short fault's partial transfer with do, which reads or
// writes a prefix of p at off, and returns its count with the fault's
// error, or the transfer's own error, or nil.
func (d *Device) shortIO(kind device.Op, f Fault, p []byte, off int64, do func([]byte, int64) (int, error)) (int, error) {
	n, err := do(p[:d.short(len(p))], off)
	if f.Err != nil {
		return n, d.ioError(kind, off, int64(len(p)), injectedError(f.Err))
	}
	return n, err
}

func (d *Device) ioError(kind device.Op, off, length int64, err error) error {
	return &device.IOError{Op: kind, Dev: d.String(), Off: off, Len: length, Err: err}
}

// injectedError returns the error an injected fault reports.
func injectedError(err error) error {
	if err == ErrInjected {
		return ErrInjected
	}
	return fmt.Errorf("%w: %w", ErrInjected, err)
}

// dropped returns the result of a dropped write-like operation: success if
// the request is valid and the device open, else the error the wrapped
// device would have returned.
func (d *Device) dropped(kind device.Op, off, length int64) error {
	if d.closed.Load() {
		return d.ioError(kind, off, length, device.ErrClosed)
	}
	if err := device.CheckRange(off, length, d.dev.Size(), device.LimitsOf(d.dev).OffsetAlign); err != nil {
		return d.ioError(kind, off, length, err)
	}
	return nil
}

// ReadAt implements device.Device. An injected failure returns 0 bytes;
// Drop has no effect on reads. A Short fault reads part of p (see
// Fault.Short).
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	f := d.decide(device.OpRead, off, int64(len(p)))
	if f.Short {
		return d.shortIO(device.OpRead, f, p, off, d.dev.ReadAt)
	}
	if f.Err != nil {
		return 0, d.ioError(device.OpRead, off, int64(len(p)), injectedError(f.Err))
	}
	return d.dev.ReadAt(p, off)
}

// WriteAt implements device.Device. An injected failure writes nothing. A
// dropped write writes nothing and returns len(p), nil when the request is
// valid. A Short fault writes part of p (see Fault.Short).
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	f := d.decide(device.OpWrite, off, int64(len(p)))
	switch {
	case f.Short:
		return d.shortIO(device.OpWrite, f, p, off, d.dev.WriteAt)
	case f.Err != nil:
		return 0, d.ioError(device.OpWrite, off, int64(len(p)), injectedError(f.Err))
	case f.Drop:
		if err := d.dropped(device.OpWrite, off, int64(len(p))); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return d.dev.WriteAt(p, off)
}

// WriteZeroes implements device.WriteZeroer. It fails with an error
// wrapping device.ErrNotSupported, changing nothing, when the wrapped device
// is not a device.WriteZeroer (Limits then reports MaxWriteZeroes 0).
func (d *Device) WriteZeroes(off, length int64) error {
	f := d.decide(device.OpWriteZeroes, off, length)
	switch {
	case f.Err != nil:
		return d.ioError(device.OpWriteZeroes, off, length, injectedError(f.Err))
	case f.Drop:
		return d.dropped(device.OpWriteZeroes, off, length)
	}
	wz, ok := d.dev.(device.WriteZeroer)
	if !ok {
		return d.ioError(device.OpWriteZeroes, off, length, device.ErrNotSupported)
	}
	return wz.WriteZeroes(off, length)
}

// Discard implements device.Discarder. It fails with an error wrapping
// device.ErrNotSupported when the wrapped device is not a
// device.Discarder (Limits then reports MaxDiscard 0).
func (d *Device) Discard(off, length int64) error {
	f := d.decide(device.OpDiscard, off, length)
	switch {
	case f.Err != nil:
		return d.ioError(device.OpDiscard, off, length, injectedError(f.Err))
	case f.Drop:
		return d.dropped(device.OpDiscard, off, length)
	}
	dc, ok := d.dev.(device.Discarder)
	if !ok {
		return d.ioError(device.OpDiscard, off, length, device.ErrNotSupported)
	}
	return dc.Discard(off, length)
}

// Flush implements device.Flusher. When the wrapped device is not a
// device.Flusher it has no volatile cache, and Flush succeeds (unless
// faulted or closed) without doing anything.
func (d *Device) Flush() error {
	f := d.decide(device.OpFlush, 0, 0)
	switch {
	case f.Err != nil:
		return d.ioError(device.OpFlush, 0, 0, injectedError(f.Err))
	case f.Drop:
		return d.dropped(device.OpFlush, 0, 0)
	}
	fl, ok := d.dev.(device.Flusher)
	if !ok {
		if d.closed.Load() {
			return d.ioError(device.OpFlush, 0, 0, device.ErrClosed)
		}
		return nil
	}
	return fl.Flush()
}

// Extents implements device.Extenter. When the wrapped device is not a
// device.Extenter, it knows nothing about allocation and Extents reports
// the whole (non-empty, in-range) request as one data extent.
func (d *Device) Extents(off, length int64) ([]device.Extent, error) {
	f := d.decide(device.OpExtents, off, length)
	if f.Err != nil {
		return nil, d.ioError(device.OpExtents, off, length, injectedError(f.Err))
	}
	if ex, ok := d.dev.(device.Extenter); ok {
		return ex.Extents(off, length)
	}
	if d.closed.Load() {
		return nil, d.ioError(device.OpExtents, off, length, device.ErrClosed)
	}
	if err := device.CheckRange(off, length, d.dev.Size(), 1); err != nil {
		return nil, d.ioError(device.OpExtents, off, length, err)
	}
	if length == 0 {
		return nil, d.ioError(device.OpExtents, off, length, fmt.Errorf("%w: empty range", device.ErrOutOfRange))
	}
	return []device.Extent{{Off: off, Len: length}}, nil
}

// Close implements io.Closer. It closes the wrapped device; no fault is
// injected.
func (d *Device) Close() error {
	d.closed.Store(true)
	return d.dev.Close()
}
