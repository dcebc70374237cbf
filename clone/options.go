package clone

import (
	"fmt"
	"time"

	"github.com/kcopyd/kcopyd"
)

// Region sizes.
const (
	MinRegionSize = 4 << 10 // dm-clone's smallest: 8 sectors
	MaxRegionSize = 1 << 30 // dm-clone's largest: 2097152 sectors

	// DefaultRegionSize is the region size of a new clone when Options
	// does not give one: 64 KiB. A partial write to an unhydrated region
	// first copies the whole region, so small regions keep those writes
	// cheap; the bitmap of a 1 TiB clone at 64 KiB is 2 MiB. Chosen by
	// measurement (docs/CLONE-PERFORMANCE.md, 1 GiB, quiet machine):
	// hydration time is flat from 4 KiB to 4 MiB, and the first 4 KiB
	// write to a region costs 1.97 ms at 64 KiB as at 16 KiB, 3.2 ms at
	// 256 KiB and 9.1 ms at 4 MiB; 4 KiB (1.56 ms) needs 16 times the
	// metadata.
	DefaultRegionSize = 64 << 10

	// defaultBatchBytes is the size of a background job when BatchSize is
	// not given.
	defaultBatchBytes = 4 << 20
)

// Options configure a Clone. The zero value is valid.
type Options struct {
	// RegionSize is the unit of hydration in bytes: a power of two from
	// MinRegionSize to MaxRegionSize. Zero means the region size recorded
	// in existing metadata, or DefaultRegionSize for a new clone. A
	// nonzero size that differs from the metadata's is refused.
	RegionSize int64

	// BatchSize is the most regions one background hydration job copies
	// (dm-clone's hydration_batch_size); contiguous unhydrated regions are
	// batched. Zero means 4 MiB worth of regions (at least 1). A client
	// write to a region in a running batch waits for the whole batch, so
	// large batches raise the worst-case write latency; under a byte rate
	// a batch holds at most what the rate copies in 100 ms.
	BatchSize int

	// Throttle limits background hydration (on-demand hydration for
	// client writes is never throttled). Nil means a throttle of its own,
	// at 100 % and no byte rate, which Clone.Throttle returns so that it
	// can be changed while the clone runs.
	Throttle *kcopyd.Throttle

	// NoHydration disables background hydration (dm-clone's
	// no_hydration): only client writes and discards hydrate regions.
	NoHydration bool

	// NoDiscardPassdown keeps discards from reaching DEST (dm-clone's
	// no_discard_passdown); they still mark whole unhydrated regions
	// hydrated.
	NoDiscardPassdown bool

	// CommitInterval is the longest time a hydrated region waits for its
	// metadata commit when no Flush comes. Default 1s, as in dm-clone.
	// Longer intervals lose more hydration progress in a crash (never
	// data that a Flush covered).
	CommitInterval time.Duration

	// RetryInterval is how long background hydration waits before it
	// retries regions whose copy failed. Default 5s.
	RetryInterval time.Duration

	// YieldTimeout is the longest background hydration waits for client
	// I/O in flight to finish before it starts its next batch (dm-clone
	// pauses while client I/O is in flight). Default 100ms; a negative
	// value disables yielding.
	YieldTimeout time.Duration

	// SubJobSize is the engine's sub-job size for hydration copies (see
	// kcopyd.Options). Zero means kcopyd's default.
	SubJobSize int64

	// SourceID and DestID identify SOURCE and DEST in the metadata, which
	// refuses to be used with other devices. Empty means where the
	// device's data lies when it has an identity (device.Identifier): a
	// file's device and inode, the NBD URI, a block device's number, but
	// for a loop device its backing file's device and inode and the loop's
	// offset (device numbers of loop devices are reused), for a partition
	// its disk and start (device.PlacementOf); else no check.
	SourceID, DestID string
}

// clone returns a copy of o with defaults filled in; regionSize is the
// region size already decided.
func (o *Options) clone(regionSize int64) (Options, error) {
	var c Options
	if o != nil {
		c = *o
	}
	c.RegionSize = regionSize
	if c.BatchSize == 0 {
		c.BatchSize = int(max(1, defaultBatchBytes/regionSize))
	}
	if c.BatchSize < 1 {
		return c, fmt.Errorf("clone: batch size %d must be positive", c.BatchSize)
	}
	if c.Throttle == nil {
		c.Throttle = kcopyd.NewThrottle(100)
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = time.Second
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = 5 * time.Second
	}
	if c.YieldTimeout == 0 {
		c.YieldTimeout = 100 * time.Millisecond
	}
	if c.CommitInterval < 0 || c.RetryInterval < 0 {
		return c, fmt.Errorf("clone: negative commit or retry interval")
	}
	if len(c.SourceID) > maxIDLen || len(c.DestID) > maxIDLen {
		return c, fmt.Errorf("clone: identities longer than %d bytes", maxIDLen)
	}
	return c, nil
}

// ValidRegionSize reports whether rs is a region size Options accept: a
// power of two from MinRegionSize to MaxRegionSize.
func ValidRegionSize(rs int64) bool {
	return rs >= MinRegionSize && rs <= MaxRegionSize && rs&(rs-1) == 0
}
