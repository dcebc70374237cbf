//go:build linux

package blockdev

import "errors"

// Errors returned by Open and InUse, wrapped inside a *device.IOError with
// Op device.OpOpen (Open) or returned wrapped with %w (InUse,
// IsBlockDevice). Test them with errors.Is.
var (
	// ErrNotBlockDevice is returned when the path names something other
	// than a block device: a regular file, a directory, a character
	// device, a FIFO. Regular files are opened with device.OpenFile
	// instead.
	ErrNotBlockDevice = errors.New("blockdev: not a block device")

	// ErrBusy is returned by Open with Options.Exclusive when the kernel
	// refuses the exclusive claim (EBUSY): the device or one of its
	// partitions is mounted, is part of a device-mapper, LVM, md or bcache
	// stack, is active swap, or is held open with O_EXCL by another
	// process. Writing to such a device would corrupt whoever uses it.
	// InUse tells which of these applies.
	ErrBusy = errors.New("blockdev: device is in use (mounted, held by device-mapper/LVM/md, active swap, or opened exclusively by another process)")

	// ErrDirectNotSupported is returned by Open with Options.Direct when
	// the kernel refuses O_DIRECT on the device (EINVAL at open). Open
	// never falls back to buffered I/O by itself; the caller decides.
	ErrDirectNotSupported = errors.New("blockdev: device refuses O_DIRECT")
)
