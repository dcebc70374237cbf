// Package zoned emulates a host-managed zoned block device (SMR disk, ZNS
// namespace) on top of any device.Device, so that code which must write
// zones sequentially, such as kcopyd's WriteSeq mode, can be tested without
// zoned hardware.
//
// The device is cut into zones of a fixed size (the last one may be
// shorter). The first zones may be conventional: they accept writes
// anywhere, like an ordinary device. Every other zone is
// sequential-write-required and has a write pointer: a write to it must
// start exactly at the write pointer and end inside the zone, and then
// advances the write pointer; any other write fails with an error wrapping
// ErrUnalignedWrite and writes nothing, as the kernel's host-managed model
// (and the ZBC "unaligned write" check) demands. Reads of a sequential zone
// past its write pointer return zeroes. ResetZone rewinds a write pointer.
//
// # Concurrency
//
// The check of the write pointer, the write and the advance are atomic per
// zone: two writes racing for the same write pointer cannot both succeed,
// and a write issued ahead of its predecessor fails instead of being
// silently reordered. Writes to one zone are serialised; writes to
// different zones, and all reads, run in parallel.
package zoned

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/kcopyd/kcopyd/device"
)

// Errors returned by a zoned Device.
var (
	// ErrUnalignedWrite is returned when a write or write-zeroes to a
	// sequential zone does not start at the zone's write pointer (a gap,
	// a rewrite, a write to a full zone, or a write racing another for
	// the same write pointer) or crosses the end of the zone. The write
	// changes nothing.
	ErrUnalignedWrite = errors.New("zoned: write not at the write pointer of a sequential zone")

	// ErrInvalidZone is returned by zone operations (ResetZone,
	// FinishZone) given an offset that is not the start of a sequential
	// zone.
	ErrInvalidZone = errors.New("zoned: not the start of a sequential zone")
)

// Zone operations reported in device.IOError.Op.
const (
	OpResetZone  device.Op = "reset-zone"
	OpFinishZone device.Op = "finish-zone"
)

// ZoneType is the type of a zone; the values are the kernel's
// BLK_ZONE_TYPE_*.
type ZoneType int

const (
	// TypeConventional is a zone that accepts writes anywhere.
	TypeConventional ZoneType = 1
	// TypeSequentialRequired is a zone that accepts writes only at its
	// write pointer.
	TypeSequentialRequired ZoneType = 2
)

// String returns the name blkzone uses.
func (t ZoneType) String() string {
	switch t {
	case TypeConventional:
		return "CONVENTIONAL"
	case TypeSequentialRequired:
		return "SEQ_WRITE_REQUIRED"
	}
	return fmt.Sprintf("ZoneType(%d)", int(t))
}

// ZoneCond is the condition of a zone; the values are the kernel's
// BLK_ZONE_COND_*. The emulation has no open-zone limits, so a partly
// written zone is always implicitly open.
type ZoneCond int

const (
	// CondNotWP is the condition of conventional zones.
	CondNotWP ZoneCond = 0x0
	// CondEmpty is a sequential zone whose write pointer is at its start.
	CondEmpty ZoneCond = 0x1
	// CondImplicitOpen is a sequential zone written part way.
	CondImplicitOpen ZoneCond = 0x2
	// CondFull is a sequential zone whose write pointer is at its end.
	CondFull ZoneCond = 0xE
)

// String returns the name blkzone uses.
func (c ZoneCond) String() string {
	switch c {
	case CondNotWP:
		return "nw"
	case CondEmpty:
		return "em"
	case CondImplicitOpen:
		return "oi"
	case CondFull:
		return "fu"
	}
	return fmt.Sprintf("ZoneCond(%d)", int(c))
}

// Zone describes one zone, as reported by Zones.
type Zone struct {
	Start, Len int64 // byte range of the zone
	// WP is the write pointer, a byte offset in [Start, Start+Len]. It is
	// meaningless for conventional zones and set to Start+Len.
	WP   int64
	Type ZoneType
	Cond ZoneCond
}

// Write records one successful write, for the OnWrite hook.
type Write struct {
	Zone     int   // index of the (first) zone written
	Off, Len int64 // byte range written
	Zeroes   bool  // true for WriteZeroes
}

// Option configures a Device.
type Option func(*config)

type config struct {
	conventional int
	startFull    bool
	onWrite      func(Write)
}

// Conventional makes the first n zones conventional. The default is 0.
func Conventional(n int) Option { return func(c *config) { c.conventional = n } }

// StartFull makes every sequential zone start full (write pointer at its
// end) instead of empty, so that data already on the wrapped device reads
// back; a zone must be reset before it is written. The default is empty
// zones, which hide whatever the wrapped device holds.
func StartFull() Option { return func(c *config) { c.startFull = true } }

// OnWrite calls fn after every successful write or write-zeroes, before it
// returns. Calls for one sequential zone are serialised, in write pointer
// order; calls for different zones or conventional zones may be
// concurrent, so fn must be safe for concurrent use. fn must not call the
// Device.
func OnWrite(fn func(Write)) Option { return func(c *config) { c.onWrite = fn } }

// Device is an emulated host-managed zoned device wrapping another device.
// It implements device.Device, Limiter, WriteZeroer (when the wrapped
// device does), Flusher, Extenter, Identifier and Wrapper; it does not
// discard.
type Device struct {
	dev      device.Device
	size     int64
	zoneSize int64
	align    int // OffsetAlign of dev
	nconv    int
	onWrite  func(Write)
	closed   atomic.Bool

	zones []zone
}

// zone is the state of one sequential zone.
type zone struct {
	// mu serialises writes, resets and finishes of the zone: it is held
	// from the write pointer check until the advance.
	mu sync.Mutex
	// wp is the write pointer and valid the end of the data written since
	// the last reset: they differ only after FinishZone, when the bytes
	// between them read as zeroes. Both are written under mu and read
	// without it.
	wp, valid atomic.Int64
}

var (
	_ device.Device      = (*Device)(nil)
	_ device.Limiter     = (*Device)(nil)
	_ device.WriteZeroer = (*Device)(nil)
	_ device.Flusher     = (*Device)(nil)
	_ device.Extenter    = (*Device)(nil)
	_ device.Identifier  = (*Device)(nil)
	_ device.Wrapper     = (*Device)(nil)
	_ fmt.Stringer       = (*Device)(nil)
)

// New returns a zoned device over dev with zones of zoneSize bytes; the
// last zone is shorter when dev's size is not a multiple of zoneSize.
// zoneSize must be positive and a multiple of dev's logical block size and
// offset alignment. Closing the Device closes dev.
func New(dev device.Device, zoneSize int64, opts ...Option) (*Device, error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	l := device.LimitsOf(dev)
	align := int64(max(l.LogicalBlockSize, l.OffsetAlign, 1))
	if zoneSize <= 0 || zoneSize%align != 0 {
		return nil, fmt.Errorf("zoned: zone size %d is not a positive multiple of %d: %w", zoneSize, align, device.ErrAlignment)
	}
	size := dev.Size()
	n := (size + zoneSize - 1) / zoneSize
	if cfg.conventional < 0 || int64(cfg.conventional) > n {
		return nil, fmt.Errorf("zoned: %d conventional zones on a device of %d zones", cfg.conventional, n)
	}
	d := &Device{
		dev:      dev,
		size:     size,
		zoneSize: zoneSize,
		align:    l.OffsetAlign,
		nconv:    cfg.conventional,
		onWrite:  cfg.onWrite,
		zones:    make([]zone, n),
	}
	for i := range d.zones {
		start, end := d.bounds(i)
		if cfg.startFull {
			d.zones[i].wp.Store(end)
			d.zones[i].valid.Store(end)
		} else {
			d.zones[i].wp.Store(start)
			d.zones[i].valid.Store(start)
		}
	}
	return d, nil
}

// bounds returns the byte range of zone i.
func (d *Device) bounds(i int) (start, end int64) {
	start = int64(i) * d.zoneSize
	return start, min(start+d.zoneSize, d.size)
}

// Unwrap implements device.Wrapper.
func (d *Device) Unwrap() device.Device { return d.dev }

// String returns "zoned(<name of the wrapped device>)".
func (d *Device) String() string { return "zoned(" + device.Name(d.dev) + ")" }

// Size implements device.Device.
func (d *Device) Size() int64 { return d.size }

// ZoneSize returns the size of every zone but possibly the last.
func (d *Device) ZoneSize() int64 { return d.zoneSize }

// NumZones returns the number of zones.
func (d *Device) NumZones() int { return len(d.zones) }

// Limits implements device.Limiter: the wrapped device's limits, with the
// host-managed zone model, no discard, and no write-zeroes unless the
// wrapped device has it.
func (d *Device) Limits() device.Limits {
	l := device.LimitsOf(d.dev)
	l.Zoned = device.ZoneHostManaged
	l.MaxDiscard = 0
	if _, ok := d.dev.(device.WriteZeroer); !ok {
		l.MaxWriteZeroes = 0
	}
	return l
}

// Identity implements device.Identifier: it is the wrapped device's.
func (d *Device) Identity() string { return device.IdentityOf(d.dev) }

func (d *Device) ioError(op device.Op, off, length int64, err error) error {
	return &device.IOError{Op: op, Dev: d.String(), Off: off, Len: length, Err: err}
}

// Zones returns a snapshot of every zone's state.
func (d *Device) Zones() []Zone {
	zs := make([]Zone, len(d.zones))
	for i := range zs {
		zs[i] = d.zoneInfo(i)
	}
	return zs
}

func (d *Device) zoneInfo(i int) Zone {
	start, end := d.bounds(i)
	z := Zone{Start: start, Len: end - start, WP: end, Type: TypeConventional, Cond: CondNotWP}
	if i < d.nconv {
		return z
	}
	z.Type = TypeSequentialRequired
	z.WP = d.zones[i].wp.Load()
	switch z.WP {
	case start:
		z.Cond = CondEmpty
	case end:
		z.Cond = CondFull
	default:
		z.Cond = CondImplicitOpen
	}
	return z
}

// ReadAt implements device.Device. Bytes of a sequential zone at or past
// its write pointer (as it was when the call started; for a finished zone,
// past the data written before FinishZone) read as zeroes; the rest comes
// from the wrapped device, whose end-of-device and alignment rules apply.
// A read racing a ResetZone of the same zone may return either state.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= d.size || len(p) == 0 {
		return d.dev.ReadAt(p, off)
	}
	// Snapshot the write pointers first: data below them is stable, so
	// nothing written after the snapshot can be mistaken for valid.
	end := min(off+int64(len(p)), d.size)
	first, last := int(off/d.zoneSize), int((end-1)/d.zoneSize)
	var buf [8]int64
	valid := buf[:0]
	for i := max(first, d.nconv); i <= last; i++ {
		valid = append(valid, d.zones[i].valid.Load())
	}
	n, err := d.dev.ReadAt(p, off)
	for j, w := range valid {
		_, zend := d.bounds(max(first, d.nconv) + j)
		lo, hi := max(w, off), min(zend, off+int64(n))
		if lo < hi {
			clear(p[lo-off : hi-off])
		}
	}
	return n, err
}

// WriteAt implements device.Device. A write that touches a sequential zone
// must start at that zone's write pointer and end inside the zone, else it
// fails with an error wrapping ErrUnalignedWrite and writes nothing; a
// successful one advances the write pointer to its end. If the wrapped
// device fails the write, the write pointer does not move. Writes confined
// to conventional zones may go anywhere.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	n := 0
	err := d.write(device.OpWrite, off, int64(len(p)), func() error {
		var err error
		n, err = d.dev.WriteAt(p, off)
		return err
	})
	return n, err
}

// WriteZeroes implements device.WriteZeroer with the write pointer rules of
// WriteAt. It fails with an error wrapping device.ErrNotSupported, changing
// nothing, when the wrapped device is not a device.WriteZeroer.
func (d *Device) WriteZeroes(off, length int64) error {
	wz, ok := d.dev.(device.WriteZeroer)
	if !ok {
		return d.ioError(device.OpWriteZeroes, off, length, device.ErrNotSupported)
	}
	return d.write(device.OpWriteZeroes, off, length, func() error {
		return wz.WriteZeroes(off, length)
	})
}

// write checks a write-like request of length bytes at off against the
// zones and runs do, which performs it on the wrapped device, holding the
// zone's lock for a sequential zone.
func (d *Device) write(op device.Op, off, length int64, do func() error) error {
	if d.closed.Load() {
		return d.ioError(op, off, length, device.ErrClosed)
	}
	if err := device.CheckRange(off, length, d.size, d.align); err != nil {
		return d.ioError(op, off, length, err)
	}
	if length == 0 {
		return do()
	}
	first, last := int(off/d.zoneSize), int((off+length-1)/d.zoneSize)
	if last < d.nconv {
		if err := do(); err != nil {
			return err
		}
		d.record(first, op, off, length)
		return nil
	}
	if first != last {
		_, fend := d.bounds(first)
		if first < d.nconv {
			return d.ioError(op, off, length, fmt.Errorf("%w: crosses from a conventional zone into the sequential zone at %d", ErrUnalignedWrite, fend))
		}
		return d.ioError(op, off, length, fmt.Errorf("%w: crosses the end of the zone at %d", ErrUnalignedWrite, fend))
	}
	zstart, zend := d.bounds(first)
	z := &d.zones[first]
	z.mu.Lock()
	defer z.mu.Unlock()
	switch wp := z.wp.Load(); {
	case wp == zend:
		return d.ioError(op, off, length, fmt.Errorf("%w: zone [%d, +%d) is full", ErrUnalignedWrite, zstart, zend-zstart))
	case off != wp:
		return d.ioError(op, off, length, fmt.Errorf("%w: write pointer of zone [%d, +%d) is at %d", ErrUnalignedWrite, zstart, zend-zstart, wp))
	}
	if err := do(); err != nil {
		return err
	}
	z.valid.Store(off + length)
	z.wp.Store(off + length)
	d.record(first, op, off, length)
	return nil
}

func (d *Device) record(zone int, op device.Op, off, length int64) {
	if d.onWrite != nil {
		d.onWrite(Write{Zone: zone, Off: off, Len: length, Zeroes: op == device.OpWriteZeroes})
	}
}

// seqZone returns the index of the sequential zone starting at off.
func (d *Device) seqZone(op device.Op, off int64) (int, error) {
	if d.closed.Load() {
		return 0, d.ioError(op, off, 0, device.ErrClosed)
	}
	if off < 0 || off >= d.size || off%d.zoneSize != 0 || int(off/d.zoneSize) < d.nconv {
		return 0, d.ioError(op, off, 0, fmt.Errorf("%w: offset %d", ErrInvalidZone, off))
	}
	return int(off / d.zoneSize), nil
}

// ResetZone rewinds the write pointer of the sequential zone starting at
// off to the zone's start: the zone reads as zeroes and accepts writes from
// its start again. It waits for a write in progress on the zone. off that
// is not the start of a sequential zone fails with an error wrapping
// ErrInvalidZone.
func (d *Device) ResetZone(off int64) error {
	i, err := d.seqZone(OpResetZone, off)
	if err != nil {
		return err
	}
	z := &d.zones[i]
	z.mu.Lock()
	defer z.mu.Unlock()
	z.valid.Store(off)
	z.wp.Store(off)
	return nil
}

// ResetAll resets every sequential zone.
func (d *Device) ResetAll() error {
	for i := d.nconv; i < len(d.zones); i++ {
		start, _ := d.bounds(i)
		if err := d.ResetZone(start); err != nil {
			return err
		}
	}
	return nil
}

// FinishZone moves the write pointer of the sequential zone starting at off
// to the zone's end, making it full; the bytes skipped read as zeroes until
// the zone is reset. off
// that is not the start of a sequential zone fails with an error wrapping
// ErrInvalidZone.
func (d *Device) FinishZone(off int64) error {
	i, err := d.seqZone(OpFinishZone, off)
	if err != nil {
		return err
	}
	_, end := d.bounds(i)
	z := &d.zones[i]
	z.mu.Lock()
	defer z.mu.Unlock()
	z.wp.Store(end)
	return nil
}

// Flush implements device.Flusher by flushing the wrapped device, or doing
// nothing when it has no cache (is not a device.Flusher).
func (d *Device) Flush() error {
	if f, ok := d.dev.(device.Flusher); ok {
		return f.Flush()
	}
	if d.closed.Load() {
		return d.ioError(device.OpFlush, 0, 0, device.ErrClosed)
	}
	return nil
}

// Extents implements device.Extenter. In a sequential zone the bytes
// written since the last reset are data and the rest a hole that reads as
// zeroes.
// Conventional zones report the wrapped device's extents when it is a
// device.Extenter, else data. The range must lie inside the device and not
// be empty, else the error wraps device.ErrOutOfRange.
func (d *Device) Extents(off, length int64) ([]device.Extent, error) {
	if d.closed.Load() {
		return nil, d.ioError(device.OpExtents, off, length, device.ErrClosed)
	}
	if err := device.CheckRange(off, length, d.size, 1); err != nil {
		return nil, d.ioError(device.OpExtents, off, length, err)
	}
	if length == 0 {
		return nil, d.ioError(device.OpExtents, off, length, fmt.Errorf("%w: empty range", device.ErrOutOfRange))
	}
	var list []device.Extent
	add := func(e device.Extent) {
		if k := len(list) - 1; k >= 0 && list[k].Hole == e.Hole && list[k].Zero == e.Zero && list[k].Off+list[k].Len == e.Off {
			list[k].Len += e.Len
			return
		}
		list = append(list, e)
	}
	end := off + length
	for pos := off; pos < end; {
		i := int(pos / d.zoneSize)
		_, zend := d.bounds(i)
		if i < d.nconv {
			cend := min(end, int64(d.nconv)*d.zoneSize)
			ex, ok := d.dev.(device.Extenter)
			if !ok {
				add(device.Extent{Off: pos, Len: cend - pos})
				pos = cend
				continue
			}
			sub, err := ex.Extents(pos, cend-pos)
			if err != nil {
				if len(list) > 0 {
					return list, nil
				}
				return nil, err
			}
			for _, e := range sub {
				add(e)
			}
			last := sub[len(sub)-1]
			if last.Off+last.Len < cend {
				return list, nil // the wrapped device ended its list early
			}
			pos = cend
			continue
		}
		zend = min(zend, end)
		valid := d.zones[i].valid.Load()
		if pos < valid {
			e := min(valid, zend)
			add(device.Extent{Off: pos, Len: e - pos})
			pos = e
		}
		if pos < zend {
			add(device.Extent{Off: pos, Len: zend - pos, Hole: true, Zero: true})
			pos = zend
		}
	}
	return slices.Clip(list), nil
}

// Close implements io.Closer by closing the wrapped device.
func (d *Device) Close() error {
	d.closed.Store(true)
	return d.dev.Close()
}

// Log records the writes a Device reports through OnWrite, for tests:
//
//	var log zoned.Log
//	dev, _ := zoned.New(mem, 1<<20, zoned.OnWrite(log.Record))
//
// It is safe for concurrent use.
type Log struct {
	// mu guards writes.
	mu     sync.Mutex
	writes []Write
}

// Record appends w to the log; pass it to OnWrite.
func (l *Log) Record(w Write) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes = append(l.writes, w)
}

// Writes returns a copy of the writes recorded so far, in the order they
// were recorded (per sequential zone, write pointer order).
func (l *Log) Writes() []Write {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.writes)
}

// Zone returns the writes recorded for zone i, in order.
func (l *Log) Zone(i int) []Write {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Write
	for _, w := range l.writes {
		if w.Zone == i {
			out = append(out, w)
		}
	}
	return out
}
