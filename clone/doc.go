// Package clone is the kernel's dm-clone in user space: a device that reads
// as SOURCE from the moment it is opened, takes writes at once, and copies
// SOURCE to DEST in the background with the kcopyd engine, keeping its
// progress in metadata that survives a crash.
//
//	c, err := clone.Open(src, dst, md, nil) // md: blank, or a previous run's
//	if err != nil { … }
//	defer c.Close()
//	// c is a device.Device of src's size: serve it, read it, write it.
//	<-c.Hydrated() // DEST now equals SOURCE plus the writes
//
// # Regions
//
// The clone is divided into regions (Options.RegionSize, a power of two
// from 4 KiB to 1 GiB). A region is hydrated once DEST holds its data;
// the metadata keeps one bit per region. Reads of hydrated regions go to
// DEST, of the others to SOURCE. A write covering whole unhydrated regions
// goes to DEST and marks them hydrated without copying; a partial write to
// an unhydrated region first copies that region (hydration on demand),
// then writes. Requests that touch a region being copied wait for it. A
// discard marks the regions it covers whole hydrated without copying (as
// dm-clone does: their contents are unspecified afterwards) and is passed
// to DEST when DEST can discard.
//
// # Background hydration
//
// Unhydrated regions are copied in ascending order, contiguous ones
// batched into one engine job (Options.BatchSize), through a
// kcopyd.Throttle (percent and bytes per second, changeable while the
// clone runs). Before each batch it waits, for at most
// Options.YieldTimeout, until no client request is in flight. A failed
// copy is counted in Status. When a batch of several regions fails, the
// regions after its copied prefix, up to the last byte the error names,
// are copied again at once, one region per job, so that only a region
// that fails alone is marked failed; it is retried after
// Options.RetryInterval. Nothing is marked hydrated that was not copied.
//
// # Crash safety
//
// A region is marked hydrated in memory only after its data is on DEST; a
// commit snapshots the bitmap, flushes DEST and only then writes the
// snapshot to one of two alternating metadata slots (generation number and
// CRC-32C, the other slot untouched) and flushes the metadata. Commits run
// on every Flush, at least every Options.CommitInterval while anything
// changed, and at Close. After a crash at any moment, Open finds the newest
// valid slot: no region is marked hydrated whose data is not on DEST,
// every write a Flush covered is there, and hydration resumes. The ordering
// is spelled out in commit.go.
//
// # Metadata
//
// The metadata device (a file of MetadataSize bytes, or any device) records
// the region size, the sizes of SOURCE and DEST and their identities; Open
// refuses metadata made for another clone (ErrMetadataMismatch) or data
// that is not clone metadata (ErrNotMetadata), before writing anything.
package clone
