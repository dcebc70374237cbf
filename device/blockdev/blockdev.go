//go:build linux

package blockdev

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/internal/uring"
)

// ioctlChunk is the largest range one BLKZEROOUT or BLKDISCARD ioctl
// covers. The kernel would take any length, but it holds the request (and
// the device's invalidate lock) until the whole range is done, which for
// terabytes of fallback zero-writing is minutes; splitting keeps one call
// bounded and lets errors name a smaller range. It is a multiple of every
// logical block size.
const ioctlChunk = 1 << 30

// maxMemAlign is the largest MemAlign reported, as the device contract
// demands.
const maxMemAlign = 4096

// Options control how Open opens a block device. The zero value opens it
// read-write, buffered, shared.
type Options struct {
	// ReadOnly opens the device with O_RDONLY. Writes, WriteZeroes and
	// Discard then fail with device.ErrReadOnly, and Limits reports no
	// native zeroing or discard. Default false: O_RDWR, which fails on a
	// device the kernel marks read-only.
	ReadOnly bool

	// Direct opens the device with O_DIRECT: I/O bypasses the page cache,
	// so every ReadAt and WriteAt must have off and len(p) aligned to
	// Limits().OffsetAlign and p's address aligned to Limits().MemAlign
	// (from statx STATX_DIOALIGN, else the logical block size), or it
	// fails with device.ErrAlignment before any I/O. Default false:
	// buffered I/O, any alignment, but data is cached (and may be
	// evicted from other users' cache) and a write is not on the device
	// until Flush.
	Direct bool

	// Exclusive opens the device with O_EXCL, the kernel's exclusive
	// claim, held until Close: Open fails with ErrBusy when the device
	// is mounted, stacked under device-mapper/md, active swap or
	// exclusively open elsewhere, and nobody can mount or claim it while
	// it is open. Default false: the device is opened even while a file
	// system uses it, and writing to it then corrupts that file system.
	// Copy tools should set it for every device they write.
	Exclusive bool

	// IOUring, with Direct, lets the engine start reads and writes
	// through an io_uring of the Device's own (the Device implements
	// device.Starter) instead of a goroutine blocked in pread or pwrite
	// per request. Where the kernel refuses io_uring the Device works
	// without it. Ignored without Direct. Default false.
	IOUring bool
}

// Device is an open Linux block device. It implements device.Device,
// device.Limiter, device.WriteZeroer, device.Discarder, device.Flusher,
// device.Identifier and fmt.Stringer; it does not implement
// device.Extenter, as a block device has no allocation information.
//
// All methods are safe for concurrent use. I/O calls run in parallel; Close
// waits for the calls in progress and makes later ones fail with an error
// wrapping device.ErrClosed.
type Device struct {
	path     string
	size     int64
	readOnly bool
	direct   bool
	major    uint32
	minor    uint32
	limits   device.Limits
	info     Info
	store    string // Placement: the store the device lies in
	start    int64  // Placement: the device's byte offset in store

	// ring, under Options.IOUring, starts requests on fd; nil without.
	ring *uring.Ring

	// mu guards fd against Close: I/O holds it shared, Close exclusively.
	mu struct {
		sync.RWMutex
		fd     int
		closed bool
	}
}

var (
	_ device.Device      = (*Device)(nil)
	_ device.Limiter     = (*Device)(nil)
	_ device.WriteZeroer = (*Device)(nil)
	_ device.Discarder   = (*Device)(nil)
	_ device.Flusher     = (*Device)(nil)
	_ device.Starter     = (*Device)(nil)
	_ device.Identifier  = (*Device)(nil)
	_ device.Placer      = (*Device)(nil)
	_ fmt.Stringer       = (*Device)(nil)
)

// Info describes a block device as the kernel reports it, with more detail
// than device.Limits. Fields read from sysfs are zero when sysfs is not
// available.
type Info struct {
	// Path is the path the device was opened by.
	Path string
	// Major and Minor are the device number.
	Major, Minor uint32
	// Partition is true when the device is a partition; its queue limits
	// are those of the whole disk.
	Partition bool
	// Size is the size in bytes (BLKGETSIZE64).
	Size int64
	// LogicalBlockSize (BLKSSZGET) and PhysicalBlockSize (BLKPBSZGET)
	// are in bytes.
	LogicalBlockSize, PhysicalBlockSize int
	// DioMemAlign and DioOffsetAlign are statx STATX_DIOALIGN's answer,
	// or zero when the kernel does not report it (before Linux 6.11 for
	// block devices) or the device was not opened with Options.Direct.
	DioMemAlign, DioOffsetAlign int
	// MaxSectorsBytes is queue/max_sectors_kb in bytes: the block layer
	// splits larger requests.
	MaxSectorsBytes int64
	// WriteZeroesMaxBytes is queue/write_zeroes_max_bytes. Zero means the
	// hardware has no write-zeroes command and BLKZEROOUT makes the
	// kernel write pages of zeroes itself.
	WriteZeroesMaxBytes int64
	// DiscardMaxBytes is queue/discard_max_bytes; zero means the device
	// cannot discard.
	DiscardMaxBytes int64
	// Zoned is queue/zoned.
	Zoned device.ZoneModel
}

// Open opens the block device at path (symbolic links such as
// /dev/disk/by-id/... are followed). Errors are *device.IOError with Op
// device.OpOpen wrapping ErrNotBlockDevice, ErrBusy (Options.Exclusive),
// ErrDirectNotSupported (Options.Direct), device.ErrReadOnly (a read-write
// open of a device the kernel marks read-only) or the system's error.
func Open(path string, opts Options) (*Device, error) {
	openErr := func(err error) error {
		return &device.IOError{Op: device.OpOpen, Dev: path, Err: err}
	}
	// Refuse anything but a block device before opening it: opening a
	// FIFO would block, and O_EXCL means something else on a file.
	if err := checkBlock(path); err != nil {
		return nil, openErr(err)
	}

	// O_NONBLOCK: a path swapped for a FIFO after checkBlock must not
	// block the open; probe checks the descriptor and clears the flag.
	flags := unix.O_CLOEXEC | unix.O_NONBLOCK | unix.O_RDWR
	if opts.ReadOnly {
		flags = unix.O_CLOEXEC | unix.O_NONBLOCK | unix.O_RDONLY
	}
	if opts.Direct {
		flags |= unix.O_DIRECT
	}
	if opts.Exclusive {
		flags |= unix.O_EXCL
	}
	fd, err := openRetry(path, flags)
	if err != nil {
		switch {
		case errors.Is(err, unix.EBUSY) && opts.Exclusive:
			err = fmt.Errorf("%w: exclusive open: %w", ErrBusy, err)
		case errors.Is(err, unix.EINVAL) && opts.Direct:
			err = fmt.Errorf("%w: %w", ErrDirectNotSupported, err)
		case (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EROFS)) && !opts.ReadOnly && kernelReadOnly(path):
			err = fmt.Errorf("%w: the kernel marks the device read-only; open it read-only: %w", device.ErrReadOnly, err)
		}
		return nil, openErr(err)
	}

	d := &Device{path: path, readOnly: opts.ReadOnly, direct: opts.Direct}
	d.mu.fd = fd
	if err := d.probe(); err != nil {
		unix.Close(fd)
		return nil, openErr(err)
	}
	if opts.Direct && opts.IOUring {
		// Without a ring the Device works the ordinary way: the option
		// is a speed-up, not a promise.
		if r, err := uring.New(64); err == nil {
			d.ring = r
		}
	}
	return d, nil
}

// StartReadAt implements device.Starter for an aligned read inside Size,
// under Options.IOUring; otherwise it returns false.
func (d *Device) StartReadAt(p []byte, off int64, c device.Completer) bool {
	return d.startIO(uring.Read, p, off, c)
}

// StartWriteAt implements device.Starter for an aligned write inside
// Size to a writable Device, under Options.IOUring; otherwise it returns
// false.
func (d *Device) StartWriteAt(p []byte, off int64, c device.Completer) bool {
	return !d.readOnly && d.startIO(uring.Write, p, off, c)
}

func (d *Device) startIO(op uring.Op, p []byte, off int64, c device.Completer) bool {
	if d.ring == nil || off < 0 || int64(len(p)) > d.size-off || d.checkAlign(p, off) != nil {
		return false
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return !d.mu.closed && d.ring.Start(op, d.mu.fd, p, off, c)
}

// openRetry is open(2) retried on EINTR.
func openRetry(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, flags, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// checkBlock returns nil when path is a block device, else an error
// wrapping ErrNotBlockDevice or the stat error.
func checkBlock(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return fmt.Errorf("%w: %s is a %s", ErrNotBlockDevice, path, device.FileKind(st.Mode))
	}
	return nil
}

// kernelReadOnly reports whether the block device at path is marked
// read-only (BLKROGET). It returns false when it cannot tell.
func kernelReadOnly(path string) bool {
	fd, err := openRetry(path, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	ro, err := unix.IoctlGetInt(fd, unix.BLKROGET)
	return err == nil && ro != 0
}

// IsBlockDevice reports whether path (following symbolic links) is a block
// device. It returns an error only when path cannot be examined, for
// example because it does not exist.
func IsBlockDevice(path string) (bool, error) {
	err := checkBlock(path)
	if errors.Is(err, ErrNotBlockDevice) {
		return false, nil
	}
	return err == nil, err
}

// probe fills in the device's geometry and limits from the open fd.
func (d *Device) probe() error {
	fd := d.mu.fd
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		// The path was replaced between stat and open.
		return fmt.Errorf("%w: %s is a %s", ErrNotBlockDevice, d.path, device.FileKind(st.Mode))
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		return fmt.Errorf("clearing O_NONBLOCK: %w", err)
	}
	d.major, d.minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)

	size, err := ioctlGetUint64(fd, unix.BLKGETSIZE64)
	if err != nil {
		return fmt.Errorf("BLKGETSIZE64: %w", err)
	}
	if size > 1<<63-1 {
		return fmt.Errorf("BLKGETSIZE64: implausible size %d", size)
	}
	d.size = int64(size)
	lbs, err := unix.IoctlGetUint32(fd, unix.BLKSSZGET)
	if err != nil {
		return fmt.Errorf("BLKSSZGET: %w", err)
	}
	pbs, err := unix.IoctlGetUint32(fd, unix.BLKPBSZGET)
	if err != nil {
		return fmt.Errorf("BLKPBSZGET: %w", err)
	}
	if !d.readOnly {
		// The kernel lets a read-only device be opened for writing and
		// fails the writes; refuse it here, where the reason is clear.
		if ro, err := unix.IoctlGetInt(fd, unix.BLKROGET); err == nil && ro != 0 {
			return fmt.Errorf("%w: the kernel marks the device read-only; open it read-only", device.ErrReadOnly)
		}
	}
	if lbs == 0 || lbs&(lbs-1) != 0 {
		return fmt.Errorf("BLKSSZGET: implausible logical block size %d", lbs)
	}

	q := readQueue(sysfsRoot, d.major, d.minor)
	d.store, d.start = placement(fd, d.major, d.minor, q)
	d.info = Info{
		Path:                d.path,
		Major:               d.major,
		Minor:               d.minor,
		Partition:           q.partition,
		Size:                d.size,
		LogicalBlockSize:    int(lbs),
		PhysicalBlockSize:   int(pbs),
		MaxSectorsBytes:     q.maxSectorsBytes,
		WriteZeroesMaxBytes: q.writeZeroesMaxBytes,
		DiscardMaxBytes:     q.discardMaxBytes,
		Zoned:               q.zoned,
	}

	l := device.Limits{
		LogicalBlockSize: int(lbs),
		OffsetAlign:      1,
		MemAlign:         1,
		Zoned:            q.zoned,
	}
	if d.direct {
		var sx unix.Statx_t
		err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &sx)
		if err == nil && sx.Mask&unix.STATX_DIOALIGN != 0 {
			d.info.DioMemAlign = int(sx.Dio_mem_align)
			d.info.DioOffsetAlign = int(sx.Dio_offset_align)
		}
		// The block layer rejects direct I/O that is not in whole
		// logical blocks whatever statx says.
		l.OffsetAlign = max(d.info.DioOffsetAlign, int(lbs))
		l.MemAlign = d.info.DioMemAlign
		if l.MemAlign == 0 {
			l.MemAlign = int(lbs)
		}
		// The buffer address only needs the DMA alignment, which never
		// exceeds a page; the contract caps MemAlign at 4096.
		l.MemAlign = min(l.MemAlign, maxMemAlign)
	}
	if !d.readOnly {
		// BLKZEROOUT always works: the kernel uses the device's
		// write-zeroes command when it has one and otherwise writes
		// zero pages itself, so it never costs more than sending zeroes
		// from user memory. WriteZeroes takes any length and splits it
		// into ioctlChunk pieces.
		l.MaxWriteZeroes = ioctlChunk
		if q.discardMaxBytes > 0 {
			l.MaxDiscard = min(q.discardMaxBytes, ioctlChunk)
		}
	}
	d.limits = l
	return nil
}

// ioctlGetUint64 performs an ioctl that stores a uint64 through its
// argument.
func ioctlGetUint64(fd int, req uint) (uint64, error) {
	var v uint64
	if err := ioctlPtr(fd, req, unsafe.Pointer(&v)); err != nil {
		return 0, err
	}
	return v, nil
}

// ioctlPtr performs ioctl(fd, req, arg), retried on EINTR.
func ioctlPtr(fd int, req uint, arg unsafe.Pointer) error {
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return errno
	}
}

// String returns the path the device was opened by.
func (d *Device) String() string { return d.path }

// Identity implements device.Identifier: "blk:<major>:<minor>", equal for
// every open of the same block device whatever path names it. A partition
// and its whole disk have different identities although they overlap; see
// Placement.
func (d *Device) Identity() string { return fmt.Sprintf("blk:%d:%d", d.major, d.minor) }

// Placement implements device.Placer, so that overlap between aliases of
// one store can be detected: a partition is its disk's identity and its
// start offset on the disk (sysfs start); a loop device, or a partition of
// one, is its backing file's device.FileIdentity and the loop's offset
// (plus the partition's start), the same store as the file opened with
// device.OpenFile by any name; a loop over a block device is that device.
// A whole disk, or a partition whose sysfs entry cannot be read, is itself
// at 0. Placement is fixed when the device is opened.
func (d *Device) Placement() (string, int64) { return d.store, d.start }

// Size implements device.Device.
func (d *Device) Size() int64 { return d.size }

// Limits implements device.Limiter. LogicalBlockSize is BLKSSZGET. With
// Options.Direct, OffsetAlign and MemAlign come from statx STATX_DIOALIGN,
// or are the logical block size when the kernel does not report them;
// buffered devices have neither constraint. MaxTransfer is zero
// (unlimited): the kernel splits a long request at the queue's
// max_sectors_kb (Info().MaxSectorsBytes) and issues the pieces in
// parallel, which is faster than splitting it into sequential calls here. MaxWriteZeroes is always
// nonzero on a writable device (BLKZEROOUT falls back to writing zeroes in
// the kernel); MaxDiscard is zero when the device cannot discard. Zoned is
// queue/zoned. For a partition the queue limits are those of its disk.
func (d *Device) Limits() device.Limits { return d.limits }

// Info returns what the kernel reports about the device.
func (d *Device) Info() Info { return d.info }

// checkWrite validates a write-like request of length bytes at off: the
// device must be open and writable, and the range inside it and aligned.
// It returns an *device.IOError for op, or nil. Called with d.mu held.
func (d *Device) checkWrite(op device.Op, off, length int64) error {
	if d.mu.closed {
		return d.ioError(op, off, length, device.ErrClosed)
	}
	if d.readOnly {
		return d.ioError(op, off, length, device.ErrReadOnly)
	}
	if err := device.CheckRange(off, length, d.size, d.limits.OffsetAlign); err != nil {
		return d.ioError(op, off, length, err)
	}
	return nil
}

func (d *Device) ioError(op device.Op, off, length int64, err error) error {
	return &device.IOError{Op: op, Dev: d.path, Off: off, Len: length, Err: err}
}

// checkAlign returns an error wrapping device.ErrAlignment when off,
// len(p) or p's address break OffsetAlign or MemAlign.
func (d *Device) checkAlign(p []byte, off int64) error {
	if a := int64(d.limits.OffsetAlign); a > 1 && (off%a != 0 || int64(len(p))%a != 0) {
		return fmt.Errorf("%w: [%d, +%d) is not a multiple of %d bytes", device.ErrAlignment, off, len(p), a)
	}
	if len(p) == 0 || d.limits.MemAlign <= 1 {
		return nil
	}
	if addr := uintptr(unsafe.Pointer(unsafe.SliceData(p))); addr%uintptr(d.limits.MemAlign) != 0 {
		return fmt.Errorf("%w: buffer address %#x is not a multiple of %d bytes", device.ErrAlignment, addr, d.limits.MemAlign)
	}
	return nil
}

// ReadAt implements device.Device with pread(2), repeated until p is full.
// A read that starts at or after Size returns 0, io.EOF; one that crosses
// Size returns the bytes before Size and io.EOF. A negative off fails with
// an error wrapping device.ErrOutOfRange. With Options.Direct, off, len(p)
// and the address of p must respect Limits().OffsetAlign and MemAlign, or
// the call fails with device.ErrAlignment before any I/O. Safe for
// concurrent use.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.mu.closed {
		return 0, d.ioError(device.OpRead, off, int64(len(p)), device.ErrClosed)
	}
	if off < 0 {
		return 0, d.ioError(device.OpRead, off, int64(len(p)), fmt.Errorf("%w: negative offset", device.ErrOutOfRange))
	}
	if d.direct {
		if err := d.checkAlign(p, off); err != nil {
			return 0, d.ioError(device.OpRead, off, int64(len(p)), err)
		}
	}
	if off >= d.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > d.size-off {
		// Size is a multiple of the logical block size, so the shorter
		// read stays aligned.
		p, eof = p[:d.size-off], io.EOF
	}
	for done := 0; done < len(p); {
		n, err := unix.Pread(d.mu.fd, p[done:], off+int64(done))
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return done, d.ioError(device.OpRead, off+int64(done), int64(len(p)-done), err)
		case n == 0:
			// The device shrank under us.
			return done, d.ioError(device.OpRead, off+int64(done), int64(len(p)-done), io.ErrUnexpectedEOF)
		}
		done += n
	}
	return len(p), eof
}

// WriteAt implements device.Device with pwrite(2), repeated until p is
// written. A write that would cross Size, or a negative off, fails with an
// error wrapping device.ErrOutOfRange and writes nothing; on a read-only
// device it fails with device.ErrReadOnly. With Options.Direct, off, len(p)
// and the address of p must respect Limits().OffsetAlign and MemAlign, or
// the call fails with device.ErrAlignment before any I/O. Without Direct
// the data may sit in the page cache until Flush. Safe for concurrent use.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := d.checkWrite(device.OpWrite, off, int64(len(p))); err != nil {
		return 0, err
	}
	if err := d.checkAlign(p, off); err != nil {
		return 0, d.ioError(device.OpWrite, off, int64(len(p)), err)
	}
	if err := d.pwriteAll(device.OpWrite, p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// pwriteAll writes p at off, repeating pwrite(2) on short writes and EINTR,
// and reports a failure as op. The caller holds d.mu shared and has checked
// the range.
func (d *Device) pwriteAll(op device.Op, p []byte, off int64) error {
	for done := 0; done < len(p); {
		n, err := unix.Pwrite(d.mu.fd, p[done:], off+int64(done))
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return d.ioError(op, off+int64(done), int64(len(p)-done), err)
		case n == 0:
			return d.ioError(op, off+int64(done), int64(len(p)-done), io.ErrShortWrite)
		}
		done += n
	}
	return nil
}

// WriteZeroes implements device.WriteZeroer with the BLKZEROOUT ioctl,
// issued in pieces of at most 1 GiB. The kernel uses the device's
// write-zeroes command, without unmapping, when it has one and otherwise
// writes zero pages itself; either way no data crosses from user memory.
// The range must lie inside the device (else device.ErrOutOfRange) and,
// with Options.Direct, respect Limits().OffsetAlign (else
// device.ErrAlignment). Without Direct, parts of the range that do not fill
// a logical block are zeroed with pwrite(2). A read-only device fails with
// device.ErrReadOnly. When a piece fails, the pieces before it are zeroed
// and the error names the failed piece. Safe for concurrent use; Close
// waits for a call in progress.
func (d *Device) WriteZeroes(off, length int64) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := d.checkWrite(device.OpWriteZeroes, off, length); err != nil {
		return err
	}
	lbs := int64(d.limits.LogicalBlockSize)
	start := (off + lbs - 1) / lbs * lbs
	end := (off + length) / lbs * lbs
	if start >= end {
		// No whole logical block inside: only a partial block.
		return d.writeZeroBytes(off, length)
	}
	// The ioctl first: if the kernel refuses it outright nothing has
	// changed, as the ErrNotSupported contract demands.
	if err := d.rangeIoctl(device.OpWriteZeroes, unix.BLKZEROOUT, start, end-start); err != nil {
		return err
	}
	if err := d.writeZeroBytes(off, start-off); err != nil {
		return err
	}
	return d.writeZeroBytes(end, off+length-end)
}

// writeZeroBytes writes length (less than a logical block) zero bytes at
// off with pwrite. It only happens on buffered devices, which have no
// alignment constraints.
func (d *Device) writeZeroBytes(off, length int64) error {
	if length == 0 {
		return nil
	}
	return d.pwriteAll(device.OpWriteZeroes, make([]byte, length), off)
}

// Discard implements device.Discarder with the BLKDISCARD ioctl, issued in
// pieces of at most 1 GiB. The range must lie inside the device (else
// device.ErrOutOfRange) and, with Options.Direct, respect
// Limits().OffsetAlign (else device.ErrAlignment); it is narrowed to the
// whole logical blocks it contains, as only those can be discarded. The
// contents of the range are unspecified afterwards (many devices, loop
// devices among them, read zeroes). It fails with device.ErrNotSupported
// when the device cannot discard and with device.ErrReadOnly on a
// read-only device. Safe for concurrent use; Close waits for a call in
// progress.
func (d *Device) Discard(off, length int64) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := d.checkWrite(device.OpDiscard, off, length); err != nil {
		return err
	}
	lbs := int64(d.limits.LogicalBlockSize)
	start := (off + lbs - 1) / lbs * lbs
	end := (off + length) / lbs * lbs
	if start >= end {
		return nil
	}
	return d.rangeIoctl(device.OpDiscard, unix.BLKDISCARD, start, end-start)
}

// rangeIoctl issues BLKZEROOUT or BLKDISCARD on [off, off+length) in
// pieces of ioctlChunk bytes. The caller holds d.mu shared; off and length
// are multiples of the logical block size.
func (d *Device) rangeIoctl(op device.Op, req uint, off, length int64) error {
	for done := int64(0); done < length; {
		n := min(length-done, ioctlChunk)
		r := [2]uint64{uint64(off + done), uint64(n)}
		if err := ioctlPtr(d.mu.fd, req, unsafe.Pointer(&r)); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) {
				err = fmt.Errorf("%w: %w", device.ErrNotSupported, err)
			}
			return d.ioError(op, off+done, n, err)
		}
		done += n
	}
	return nil
}

// Flush implements device.Flusher with fdatasync(2): the page cache's
// dirty pages of the device are written and the device's volatile write
// cache is flushed. Safe for concurrent use.
func (d *Device) Flush() error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.mu.closed {
		return d.ioError(device.OpFlush, 0, 0, device.ErrClosed)
	}
	for {
		err := unix.Fdatasync(d.mu.fd)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return d.ioError(device.OpFlush, 0, 0, err)
		}
		return nil
	}
}

// Close implements io.Closer. It waits for I/O calls in progress, then
// closes the file descriptor, which also releases an exclusive claim. It
// does not flush: call Flush first when the writes must be durable. A
// second Close, and any later call, fails with an error wrapping
// device.ErrClosed.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.closed {
		return fmt.Errorf("close %s: %w", d.path, device.ErrClosed)
	}
	d.mu.closed = true
	if d.ring != nil {
		// Waits for the requests in flight, before their descriptor
		// goes.
		if err := d.ring.Close(); err != nil {
			unix.Close(d.mu.fd)
			return fmt.Errorf("close %s: %w", d.path, err)
		}
	}
	if err := unix.Close(d.mu.fd); err != nil {
		return fmt.Errorf("close %s: %w", d.path, err)
	}
	return nil
}
