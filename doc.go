// Package kcopyd copies regions of one device to up to eight others,
// asynchronously, the way the Linux kernel's dm-kcopyd does for the
// device-mapper targets (mirror, snapshot, thin, clone, cache, zoned), in
// user space.
//
// A Client runs jobs. Copy reads a source region once, chunk by chunk, and
// writes each chunk to every destination in parallel; Zero makes regions
// read as zeroes. Each accepted job ends with exactly one callback, which
// says whether a read failed and which destinations failed to write (the
// kernel's read_err and write_err bits) and carries a *JobError with the
// errors and byte ranges behind them. Job handles can also be waited on.
//
//	c, _ := kcopyd.NewClient(nil)
//	defer c.Close()
//	job, err := c.Copy(ctx, kcopyd.Region{Dev: src, Off: 0, Len: n},
//		[]kcopyd.Region{{Dev: a, Off: 0, Len: n}, {Dev: b, Off: 0, Len: n}}, 0, nil)
//	if err == nil {
//		err = job.Wait(ctx)
//	}
//
// Devices are anything that implements device.Device: memory, files, block
// devices (package device/blockdev), NBD exports (device/nbd), and wrappers
// such as the fault injector (device/faultdev) and the zoned emulator
// (device/zoned).
//
// # Jobs and chunks
//
// A job no longer than the sub-job size (Options.SubJobSize, 512 KiB by
// default) runs as one chunk: one read, then one write of the same buffer to
// every destination. A longer job is split: SplitCount (8) sub-jobs each
// take the next chunk in ascending order and take another when they finish,
// so at most 8 chunks of a job are in flight; they complete in any order.
//
// # Callbacks
//
// Every callback runs on the client's single worker goroutine, one at a
// time, never inside Copy or Zero and never on an I/O goroutine, so callback
// code needs no locks against other callbacks of the same client. A
// callback may submit new jobs. Clients do not share workers: callbacks of
// different clients run concurrently. PrepareCallback and DoCallback let
// code that did its own I/O complete through the same path.
//
// # Errors
//
// Arguments are checked before a job is accepted, more strictly than the
// kernel does: 1 to 8 destinations, equal lengths, regions inside their
// devices, alignment for direct I/O, and no destination overlapping the
// source or another destination on the same device. A refused job changes
// nothing and gets no callback.
//
// Without IgnoreError, the first read or write error stops the dispatch of
// new chunks; chunks in flight finish, the rest is not touched, and
// JobError.Completed says how many bytes from the start are known to be
// copied. With IgnoreError every chunk is tried; a chunk whose read fails
// is re-read block by block, a block that fails twice is unreadable, and
// only the unreadable blocks are written as zeroes, each reported in
// JobError.ReadRanges.
//
// # Sequential writes
//
// WriteSeq (automatic when a destination is a host-managed zoned device)
// makes each destination receive its writes in ascending order, one chunk
// at a time: a chunk's write is issued only after the previous one has
// completed. The kernel guarantees only the order of issue, and can hang
// after a read error; kcopyd drops the chunks it can no longer write in
// order and completes the job.
//
// # Zeroing
//
// Zero, and DetectZeroes for all-zero source chunks, use the devices'
// native write-zeroes when every destination has one (BLKZEROOUT, fallocate,
// NBD_CMD_WRITE_ZEROES), and otherwise write from one shared zero buffer;
// a device that refuses at run time is written with zeroes instead. A Zero
// job needs no buffers; with native write-zeroes on every destination and
// no Throttle or WriteSeq its chunks are 128 MiB rather than the sub-job size, so that
// zeroing a disk takes a few large requests, as fallocate(1) and
// blkdiscard(8) make.
//
// # Panics
//
// A callback that panics is recovered on the worker: its job counts as
// done, the client goes on, and Close returns a *CallbackPanicError for the
// first such panic. Misuse of the API (a nil prepared callback, a handle
// fired twice) panics in the caller.
//
// # Throttling
//
// A Throttle, shared by any number of clients, applies the kernel's
// I/O-time percentage and an optional byte rate, charged once per chunk at
// its read (or, for Zero, its zeroing).
//
// # Memory
//
// A client holds its buffers, at most Options.MaxMemory bytes: a pool that
// reserves one sub-job at creation, grows on demand up to the bound, and
// keeps what it allocated until Close (free buffers of one size are given
// up only when a buffer of another size would not fit otherwise). Besides
// buffers, a client holds a fixed set of goroutines and about 1 KiB per
// I/O goroutine.
//
// A job holds, whatever its length, a descriptor and SplitCount sub-job
// descriptors (a few KiB), no buffer while it waits, and at most
// SplitCount chunks of buffer while it runs. Failed ranges are merged as
// they are recorded and bounded by MaxRanges per list, so a job whose
// every other chunk fails holds at most (MaxRegions+1)*MaxRanges ranges of
// 16 bytes. Jobs that find no buffer wait in order: the first queued is
// served first, and later jobs do not overtake it.
//
// # Cancellation and shutdown
//
// A job's context stops its dispatch; Drain waits for all accepted jobs;
// Close waits for them and stops the client's goroutines. Flush, as in the
// kernel, only waits for one pass of the worker.
package kcopyd
