package device

import (
	"errors"
	"fmt"
	"io"
)

// Device is a fixed-size, randomly addressable store of bytes: a file, a
// block device, an NBD export or a region of memory.
//
// Offsets and lengths are in bytes, as in package io.
//
// ReadAt and WriteAt keep the io.ReaderAt and io.WriterAt contracts: they may
// be called in parallel from several goroutines on disjoint or overlapping
// ranges, they do not retain p, and a short transfer always comes with a
// non-nil error. A read that starts at or beyond Size returns 0, io.EOF; a
// read that crosses Size returns the bytes up to Size and io.EOF. A write
// that would cross Size fails with an error wrapping ErrOutOfRange and
// writes nothing; devices do not grow by writing.
//
// A device may constrain alignment (see Limits): then off, len(p) and the
// address of p must be multiples of the stated alignments, and a call that
// breaks them fails with an error wrapping ErrAlignment without doing any
// I/O. One exception: when Size is not a multiple of the offset alignment
// (an odd-sized image under O_DIRECT), a request at an aligned offset that
// ends exactly at Size is accepted.
//
// Errors from the underlying store are returned as *IOError.
type Device interface {
	io.ReaderAt
	io.WriterAt
	io.Closer

	// Size returns the size of the device in bytes. It does not change
	// while the device is open.
	Size() int64
}

// Limits describes the I/O constraints and native capabilities of a device.
// A zero field means "no constraint" for alignments and "unlimited" for
// maximum sizes, except where the field says otherwise.
type Limits struct {
	// LogicalBlockSize is the device's addressable unit in bytes: 512 or
	// 4096 for block devices, 1 for files and memory. Zero means 1.
	LogicalBlockSize int

	// OffsetAlign is the alignment in bytes that off and len(p) of ReadAt
	// and WriteAt must have, for example the logical block size when a
	// block device is opened with O_DIRECT. Zero means 1.
	OffsetAlign int

	// MemAlign is the alignment in bytes that the address of p must have
	// (statx STATX_DIOALIGN's dio_mem_align under O_DIRECT). Zero means 1.
	// It is never larger than 4096.
	MemAlign int

	// MaxTransfer is the largest length of one ReadAt or WriteAt call the
	// device accepts. Zero means unlimited.
	MaxTransfer int64

	// MaxWriteZeroes is the largest length of one WriteZeroes call. Zero
	// means the device has no native write-zeroes: callers must write
	// zeroes from memory instead. It is zero whenever the device does not
	// implement WriteZeroer.
	MaxWriteZeroes int64

	// MaxDiscard is the largest length of one Discard call; zero means the
	// device cannot discard.
	MaxDiscard int64

	// Zoned is the device's zone model.
	Zoned ZoneModel
}

// ZoneModel is the zone model of a device, as in the kernel's
// /sys/block/*/queue/zoned.
type ZoneModel int

const (
	// ZoneNone is a conventional device: any block may be written at any
	// time.
	ZoneNone ZoneModel = iota
	// ZoneHostAware is a zoned device that accepts random writes but
	// prefers sequential ones.
	ZoneHostAware
	// ZoneHostManaged is a zoned device that rejects writes that are not
	// at a zone's write pointer.
	ZoneHostManaged
)

// String returns the kernel's name for the model.
func (m ZoneModel) String() string {
	switch m {
	case ZoneNone:
		return "none"
	case ZoneHostAware:
		return "host-aware"
	case ZoneHostManaged:
		return "host-managed"
	}
	return fmt.Sprintf("ZoneModel(%d)", int(m))
}

// Limiter is implemented by devices that have constraints or capabilities.
// A device that does not implement it has Limits{} (no constraints, no
// native zeroing or discard).
type Limiter interface {
	// Limits returns the device's constraints. The result does not change
	// while the device is open.
	Limits() Limits
}

// WriteZeroer is implemented by devices that can zero a range without the
// caller sending zeroes: BLKZEROOUT, fallocate(FALLOC_FL_ZERO_RANGE),
// NBD_CMD_WRITE_ZEROES.
type WriteZeroer interface {
	// WriteZeroes makes length bytes at off read back as zeroes. The range
	// must lie inside the device and respect Limits().OffsetAlign; it may
	// be longer than MaxWriteZeroes only if the implementation splits it
	// itself. It may deallocate the range (leave a hole) when the device
	// can do so and still read zeroes. It returns an error wrapping
	// ErrNotSupported, having changed nothing, when the device turns out
	// not to support the operation at run time; callers then fall back to
	// writing zeroes. Safe for concurrent use.
	WriteZeroes(off, length int64) error
}

// Discarder is implemented by devices that can discard (trim, unmap) a
// range. After Discard the contents of the range are unspecified unless the
// device documents otherwise.
type Discarder interface {
	// Discard hints that length bytes at off are no longer needed. It
	// returns an error wrapping ErrNotSupported when the device cannot
	// discard. Safe for concurrent use.
	Discard(off, length int64) error
}

// Flusher is implemented by devices with a volatile write cache.
type Flusher interface {
	// Flush makes every write that completed before the call durable
	// (fdatasync, NBD_CMD_FLUSH). Safe for concurrent use.
	Flush() error
}

// RangeCopier is implemented by devices that can copy a range from another
// device without the bytes passing through the caller: reflink
// (FICLONERANGE) and copy_file_range(2) between files.
type RangeCopier interface {
	// CopyRange copies n bytes at srcOff of src to dstOff of the device
	// (the receiver) and returns how many bytes it copied: n with a nil
	// error, or fewer with an error. The first written bytes (of
	// [dstOff, dstOff+written)) are then copied; the rest of the range is
	// unspecified.
	//
	// Both ranges must lie inside their devices (else ErrOutOfRange) and
	// follow the receiver's Limits().OffsetAlign, like WriteAt. When the
	// pair of devices cannot be copied between natively (src is another
	// kind of device or a wrapper, the two are on different filesystems,
	// the filesystem has no such operation, the ranges overlap in one
	// file), CopyRange returns an error wrapping ErrNotSupported; callers
	// then copy the remaining n-written bytes through memory. A refusal
	// from the system is remembered, so that the next call for a similar
	// pair refuses at once instead of asking the kernel again.
	//
	// Safe for concurrent use with other calls on either device. Data
	// written by CopyRange is made durable by the receiver's Flush, like
	// data written by WriteAt.
	CopyRange(src Device, srcOff, dstOff, n int64) (written int64, err error)
}

// Starter is implemented by devices that can start a read or a write and
// report its completion later, so that a request in flight needs no
// goroutine waiting for it (device.File and blockdev.Device with O_DIRECT
// and io_uring). The engine uses it, when present, before ReadAt and
// WriteAt.
type Starter interface {
	// StartReadAt starts reading len(p) bytes at off into p and returns
	// true; c.Complete is then called exactly once, on another
	// goroutine, with the number of bytes read and the error, and p
	// must not be touched until then. A count short of len(p) with a
	// nil error is possible: the caller must check it.
	//
	// StartReadAt returns false, having started nothing, when it cannot
	// start this request now (the device is closed, read-only for a
	// write, the request is not aligned or crosses Size, or no
	// capacity is left); the caller then uses ReadAt, which reports
	// what is wrong. Safe for concurrent use.
	StartReadAt(p []byte, off int64, c Completer) bool

	// StartWriteAt is StartReadAt for writing p at off.
	StartWriteAt(p []byte, off int64, c Completer) bool
}

// Completer receives the result of a request started through a Starter.
// Complete must not block for long: it runs on the goroutine that reaps
// every completion of the device.
type Completer interface {
	Complete(n int, err error)
}

// Extent is a run of bytes with the same allocation state.
type Extent struct {
	Off, Len int64
	// Hole is true when the range is not allocated (reads as zeroes).
	Hole bool
	// Zero is true when the range is known to read as zeroes, allocated
	// or not. Hole implies Zero.
	Zero bool
}

// Extenter is implemented by devices that can say which ranges hold data:
// SEEK_DATA/SEEK_HOLE on files, NBD_CMD_BLOCK_STATUS base:allocation.
type Extenter interface {
	// Extents describes the range [off, off+length) as a sorted list of
	// adjacent, non-overlapping extents that start at off. The list may
	// end before off+length (the caller asks again from where it ended)
	// but never returns an empty list without an error, so a zero
	// length, or a range outside the device, is an error wrapping
	// ErrOutOfRange. Ranges the device knows nothing about are reported
	// as data. Safe for concurrent use.
	Extents(off, length int64) ([]Extent, error)
}

// Identifier is implemented by devices that can tell whether two handles
// refer to the same underlying storage (for example two opens of one
// file). Callers use it to detect a source that overlaps a destination.
type Identifier interface {
	// Identity returns a string that is equal for two handles of the same
	// storage and different otherwise, such as "file:<dev>:<ino>".
	Identity() string
}

// FileIdentity returns the identity of the file with inode ino on the file
// system of device number dev (stat's st_dev, in the kernel's user-space
// encoding): "file:<dev>:<ino>". Every back end that names a regular file,
// directly or behind a loop device, uses it, so that aliases of one file
// compare equal.
func FileIdentity(dev, ino uint64) string { return fmt.Sprintf("file:%d:%d", dev, ino) }

// Placer is implemented by devices that are a window onto a larger store,
// such as a partition of a disk: two devices overlap when their placements
// name the same store and their shifted ranges intersect.
type Placer interface {
	// Placement returns the identity of the whole store and the byte
	// offset at which this device starts in it.
	Placement() (identity string, off int64)
}

// Wrapper is implemented by devices that wrap another device.
type Wrapper interface {
	// Unwrap returns the wrapped device.
	Unwrap() Device
}

// LimitsOf returns d's limits, or Limits{} when d does not implement
// Limiter. Wrappers implement Limiter themselves when they change the
// limits; LimitsOf does not look through them.
func LimitsOf(d Device) Limits {
	if l, ok := d.(Limiter); ok {
		return l.Limits()
	}
	return Limits{}
}

// IdentityOf returns d's identity: Identity() when d (or a device it wraps)
// implements Identifier, else a string unique to the handle d.
func IdentityOf(d Device) string {
	for x := d; x != nil; {
		if id, ok := x.(Identifier); ok {
			return id.Identity()
		}
		w, ok := x.(Wrapper)
		if !ok {
			break
		}
		x = w.Unwrap()
	}
	return fmt.Sprintf("handle:%p", d)
}

// PlacementOf returns the identity of the store under d and the offset of
// d in it: Placement() when d (or a device it wraps) implements Placer,
// else IdentityOf(d) and 0. Byte off of d is byte off+base of the store.
func PlacementOf(d Device) (identity string, base int64) {
	for x := d; x != nil; {
		if p, ok := x.(Placer); ok {
			return p.Placement()
		}
		w, ok := x.(Wrapper)
		if !ok {
			break
		}
		x = w.Unwrap()
	}
	return IdentityOf(d), 0
}

// Name returns a short human-readable name for d: its String method when it
// has one, else its Go type.
func Name(d Device) string {
	if s, ok := d.(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("%T", d)
}

// Op names the operation that failed in an IOError.
type Op string

// Operations reported in IOError.Op.
const (
	OpRead        Op = "read"
	OpWrite       Op = "write"
	OpWriteZeroes Op = "write-zeroes"
	OpDiscard     Op = "discard"
	OpFlush       Op = "flush"
	OpExtents     Op = "extents"
	OpCopyRange   Op = "copy-range"
	OpOpen        Op = "open"
)

// IOError records a failed device operation and the range it covered, like
// fs.PathError records a failed path operation.
type IOError struct {
	Op  Op
	Dev string // the device's name, see Name
	Off int64  // byte offset of the failed request
	Len int64  // byte length of the failed request
	Err error
}

func (e *IOError) Error() string {
	if e.Op == OpFlush || e.Op == OpOpen {
		return fmt.Sprintf("%s %s: %v", e.Op, e.Dev, e.Err)
	}
	return fmt.Sprintf("%s %s [%d, +%d): %v", e.Op, e.Dev, e.Off, e.Len, e.Err)
}

// Unwrap returns the underlying error.
func (e *IOError) Unwrap() error { return e.Err }

// Errors returned by devices. Back ends wrap them (usually inside an
// *IOError) so that callers can test with errors.Is.
var (
	// ErrOutOfRange is returned when a write or a zeroing would cross the
	// end of the device, or an offset is negative.
	ErrOutOfRange = errors.New("device: range outside the device")

	// ErrAlignment is returned when an offset, a length or a buffer
	// address breaks the device's alignment (see Limits).
	ErrAlignment = errors.New("device: misaligned offset, length or buffer")

	// ErrNotSupported is returned by an optional operation that the device
	// turns out not to support at run time.
	ErrNotSupported = errors.New("device: operation not supported")

	// ErrReadOnly is returned by writes to a device opened read-only.
	ErrReadOnly = errors.New("device: read-only")

	// ErrClosed is returned by operations on a closed device.
	ErrClosed = errors.New("device: closed")
)

// CheckRange validates a write-like request of length bytes at off on a
// device of size bytes with alignment align (0 or 1 = none), returning an
// error wrapping ErrOutOfRange or ErrAlignment, or nil. Back ends use it so
// that they all reject the same requests the same way.
func CheckRange(off, length, size int64, align int) error {
	if off < 0 || length < 0 || off > size || length > size-off {
		return fmt.Errorf("%w: [%d, +%d) on a device of %d bytes", ErrOutOfRange, off, length, size)
	}
	if align > 1 && (off%int64(align) != 0 || length%int64(align) != 0) {
		return fmt.Errorf("%w: [%d, +%d) is not a multiple of %d bytes", ErrAlignment, off, length, align)
	}
	return nil
}
