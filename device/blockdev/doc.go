// Package blockdev opens Linux block devices (disks, partitions, loop,
// device-mapper, NBD and md devices) as a device.Device.
//
// A *Device reads and writes with pread(2) and pwrite(2), zeroes with the
// BLKZEROOUT ioctl, discards with BLKDISCARD and flushes with fdatasync(2).
// Its size, logical and physical block sizes come from the BLKGETSIZE64,
// BLKSSZGET and BLKPBSZGET ioctls, and its queue limits and zone model from
// sysfs (/sys/dev/block/MAJ:MIN/queue, or the disk's queue for a
// partition). Block devices have no allocation information, so Device does
// not implement device.Extenter.
//
//	d, err := blockdev.Open("/dev/sdb", blockdev.Options{Direct: true, Exclusive: true})
//	if errors.Is(err, blockdev.ErrBusy) {
//		// mounted or in use: blockdev.InUse says by whom
//	}
//
// # Options
//
// The zero Options open a device read-write, buffered and shared. ReadOnly
// opens it with O_RDONLY. Direct adds O_DIRECT. Exclusive adds O_EXCL.
//
// # Exclusive open
//
// On a block device O_EXCL is not about creation: it is the kernel's
// exclusive claim, the one mount, device-mapper, md and swapon take. An
// exclusive Open fails with ErrBusy while anything else holds the claim,
// and while the device is open nobody else can mount or claim it. Without
// Exclusive, Open succeeds on a mounted device and writing to it corrupts
// the file system under the kernel's feet, so tools that write should always
// ask for it. InUse tells, without keeping a claim, whether a device is
// mounted, stacked on or claimed, for error messages and dry runs.
//
// # Direct I/O and alignment
//
// With Direct, reads and writes bypass the page cache, and the kernel
// refuses (EINVAL) requests whose offset or length is not a multiple of the
// device's direct-I/O offset alignment or whose buffer is not aligned in
// memory. Device checks both before every call and fails with
// device.ErrAlignment, doing no I/O, rather than let the kernel decide:
// Limits().OffsetAlign and MemAlign come from statx(STATX_DIOALIGN), or the
// logical block size on kernels that do not report them. A 4Kn disk (4096
// byte logical blocks) therefore rejects a 512-byte aligned request. If the
// kernel refuses O_DIRECT itself, Open fails with ErrDirectNotSupported; it
// never falls back to buffered I/O silently.
//
// Without Direct there is no alignment constraint, but data goes through the
// page cache: writes are durable only after Flush, and reads may be served
// from cache.
//
// # Zeroing and discard
//
// WriteZeroes always works on a writable device: the kernel uses the
// device's write-zeroes command when it has one and otherwise writes zero
// pages itself, so Limits().MaxWriteZeroes is never zero. Large ranges are
// issued in pieces of 1 GiB. Discard returns device.ErrNotSupported on a
// device that cannot discard (Limits().MaxDiscard is zero).
//
// # Identity and placement
//
// Identity is the device number ("blk:MAJ:MIN"). Placement says where the
// device's bytes live: a partition in its disk at its start, a loop device
// (or a partition of one) in its backing file at the loop's offset
// (LOOP_GET_STATUS64's device and inode, device.FileIdentity), so that
// device.PlacementOf finds the overlap between a loop device and the file
// under it, or two loop devices over one file.
//
// # Testing
//
// Package looptest makes loop devices backed by sparse files for tests,
// and skips tests where that is impossible (not root, no losetup).
package blockdev
