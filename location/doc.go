// Package location opens what a user names on a command line: a path to a
// regular file or a block device, or an NBD URL (nbd://, nbds://,
// nbd+unix://, nbds+unix://), with the checks and refusals of the kcopyd
// command, so that a Go program opening "/dev/loop3" or
// "nbd+unix:///disk?socket=/run/nbd.sock" gets exactly the device, and the
// error, that kcopyd would.
//
//	l, err := location.Open(ctx, "nbd+unix:///disk?socket=/run/nbd.sock", &location.Options{Write: true})
//	if err != nil {
//		return err // names the location and says why, e.g. a read-only export
//	}
//	defer l.Close()
//	// l.Dev is a device.Device for kcopyd.Region{Dev: l.Dev, ...}
//
// This is the one package besides the command that imports every back end
// (device.File, blockdev, nbd); the engine and the back ends stay unaware
// of one another.
//
// # Inspect, then open
//
// Inspect classifies a location from stat alone, without opening it:
// Kind (File, Block or URL), Exists, the size of a file, and Key, the
// identity of the storage ("file:DEV:INO", "blk:MAJ:MIN", or
// "new:DEV:INO/NAME" for a file still to be created). A caller can refuse a
// destination given twice under two names before anything is opened.
// Directories, FIFOs, sockets, character devices and dangling symbolic
// links are refused there. Location.Open then opens an existing location,
// Location.Create makes a missing file (sparse, of a given size) and
// Location.Grow extends a short one; Location.Undo reverts either for a
// caller that stops before its first write. Open is Inspect and
// Location.Open in one call.
//
// Between the stat and the open the path may be changed by someone else
// (a symbolic link swapped, a file renamed over it). Open and Grow compare
// the identity of the opened descriptor with Key and refuse a location
// that changed, so the checks made on Key hold for what is written.
//
// # Options
//
// Options say whether to write, whether to use O_DIRECT (never falling
// back to buffered I/O), whether to write to a block device that is in use
// (Force; by default a block device opened for writing takes the kernel's
// exclusive claim and a mounted or otherwise used device is refused), how
// to zero files (KeepAllocation), and how to reach NBD servers (an
// nbd.Config: connections, TLS files, request timeout, plus a connect
// timeout). Files opened for writing get WriteBehind; DropBehind keeps
// reads from filling the page cache. The zero Options open read-only with
// the defaults.
//
// # Identity and aliasing
//
// Identity and Placement tell whether two locations are one storage under
// two names: a file by its path, a symbolic or hard link, /proc/self/fd/N
// or a bind mount has one identity, and a loop device or a partition lies
// in its backing file or disk at an offset (device.PlacementOf).
// CheckAliases uses them to refuse a job whose destination ranges overlap
// the source's, or each other's, in the underlying store; FirstOverlap and
// FirstSelfOverlap find overlapping ranges in O(n log n).
//
// # Errors
//
// Every error names the location and says what to do. The ones a caller
// may want to act on wrap a sentinel for errors.Is: blockdev.ErrBusy (in
// use), blockdev.ErrDirectNotSupported or device.ErrNotSupported (O_DIRECT
// refused), fs.ErrNotExist, ErrReadOnlyExport, ErrConnectTimeout,
// ErrUnknownScheme, nbd.ErrUnknownExport. Advice that names an option
// ("--force overrides") uses Options.Names, so a command can name its
// flags and a Go program its fields.
package location
