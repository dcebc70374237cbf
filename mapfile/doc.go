// Package mapfile keeps the progress map of a kcopyd copy or zero job, so
// that a job stopped by a crash (SIGKILL, power loss) resumes where it
// stopped: `kcopyd copy --map FILE` and `kcopyd zero --map FILE`. It is in
// the spirit of GNU ddrescue's mapfile, in its own format.
//
// A Map cuts the job's bytes into ranges that are done, failed or untried.
// New starts a job with everything untried; Load reads a saved map, and
// Check refuses a map that belongs to another job (another source or
// destination, a device of another size, other regions). Untried and
// Failed iterate over what is left; MarkDone, MarkFailed and RetryFailed
// change it; Save replaces the file atomically.
//
//	m, err := mapfile.Load(path)
//	if errors.Is(err, fs.ErrNotExist) {
//		m, err = mapfile.New(job)
//	} else if err == nil {
//		err = m.Check(job) // a *MismatchError names what differs
//	}
//	if err != nil { … }
//	ck := mapfile.NewCheckpointer(m, path)
//	for r := range m.Untried() {
//		copyRange(r)                // writes complete on every destination
//		ck.Add(r.Off, r.Len)        // not yet durable: not yet done
//		if timeToCheckpoint() {
//			err = ck.Checkpoint(flushAllDestinations)
//		}
//	}
//
// # Crash safety
//
// The map never claims that a range is done when it is not durable on
// every destination. Two rules give this:
//
//  1. Ordering: a range is marked done only after its writes completed on
//     every destination and then every destination was flushed (fsync,
//     NBD_CMD_FLUSH); only after that is the map saved. Data first, map
//     second: a crash between the two leaves durable data the map still
//     calls untried, which the next run copies again, harmlessly. The
//     Checkpointer does exactly this: Add collects completed ranges,
//     Checkpoint(flush) calls flush, then MarkDone, then Save. A range
//     whose flush failed is never marked done (after a failed fsync the
//     data may be gone while a later fsync succeeds).
//  2. Atomic replacement: Save writes FILE.tmp, syncs it, renames it over
//     FILE and syncs the directory, so FILE is always a whole old map or a
//     whole new one. A torn or truncated file cannot pass for a map
//     anyway: the last line is a CRC-32 of everything before it, and Load
//     refuses a file without it or with a wrong one (ErrCorrupt).
//
// Failed ranges are not tried again on a resume; RetryFailed (the
// command's --retry-failed) turns them back to untried first.
//
// # Format
//
// A map file is text, one record per line, fields separated by one space,
// names and identities as Go-quoted strings, numbers in decimal bytes.
// Lines starting with # are comments. For a copy of 1 GiB to two
// destinations that hit a read error and a write error on destination 1:
//
//	kcopyd map v1
//	# The progress of one kcopyd job; format: go doc github.com/kcopyd/kcopyd/mapfile
//	kind copy
//	source "disk.img" id "file:2049:1311" size 1073741824
//	dest 0 "copy.img" id "file:2049:1312" size 1073741824
//	dest 1 "nbd://backup/disk0" id "nbd://backup/disk0" size 1073741824
//	chunk 1048576
//	# region SOURCE_OFFSET LENGTH DEST_OFFSET (bytes)
//	region 0 1073741824 0
//	status running 2026-11-29T14:30:00Z done 537001984 failed 1114112 untried 535625728
//	# OFFSET LENGTH STATE (job-relative bytes: the regions laid end to end)
//	0 536870912 done
//	536870912 65536 failed read
//	536936448 131072 done
//	537067520 1048576 failed write=1
//	538116096 535625728 untried
//	crc32 24293dac
//
// The lines, in this order:
//
//   - kcopyd map v1: the tool and the format version. Another version is
//     refused.
//   - kind copy|zero.
//   - source "NAME" id "ID" size BYTES (copy only): the location as given,
//     its identity (for files and block devices "file:DEV:INO", for NBD the
//     URI) and its size. Check compares identities and sizes, not names.
//   - dest N "NAME" id "ID" size BYTES: each destination, N from 0 in
//     argument order.
//   - chunk BYTES: the sub-job size, for the reader (0: not recorded).
//   - region SOURCE_OFFSET LENGTH DEST_OFFSET: each region in absolute
//     device bytes, in order; SOURCE_OFFSET is - for a zero job. A job
//     without regions is empty.
//   - status WORD TIME done BYTES failed BYTES untried BYTES: WORD is
//     running (untried bytes remain: the job was running, stopped or
//     crashed), failed (only failed bytes remain) or complete; TIME is the
//     save time (RFC 3339, UTC). The counts must agree with the ranges.
//   - OFFSET LENGTH STATE, one line per range. Offsets are job-relative:
//     the job's regions laid end to end, region 0 at 0, region 1 at region
//     0's length, and so on (Job.Split maps them back to devices). The
//     ranges start at 0, are sorted, adjacent, non-empty, cover the job
//     exactly, and two adjacent ranges never have the same STATE. STATE is
//     done (durable on every destination), untried, "failed read" (the
//     source could not be read; no destination has the data) or "failed
//     write=LIST" (the writes to the listed destinations, ascending indexes
//     separated by commas, failed; the others may have the data).
//   - crc32 HEX: the IEEE CRC-32 of every byte before this line, 8
//     lower-case hex digits, then a newline; nothing follows.
//
// # Memory
//
// Marking merges a range with its neighbours, so a job that succeeds is
// one done range, whatever its size; ranges come from failures and from
// chunks completing out of order. A map holds at most DefaultMaxRanges
// ranges (SetMaxRanges changes it): about 3 MiB in memory and 8 MiB on
// disk, so a 1 TiB job with 100,000 failed ranges (200,000 ranges) stays
// small. Beyond the bound the map is coarsened, smallest ranges first, and
// only ever made more pessimistic: a done range may become untried (it is
// copied again) or failed (RetryFailed copies it again; it counts as
// failed), a failed range may become untried or failed on more
// destinations. Untried ranges never change and nothing becomes done, so
// the promise above holds; what a coarsened map loses is precision about
// which bytes failed.
package mapfile
