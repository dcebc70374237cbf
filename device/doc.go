// Package device defines what kcopyd copies between: a fixed-size store of
// bytes that can be read and written at any offset, from several goroutines
// at once.
//
// A copy job names a source and up to eight destinations as ranges of
// devices. The engine reads a chunk of the source, writes it to every
// destination in parallel and moves on. It needs little from a device:
// positioned reads and writes, and the size. Everything else a real store
// can do (zero a range without sending zeroes, discard, flush a cache, say
// where the data is) is an optional capability the engine finds by type
// assertion and does without when it is missing, the way io.Copy looks for
// io.WriterTo.
//
//	src := device.NewMem(1 << 20)
//	dst, err := device.OpenFile("disk.img", device.FileOptions{Direct: true})
//
// # The contract
//
// Device is io.ReaderAt, io.WriterAt and io.Closer plus Size, and keeps
// their contracts: calls may run in parallel, p is not retained, and a
// short transfer always comes with an error. Offsets and lengths are bytes.
// Reads at or after the end return io.EOF; a read crossing the end returns
// what is there and io.EOF. Writes never grow a device: one that would
// cross the end fails with ErrOutOfRange and writes nothing. A device with
// alignment constraints rejects a request that breaks them with
// ErrAlignment before doing any I/O.
//
// # Optional capabilities
//
// Limiter reports alignments, transfer limits, native zeroing and discard
// sizes, and the zone model; LimitsOf returns the zero Limits (no
// constraints, no native zeroing) for devices without it. WriteZeroer
// zeroes a range natively, Discarder trims it, Flusher makes completed
// writes durable, Extenter tells data from holes so that sparse copies stay
// sparse, and Identifier tells whether two handles are the same storage,
// so that overlapping copies can be refused; RangeCopier copies a range
// from another device inside the kernel (reflink, copy_file_range), with
// ErrNotSupported telling the caller to copy through memory instead; Placer
// extends Identifier to a device that is a window onto a larger store, such
// as a partition of a disk or a loop device over a file (whose store is the
// file's FileIdentity, so that the loop device and the file by any name
// compare equal). Wrapper lets IdentityOf and PlacementOf look through
// devices that wrap others.
//
// # Errors
//
// Failures of the underlying store are *IOError values naming the
// operation, the device and the byte range, and wrapping the cause, the
// way *fs.PathError does for files. Requests that are wrong rather than
// unlucky wrap one of the sentinels: ErrOutOfRange, ErrAlignment,
// ErrReadOnly, ErrClosed, and ErrNotSupported for an optional operation the
// device turns out not to support at run time. Test them with errors.Is.
// CheckRange gives every back end the same range and alignment checks.
//
// # Back ends
//
// This package has two. Mem (NewMem, NewMemFrom) keeps a sparse device in
// memory, for tests and examples. File (OpenFile, CreateFile) is a regular
// file, optionally opened with O_DIRECT; it zeroes and discards by punching
// holes and reports holes with SEEK_DATA and SEEK_HOLE. Other back ends
// live in subpackages: blockdev opens Linux block devices, nbd connects to
// an NBD server, zoned emulates a zoned device over any other, and faultdev
// wraps any device to inject failures and latency. devicetest holds the
// conformance suite every back end passes, and wrappers that make a device
// awkward on purpose. Package location opens a file, block device or NBD
// URL named by a string, as the kcopyd command does.
//
// # Buffers
//
// AlignedBuf allocates a buffer whose address meets Limits.MemAlign (for
// O_DIRECT); it is the one aligned allocator of the module. FirstDiff finds
// the first differing byte of two buffers, -1 when they are equal, the
// convention of kcopyd.JobError.FirstDiff.
package device
