//go:build linux

package device

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/internal/uring"
)

// maxFileExtents bounds the number of extents one Extents call returns on
// a File; the caller asks again from where the list ended.
const maxFileExtents = 4096

// FileOptions configures OpenFile and CreateFile. The zero value opens a
// file for reading and writing through the page cache.
type FileOptions struct {
	// ReadOnly opens the file read-only. Writes, WriteZeroes and Discard
	// then fail with an error wrapping ErrReadOnly. Default false.
	ReadOnly bool

	// Direct opens the file with O_DIRECT, bypassing the page cache.
	// Requests must then respect the alignments in Limits, which come
	// from statx(STATX_DIOALIGN) or, when the filesystem reports
	// nothing, from its block size. Hazard: callers must allocate aligned
	// buffers, and a filesystem that refuses O_DIRECT makes the open fail
	// with an error wrapping ErrNotSupported. Default false.
	Direct bool

	// WriteBehind, when positive and Direct is not set, makes every
	// buffered WriteAt start the writeback of the range it wrote
	// (sync_file_range SYNC_FILE_RANGE_WRITE), and then wait for the
	// writeback of the same-sized range WriteBehind bytes before it and
	// drop those pages from the page cache (POSIX_FADV_DONTNEED). A large,
	// roughly ascending copy then overlaps its writeback with the copy,
	// leaves little dirty data for the final Flush, and does not push the
	// rest of the page cache out. Writeback errors are not returned by
	// WriteAt: Flush reports them. Writes shorter than WriteBehind/16
	// are left to the page cache: small scattered writes (many regions
	// of 64 KiB) gain nothing from early writeback, which splits into
	// small I/Os what the final flush would merge (20 % of the CPU of a
	// copy of 9,994 random 64 KiB regions went to it). Hazard: each
	// WriteAt may block for the disk (that is the point: it bounds the
	// dirty data to about WriteBehind bytes per writer). Default 0: off.
	WriteBehind int64

	// KeepAllocation makes WriteZeroes zero ranges in place
	// (FALLOC_FL_ZERO_RANGE), keeping the file's blocks allocated, before
	// it tries punching a hole; by default it punches holes first, so
	// zeroed ranges become holes. Zeroing in place is what a wipe wants
	// (fallocate --zero-range): it frees no blocks, so it triggers no
	// online discard (the performance issue measured 0.017 s against
	// 0.32 s for a 2 GiB file on ext4 mounted with discard). Default false.
	KeepAllocation bool

	// IOUring, with Direct, lets the engine start reads and writes of the
	// file through an io_uring of the File's own (the File implements
	// Starter), instead of a goroutine blocked in pread or pwrite per
	// request. Where the kernel refuses io_uring (io_uring_disabled, a
	// seccomp filter) the File works without it. Ignored without Direct.
	// Default false.
	IOUring bool

	// DropBehind, without Direct, makes reads leave no page in the page
	// cache that was not there before (preadv2 with RWF_DONTCACHE, Linux
	// 6.14 and later, on file systems that support it: ext4, XFS, Btrfs):
	// a copy through the page cache reads the source without pushing the
	// rest of the cache out, and pages cached before it stay cached.
	// Where the kernel or file system refuses RWF_DONTCACHE, reads go
	// through the page cache as usual (the refusal is remembered). The
	// kernel drops pages on a best-effort basis: readahead past the last
	// byte read, and pages another reader holds at that moment (large
	// folios span requests read in parallel), stay cached. Measured
	// here, 1 GiB copied in 1 MiB chunks, 8 in flight: 3 to 12 MiB of the
	// source stayed cached, against all of it without DropBehind.
	// Ignored under Direct. Default false.
	DropBehind bool
}

// File is a device backed by a regular file. I/O is positioned
// (pread/pwrite), so all methods are safe for concurrent use. The size is
// the file's size when it was opened; File never grows or shrinks the file.
//
// File implements Device, Limiter, WriteZeroer, Discarder, Flusher,
// Extenter, Identifier, RangeCopier and fmt.Stringer.
//
// Under FileOptions.Direct, off, len(p) and the address of p must follow
// Limits().OffsetAlign and MemAlign, with one exception: a request whose
// aligned offset is followed by an unaligned length that ends exactly at
// Size is allowed, so that files whose size is not a multiple of the
// alignment can be read and written whole. Its unaligned tail goes through
// the page cache, the way dd does for a short last block.
type File struct {
	path     string
	size     int64
	identity string
	readOnly bool
	limits   Limits

	f    *os.File // the file; opened with O_DIRECT under Direct
	tail *os.File // non-nil under Direct when size is unaligned: the file without O_DIRECT

	// zeroMode is the step of zeroOrder WriteZeroes uses next. It only
	// moves forward, when a mode turns out to be unsupported.
	zeroMode  atomic.Int32
	keepAlloc bool // FileOptions.KeepAllocation
	// punchUnsupported is true once the filesystem refused FALLOC_FL_PUNCH_HOLE;
	// Discard then fails with ErrNotSupported at once.
	punchUnsupported atomic.Bool
	closed           atomic.Bool

	// bufferedWrites is true without Direct. Buffered writes to one file
	// take the inode's lock exclusively in the kernel (ext4, xfs), so
	// parallel writers gain nothing; on few cores their optimistic
	// spinning on that lock cost up to four times the CPU of the copy
	// itself (measured: 4.6 s of system time for 1 GiB with 8 writers,
	// 1.0 s serialized). wmu serializes them here, where a waiting
	// goroutine parks instead of spinning. Reads, and O_DIRECT writes,
	// which ext4 runs in parallel, are not serialized.
	bufferedWrites bool
	wmu            sync.Mutex

	// writeBehind is FileOptions.WriteBehind for buffered writes, else 0.
	writeBehind int64
	// dropBehind is FileOptions.DropBehind for buffered reads, until the
	// kernel refuses RWF_DONTCACHE.
	dropBehind atomic.Bool

	// fsDev and blksize are the file's st_dev and st_blksize, for
	// CopyRange: a reflink needs both files on one filesystem and
	// block-aligned ranges.
	fsDev   uint64
	blksize int64
	// ring, under FileOptions.IOUring, starts requests on the O_DIRECT
	// descriptor dfd (Starter); nil without.
	ring *uring.Ring
	dfd  int

	// copyModes maps the st_dev of a CopyRange source to the *atomic.Int32
	// copy mode (copyClone, copyCFR or copyNone) to try first for it.
	copyModes sync.Map
}

const (
	zeroPunch int32 = iota // FALLOC_FL_PUNCH_HOLE: leaves holes
	zeroRange              // FALLOC_FL_ZERO_RANGE: zeroes allocated blocks
	zeroNone               // neither is supported
)

var (
	_ Device       = (*File)(nil)
	_ Limiter      = (*File)(nil)
	_ WriteZeroer  = (*File)(nil)
	_ Discarder    = (*File)(nil)
	_ Flusher      = (*File)(nil)
	_ Extenter     = (*File)(nil)
	_ Identifier   = (*File)(nil)
	_ RangeCopier  = (*File)(nil)
	_ Starter      = (*File)(nil)
	_ fmt.Stringer = (*File)(nil)
)

// OpenFile opens the existing regular file at path as a device of the
// file's current size. Errors are *IOError with Op OpOpen; they wrap
// fs.ErrNotExist when the file is missing, and ErrNotSupported when
// o.Direct is set and the filesystem refuses O_DIRECT. Paths that are not
// regular files (block devices, directories, FIFOs, character devices) are
// refused with ErrNotSupported: open block devices with package blockdev.
//
// The type is checked on the opened descriptor (fstat), not on the path,
// and the open does not block on a FIFO, so a path swapped for something
// else after the caller examined it is refused, never waited on. Identity
// is the opened file's: a caller that checked the path first compares it
// with what it saw.
func OpenFile(path string, o FileOptions) (*File, error) {
	flag := unix.O_RDWR
	if o.ReadOnly {
		flag = unix.O_RDONLY
	}
	fd, err := openRegular(path, flag)
	if err != nil {
		return nil, openError(path, err)
	}
	return newFileOwned(path, fd, o)
}

// NewFile makes a device of f, an open regular file, of its current size,
// as OpenFile does for a path; its String is f.Name(). The File owns f from
// then on, and NewFile closes f when it fails. f must have been opened
// without O_DIRECT and with write access unless o.ReadOnly; with o.Direct a
// second descriptor with O_DIRECT is opened on the same file.
func NewFile(f *os.File, o FileOptions) (*File, error) {
	return newFileOwned(f.Name(), f, o)
}

// newFileOwned is newFile that closes fd when it fails.
func newFileOwned(path string, fd *os.File, o FileOptions) (*File, error) {
	f, err := newFile(path, fd, o)
	if err != nil {
		fd.Close()
		return nil, err
	}
	return f, nil
}

// openRegular opens path with flag, without blocking on a FIFO and without
// trusting the path: the descriptor is checked with fstat and refused,
// wrapping ErrNotSupported, unless it is a regular file.
func openRegular(path string, flag int) (*os.File, error) {
	var fd int
	var err error
	for {
		fd, err = unix.Open(path, flag|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err == unix.EISDIR {
		return nil, fmt.Errorf("%w: not a regular file but a directory", ErrNotSupported)
	}
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: not a regular file but a %s", ErrNotSupported, FileKind(st.Mode))
	}
	// O_NONBLOCK has no effect on a regular file; clear it all the same,
	// so that the descriptor is an ordinary one.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// FileKind names the file type in the S_IFMT bits of mode ("regular
// file", "directory", "FIFO", ...), for messages.
func FileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFLNK:
		return "symbolic link"
	case unix.S_IFBLK:
		return "block device"
	}
	return fmt.Sprintf("file of mode %#o", mode&unix.S_IFMT)
}

// CreateFile creates a regular file of size bytes at path and opens it as
// OpenFile does. The file is sparse: it holds no data until written. It
// fails with an error wrapping fs.ErrExist when path exists already (a
// symbolic link included, dangling or not); a failure after creating the
// file removes it again. The File is made from the descriptor that created
// the file, never by opening path again.
func CreateFile(path string, size int64, o FileOptions) (_ *File, err error) {
	if size < 0 {
		return nil, openError(path, fmt.Errorf("%w: negative size %d", ErrOutOfRange, size))
	}
	c, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o666)
	if err != nil {
		return nil, openError(path, err)
	}
	defer func() {
		if err != nil {
			if rerr := os.Remove(path); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
	}()
	if err := c.Truncate(size); err != nil {
		c.Close()
		return nil, openError(path, err)
	}
	return newFileOwned(path, c, o)
}

func openError(path string, err error) error {
	return &IOError{Op: OpOpen, Dev: path, Err: unwrapPathError(err)}
}

// unwrapPathError strips an *fs.PathError, whose path and operation an
// IOError repeats.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// newFile finishes opening fd, which was opened without O_DIRECT.
func newFile(path string, fd *os.File, o FileOptions) (*File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(fd.Fd()), &st); err != nil {
		return nil, openError(path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, openError(path, fmt.Errorf("%w: not a regular file but a %s", ErrNotSupported, FileKind(st.Mode)))
	}
	f := &File{
		path:     path,
		size:     st.Size,
		identity: FileIdentity(st.Dev, st.Ino),
		fsDev:    st.Dev,
		blksize:  max(st.Blksize, 512),
		readOnly: o.ReadOnly,
		f:        fd,
		limits:   Limits{LogicalBlockSize: 1},
	}
	f.keepAlloc = o.KeepAllocation
	if !o.ReadOnly {
		f.limits.MaxWriteZeroes = max(f.size, 1)
		f.limits.MaxDiscard = max(f.size, 1)
	}
	if !o.Direct {
		f.bufferedWrites = true
		f.writeBehind = max(o.WriteBehind, 0)
		f.dropBehind.Store(o.DropBehind)
		return f, nil
	}
	memAlign, offAlign, err := dioAlign(fd, st.Blksize)
	if err != nil {
		return nil, openError(path, err)
	}
	f.limits.LogicalBlockSize = offAlign
	f.limits.OffsetAlign = offAlign
	f.limits.MemAlign = memAlign
	flag := unix.O_RDWR
	if o.ReadOnly {
		flag = unix.O_RDONLY
	}
	dfd, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd.Fd()), flag|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		err = unwrapPathError(err)
		if errors.Is(err, unix.EINVAL) {
			err = fmt.Errorf("filesystem refuses O_DIRECT (%w): %w", ErrNotSupported, err)
		}
		return nil, openError(path, err)
	}
	f.f = dfd
	if f.size%int64(offAlign) != 0 {
		f.tail = fd
	} else {
		fd.Close()
	}
	if o.IOUring {
		// Without a ring the File works the ordinary way: the option is
		// a speed-up, not a promise.
		if r, err := uring.New(64); err == nil {
			f.ring, f.dfd = r, int(dfd.Fd())
		}
	}
	return f, nil
}

// StartReadAt implements Starter for an aligned read inside Size, under
// FileOptions.IOUring; otherwise it returns false.
func (f *File) StartReadAt(p []byte, off int64, c Completer) bool {
	return f.start(uring.Read, p, off, c)
}

// StartWriteAt implements Starter for an aligned write inside Size to a
// writable File, under FileOptions.IOUring; otherwise it returns false.
func (f *File) StartWriteAt(p []byte, off int64, c Completer) bool {
	return !f.readOnly && f.start(uring.Write, p, off, c)
}

func (f *File) start(op uring.Op, p []byte, off int64, c Completer) bool {
	n := int64(len(p))
	if f.ring == nil || f.closed.Load() || off < 0 || n > f.size-off {
		return false
	}
	if head, _ := f.split(off, n); head != n || f.checkAlign(off, n, p) != nil {
		return false
	}
	return f.ring.Start(op, f.dfd, p, off, c)
}

// dioAlign returns the memory and offset alignment of direct I/O on fd.
func dioAlign(fd *os.File, blksize int64) (memAlign, offAlign int, err error) {
	var stx unix.Statx_t
	err = unix.Statx(int(fd.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &stx)
	switch {
	case err == nil && stx.Mask&unix.STATX_DIOALIGN != 0:
		if stx.Dio_offset_align == 0 || stx.Dio_mem_align == 0 {
			return 0, 0, fmt.Errorf("%w: statx reports no direct I/O on this file", ErrNotSupported)
		}
		memAlign, offAlign = int(stx.Dio_mem_align), int(stx.Dio_offset_align)
	case err == nil || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL):
		// The kernel or filesystem does not report the alignment: use
		// the filesystem's block size, which direct I/O always
		// accepts.
		if blksize <= 0 {
			return 0, 0, fmt.Errorf("%w: no direct I/O alignment known (block size %d)", ErrNotSupported, blksize)
		}
		memAlign, offAlign = int(min(blksize, 4096)), int(blksize)
	default:
		return 0, 0, fmt.Errorf("statx: %w", err)
	}
	if memAlign > 4096 {
		return 0, 0, fmt.Errorf("%w: direct I/O memory alignment %d exceeds 4096", ErrNotSupported, memAlign)
	}
	return memAlign, offAlign, nil
}

// String returns the file's path.
func (f *File) String() string { return f.path }

// Identity implements Identifier: "file:<st_dev>:<st_ino>", equal for two
// opens of one file, hard links included.
func (f *File) Identity() string { return f.identity }

// Size implements Device. It is the file's size at open.
func (f *File) Size() int64 { return f.size }

// Limits implements Limiter. Without Direct there are no alignment
// constraints. MaxWriteZeroes and MaxDiscard are the file size (zero on a
// read-only File); whether the filesystem really supports them is only
// known when they are first used.
func (f *File) Limits() Limits { return f.limits }

func (f *File) ioError(op Op, off, length int64, err error) error {
	err = unwrapPathError(err)
	if errors.Is(err, os.ErrClosed) {
		err = ErrClosed
	}
	return &IOError{Op: op, Dev: f.path, Off: off, Len: length, Err: err}
}

// checkAlign enforces the Direct alignments on a request of n bytes at off
// for buffer p (nil for requests without a buffer).
func (f *File) checkAlign(off, n int64, p []byte) error {
	if a := int64(f.limits.OffsetAlign); a > 1 {
		if off%a != 0 || n%a != 0 && off+n != f.size {
			return fmt.Errorf("%w: [%d, +%d) is not a multiple of %d bytes", ErrAlignment, off, n, a)
		}
	}
	if a := uintptr(f.limits.MemAlign); a > 1 && len(p) > 0 {
		if addr := uintptr(unsafe.Pointer(&p[0])); addr%a != 0 {
			return fmt.Errorf("%w: buffer address %#x is not a multiple of %d", ErrAlignment, addr, a)
		}
	}
	return nil
}

// split returns the lengths of the part of an n-byte request at off that
// goes through f.f and of the unaligned tail that goes through f.tail.
func (f *File) split(off, n int64) (head, tail int64) {
	if f.tail == nil || off+n != f.size {
		return n, 0
	}
	tail = n % int64(f.limits.OffsetAlign)
	return n - tail, tail
}

// ReadAt implements Device. A read that starts at or after Size returns 0,
// io.EOF; one that crosses Size returns the bytes before Size and io.EOF,
// even if the file has grown since it was opened. A negative off fails with
// an error wrapping ErrOutOfRange.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if f.closed.Load() {
		return 0, f.ioError(OpRead, off, int64(len(p)), ErrClosed)
	}
	if off < 0 {
		return 0, f.ioError(OpRead, off, int64(len(p)), fmt.Errorf("%w: negative offset", ErrOutOfRange))
	}
	var eof error
	if int64(len(p)) > f.size-off {
		p = p[:max(f.size-off, 0)]
		eof = io.EOF
	}
	if err := f.checkAlign(off, int64(len(p)), p); err != nil {
		return 0, f.ioError(OpRead, off, int64(len(p)), err)
	}
	if len(p) == 0 {
		return 0, eof
	}
	head, _ := f.split(off, int64(len(p)))
	n, err := f.readHead(p[:head], off)
	if err == nil && int64(n) < int64(len(p)) {
		var m int
		m, err = f.tail.ReadAt(p[head:], off+head)
		n += m
	}
	if err != nil {
		if err == io.EOF {
			// The file shrank under us: the device's size no longer
			// holds.
			err = io.ErrUnexpectedEOF
		}
		return n, f.ioError(OpRead, off, int64(len(p)), err)
	}
	return n, eof
}

// readHead reads p at off through f.f: with RWF_DONTCACHE under
// DropBehind, else as os.File.ReadAt does. Like ReadAt, it reads until p
// is full and returns io.EOF when the file ends first.
func (f *File) readHead(p []byte, off int64) (int, error) {
	if !f.dropBehind.Load() || len(p) == 0 {
		return f.f.ReadAt(p, off)
	}
	rc, err := f.f.SyscallConn()
	if err != nil {
		return f.f.ReadAt(p, off)
	}
	n := 0
	var rerr error
	cerr := rc.Control(func(fd uintptr) {
		for n < len(p) {
			m, err := unix.Preadv2(int(fd), [][]byte{p[n:]}, off+int64(n), unix.RWF_DONTCACHE)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EOPNOTSUPP || err == unix.EINVAL && n == 0:
				// No RWF_DONTCACHE here (EINVAL: a kernel that does
				// not know the flag): read the ordinary way from now on.
				f.dropBehind.Store(false)
				m, err = f.f.ReadAt(p[n:], off+int64(n))
				n += m
				rerr = err
				return
			case err != nil:
				rerr = &os.PathError{Op: "read", Path: f.f.Name(), Err: err}
				return
			case m == 0:
				rerr = io.EOF
				return
			}
			n += m
		}
	})
	if cerr != nil {
		return n, cerr
	}
	return n, rerr
}

// WriteAt implements Device. A write that would cross Size fails with an
// error wrapping ErrOutOfRange and writes nothing; on a read-only File it
// fails with ErrReadOnly.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if err := f.checkWrite(OpWrite, off, int64(len(p)), p); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := f.pwrite(p, off)
	if err != nil {
		return n, f.ioError(OpWrite, off, int64(len(p)), err)
	}
	if f.writeBehind > 0 && int64(n) >= f.writeBehind/16 {
		f.behind(off, int64(n))
	}
	return n, nil
}

// pwrite writes p at off: the aligned head through f.f, an unaligned tail
// at Size through f.tail. Buffered writes hold wmu.
func (f *File) pwrite(p []byte, off int64) (int, error) {
	if f.bufferedWrites {
		f.wmu.Lock()
		defer f.wmu.Unlock()
	}
	head, _ := f.split(off, int64(len(p)))
	n, err := f.f.WriteAt(p[:head], off)
	if err == nil && int64(n) < int64(len(p)) {
		var m int
		m, err = f.tail.WriteAt(p[head:], off+head)
		n += m
	}
	return n, err
}

// behind runs FileOptions.WriteBehind after a buffered write of n bytes at
// off: start writing them back, wait for the range WriteBehind bytes
// earlier and drop it from the page cache. Errors are left to Flush, which
// reports writeback errors through fdatasync.
func (f *File) behind(off, n int64) {
	rc, err := f.f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		_ = unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
		if old := off - f.writeBehind; old >= 0 {
			const wait = unix.SYNC_FILE_RANGE_WAIT_BEFORE | unix.SYNC_FILE_RANGE_WRITE | unix.SYNC_FILE_RANGE_WAIT_AFTER
			_ = unix.SyncFileRange(int(fd), old, n, wait)
			_ = unix.Fadvise(int(fd), old, n, unix.FADV_DONTNEED)
		}
	})
}

// checkWrite validates a write-like request and returns an *IOError when
// it must not go ahead.
func (f *File) checkWrite(op Op, off, length int64, p []byte) error {
	if f.closed.Load() {
		return f.ioError(op, off, length, ErrClosed)
	}
	if f.readOnly {
		return f.ioError(op, off, length, ErrReadOnly)
	}
	if err := CheckRange(off, length, f.size, 1); err != nil {
		return f.ioError(op, off, length, err)
	}
	if err := f.checkAlign(off, length, p); err != nil {
		return f.ioError(op, off, length, err)
	}
	return nil
}

// fallocate runs fallocate(2) on the file, keeping its size.
func (f *File) fallocate(mode uint32, off, length int64) error {
	rc, err := f.f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	err = rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Fallocate(int(fd), mode|unix.FALLOC_FL_KEEP_SIZE, off, length)
			if ferr != unix.EINTR {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return ferr
}

func isNotSupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS)
}

// WriteZeroes implements WriteZeroer. It punches a hole
// (FALLOC_FL_PUNCH_HOLE), so that zeroed ranges stay sparse, and falls
// back to FALLOC_FL_ZERO_RANGE where the filesystem cannot punch holes.
// When neither is supported it fails with an error wrapping
// ErrNotSupported, having changed nothing; later calls then fail the same
// way at once. The range must lie inside the file and, under Direct, follow
// OffsetAlign (an unaligned length ending at Size is allowed).
func (f *File) WriteZeroes(off, length int64) error {
	if err := f.checkWrite(OpWriteZeroes, off, length, nil); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	for {
		var err error
		step := f.zeroMode.Load()
		switch mode := f.zeroOrder(step); mode {
		case zeroPunch:
			err = f.fallocate(unix.FALLOC_FL_PUNCH_HOLE, off, length)
		case zeroRange:
			err = f.fallocate(unix.FALLOC_FL_ZERO_RANGE, off, length)
		default:
			return f.ioError(OpWriteZeroes, off, length, fmt.Errorf("%w: the filesystem can neither punch holes nor zero ranges", ErrNotSupported))
		}
		if err == nil {
			return nil
		}
		if !isNotSupported(err) {
			return f.ioError(OpWriteZeroes, off, length, err)
		}
		f.zeroMode.CompareAndSwap(step, step+1)
	}
}

// zeroOrder returns the fallocate mode of WriteZeroes' step: punch, then
// zero in place, by default; the other way round under KeepAllocation.
func (f *File) zeroOrder(step int32) int32 {
	switch {
	case step >= zeroNone:
		return zeroNone
	case f.keepAlloc:
		return 1 - step
	}
	return step
}

// Discard implements Discarder by punching a hole: on a File a discarded
// range reads back as zeroes. It fails with an error wrapping
// ErrNotSupported when the filesystem cannot punch holes.
func (f *File) Discard(off, length int64) error {
	if err := f.checkWrite(OpDiscard, off, length, nil); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	if f.punchUnsupported.Load() {
		return f.ioError(OpDiscard, off, length, fmt.Errorf("%w: the filesystem cannot punch holes", ErrNotSupported))
	}
	err := f.fallocate(unix.FALLOC_FL_PUNCH_HOLE, off, length)
	if isNotSupported(err) {
		f.punchUnsupported.Store(true)
		err = fmt.Errorf("%w: the filesystem cannot punch holes: %w", ErrNotSupported, err)
	}
	if err != nil {
		return f.ioError(OpDiscard, off, length, err)
	}
	return nil
}

// Flush implements Flusher with fdatasync(2). It blocks until the
// filesystem reports the data durable.
func (f *File) Flush() error {
	if f.closed.Load() {
		return f.ioError(OpFlush, 0, 0, ErrClosed)
	}
	rc, err := f.f.SyscallConn()
	if err == nil {
		var serr error
		err = rc.Control(func(fd uintptr) {
			for {
				serr = unix.Fdatasync(int(fd))
				if serr != unix.EINTR {
					return
				}
			}
		})
		if err == nil {
			err = serr
		}
	}
	if err != nil {
		return f.ioError(OpFlush, 0, 0, err)
	}
	return nil
}

// Extents implements Extenter with lseek(2) SEEK_DATA and SEEK_HOLE. Holes
// are reported with Hole and Zero set; data with neither, even when it is
// an unwritten (preallocated) extent the filesystem reports as data. A
// filesystem without SEEK_DATA reports everything as data. The range must
// lie inside the file and not be empty, else the error wraps ErrOutOfRange.
// The list holds at most 4096 extents.
func (f *File) Extents(off, length int64) ([]Extent, error) {
	if f.closed.Load() {
		return nil, f.ioError(OpExtents, off, length, ErrClosed)
	}
	if err := CheckRange(off, length, f.size, 1); err != nil {
		return nil, f.ioError(OpExtents, off, length, err)
	}
	if length == 0 {
		return nil, f.ioError(OpExtents, off, length, fmt.Errorf("%w: empty range", ErrOutOfRange))
	}
	rc, err := f.f.SyscallConn()
	if err != nil {
		return nil, f.ioError(OpExtents, off, length, err)
	}
	var list []Extent
	var serr error
	err = rc.Control(func(fd uintptr) {
		list, serr = extents(int(fd), off, off+length)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return nil, f.ioError(OpExtents, off, length, err)
	}
	return list, nil
}

// extents lists the extents of [off, end) of the file fd. lseek moves the
// file offset, which nothing else uses: all I/O is positioned.
func extents(fd int, off, end int64) ([]Extent, error) {
	var list []Extent
	add := func(e Extent) {
		if n := len(list); n > 0 && list[n-1].Hole == e.Hole {
			list[n-1].Len += e.Len
			return
		}
		list = append(list, e)
	}
	for pos := off; pos < end && len(list) < maxFileExtents; {
		data, err := seek(fd, pos, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			// No data from pos to the end of the file.
			data = end
		case errors.Is(err, unix.EINVAL) && len(list) == 0:
			// No SEEK_DATA here: everything is data.
			return []Extent{{Off: off, Len: end - off}}, nil
		case err != nil:
			return nil, fmt.Errorf("lseek SEEK_DATA %d: %w", pos, err)
		}
		if data > pos {
			next := min(data, end)
			add(Extent{Off: pos, Len: next - pos, Hole: true, Zero: true})
			pos = next
			if pos >= end {
				break
			}
		}
		hole, err := seek(fd, pos, unix.SEEK_HOLE)
		switch {
		case errors.Is(err, unix.ENXIO):
			// The file shrank under us; what is past its end reads as
			// data the device does not have. Report it as data.
			hole = end
		case err != nil:
			return nil, fmt.Errorf("lseek SEEK_HOLE %d: %w", pos, err)
		}
		if hole <= pos {
			// A hole at pos after SEEK_DATA said data: the file
			// changed under us. Call one block data and go on.
			hole = pos + 1
		}
		next := min(hole, end)
		add(Extent{Off: pos, Len: next - pos})
		pos = next
	}
	return list, nil
}

func seek(fd int, off int64, whence int) (int64, error) {
	for {
		n, err := unix.Seek(fd, off, whence)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// Close closes the file. It does not flush: call Flush first for
// durability. Operations after Close, and a second Close, fail with an
// error wrapping ErrClosed. Calls in flight finish normally.
func (f *File) Close() error {
	if f.closed.Swap(true) {
		return fmt.Errorf("close %s: %w", f.path, ErrClosed)
	}
	var err error
	if f.ring != nil {
		// Waits for the requests in flight, before their descriptor
		// goes.
		err = f.ring.Close()
	}
	err = errors.Join(err, f.f.Close())
	if f.tail != nil {
		err = errors.Join(err, f.tail.Close())
	}
	if err != nil {
		return fmt.Errorf("close %s: %w", f.path, unwrapPathError(err))
	}
	return nil
}
