//go:build linux

package device

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// The ways CopyRange copies between two files, tried in this order. The
// mode for a source filesystem only moves forward, when the kernel refuses
// one, so that a refusal is paid for once and not on every chunk.
const (
	copyClone int32 = iota // FICLONERANGE: share the blocks (reflink)
	copyCFR                // copy_file_range(2): the kernel copies
	copyNone               // neither: refuse at once
)

// maxCFR bounds one copy_file_range call; the kernel caps it near 2 GiB.
const maxCFR = 1 << 30

// CopyRange implements RangeCopier for a source that is a *File (not a
// wrapper around one). It clones the range (FICLONERANGE) when both files
// are on one filesystem that supports reflinks and srcOff, dstOff and n are
// multiples of the filesystem's block size, so that the destination shares
// the source's blocks; otherwise, or when the filesystem refuses to clone,
// it calls copy_file_range(2) until all n bytes are copied, and a short
// copy is continued, never taken for success. EXDEV, EOPNOTSUPP, ENOSYS,
// ENOTTY and EINVAL are refusals: CopyRange remembers them per source
// filesystem, moving to the next method, and returns an error wrapping
// ErrNotSupported when none is left. Overlapping ranges of one file are
// refused with ErrNotSupported too. Buffered writes to f are serialized
// with WriteAt; the data is durable after Flush.
func (f *File) CopyRange(src Device, srcOff, dstOff, n int64) (int64, error) {
	if err := f.checkWrite(OpCopyRange, dstOff, n, nil); err != nil {
		return 0, err
	}
	s, err := f.copySource(src, srcOff, dstOff, n)
	if err != nil {
		return 0, f.ioError(OpCopyRange, dstOff, n, err)
	}
	if n == 0 {
		return 0, nil
	}
	if f.bufferedWrites {
		f.wmu.Lock()
		defer f.wmu.Unlock()
	}
	mode := f.copyMode(s.fsDev)
	if mode.Load() == copyClone && s.fsDev == f.fsDev && f.cloneable(srcOff, dstOff, n) {
		err := withFDs(s, f, func(sfd, dfd int) error { return clone(sfd, dfd, srcOff, dstOff, n) })
		switch {
		case err == nil:
			return n, nil
		case !isCopyRefusal(err):
			return 0, f.ioError(OpCopyRange, dstOff, n, fmt.Errorf("FICLONERANGE: %w", err))
		}
		mode.CompareAndSwap(copyClone, copyCFR)
	}
	if mode.Load() == copyNone {
		return 0, f.ioError(OpCopyRange, dstOff, n, fmt.Errorf("%w: no copy offload from %s", ErrNotSupported, s.path))
	}
	var written int64
	err = withFDs(s, f, func(sfd, dfd int) error {
		var err error
		written, err = copyFileRange(sfd, dfd, srcOff, dstOff, n)
		return err
	})
	if err != nil {
		if isCopyRefusal(err) {
			mode.Store(copyNone)
			err = fmt.Errorf("%w: copy_file_range: %w", ErrNotSupported, err)
		}
		return written, f.ioError(OpCopyRange, dstOff+written, n-written, err)
	}
	return written, nil
}

// copySource checks the source side of a CopyRange request and returns
// the source file.
func (f *File) copySource(src Device, srcOff, dstOff, n int64) (*File, error) {
	s, ok := src.(*File)
	if !ok {
		return nil, fmt.Errorf("%w: the source %s is not a device.File", ErrNotSupported, Name(src))
	}
	if s.closed.Load() {
		return nil, fmt.Errorf("source %s: %w", s.path, ErrClosed)
	}
	if err := CheckRange(srcOff, n, s.size, 1); err != nil {
		return nil, fmt.Errorf("source %s: %w", s.path, err)
	}
	if err := s.checkAlign(srcOff, n, nil); err != nil {
		return nil, fmt.Errorf("source %s: %w", s.path, err)
	}
	if s.identity == f.identity && srcOff < dstOff+n && dstOff < srcOff+n {
		return nil, fmt.Errorf("%w: [%d, +%d) and [%d, +%d) overlap in one file", ErrNotSupported, srcOff, n, dstOff, n)
	}
	return s, nil
}

// copyMode returns the copy mode to try first for sources on the
// filesystem fsDev.
func (f *File) copyMode(fsDev uint64) *atomic.Int32 {
	if m, ok := f.copyModes.Load(fsDev); ok {
		return m.(*atomic.Int32)
	}
	m, _ := f.copyModes.LoadOrStore(fsDev, new(atomic.Int32))
	return m.(*atomic.Int32)
}

// cloneable reports whether a clone of n bytes from srcOff to dstOff is
// block-aligned on f's filesystem.
func (f *File) cloneable(srcOff, dstOff, n int64) bool {
	b := f.blksize
	return srcOff%b == 0 && dstOff%b == 0 && n%b == 0
}

// isCopyRefusal reports whether err from FICLONERANGE or copy_file_range
// means "not between these files", as opposed to an I/O failure.
func isCopyRefusal(err error) bool {
	for _, e := range []error{unix.EXDEV, unix.EOPNOTSUPP, unix.ENOSYS, unix.ENOTTY, unix.EINVAL} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// withFDs runs fn with the descriptors of s and d, which stay open until
// fn returns.
func withFDs(s, d *File, fn func(sfd, dfd int) error) error {
	src, err := s.f.SyscallConn()
	if err != nil {
		return err
	}
	dst, err := d.f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	cerr := src.Control(func(sfd uintptr) {
		err := dst.Control(func(dfd uintptr) { ferr = fn(int(sfd), int(dfd)) })
		if err != nil {
			ferr = err
		}
	})
	if cerr != nil {
		return cerr
	}
	return ferr
}

// clone shares n bytes at srcOff of sfd with dstOff of dfd (FICLONERANGE).
// The kernel clones all or nothing.
func clone(sfd, dfd int, srcOff, dstOff, n int64) error {
	arg := unix.FileCloneRange{Src_fd: int64(sfd), Src_offset: uint64(srcOff), Src_length: uint64(n), Dest_offset: uint64(dstOff)}
	for {
		err := unix.IoctlFileCloneRange(dfd, &arg)
		if err != unix.EINTR {
			return err
		}
	}
}

// copyFileRange copies n bytes at srcOff of sfd to dstOff of dfd with
// copy_file_range(2), continuing after short copies, and returns how many
// bytes it copied. A copy of 0 bytes before n means the source ended early:
// io.ErrUnexpectedEOF.
func copyFileRange(sfd, dfd int, srcOff, dstOff, n int64) (int64, error) {
	var done int64
	for done < n {
		roff, woff := srcOff+done, dstOff+done
		c, err := unix.CopyFileRange(sfd, &roff, dfd, &woff, int(min(n-done, maxCFR)), 0)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return done, err
		case c == 0:
			return done, io.ErrUnexpectedEOF
		}
		done += int64(c)
	}
	return done, nil
}
