package kcopyd

import (
	"fmt"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/internal/dmio"
)

// CheckCopy reports whether Copy would accept a job with these regions
// and flags, without submitting anything: the same argument checks
// (destination count, equal lengths, ranges inside the devices,
// alignment, and no overlap of the source and destinations on one store,
// judged by device.PlacementOf), returning the same errors. Callers that
// run many jobs can check them all before the first one writes. Safe for
// concurrent use.
func (c *Client) CheckCopy(src Region, dests []Region, flags Flags) error {
	return c.validate(&src, dests, flags)
}

// CheckZero is CheckCopy for Zero.
func (c *Client) CheckZero(dests []Region, flags Flags) error {
	return c.validate(nil, dests, flags)
}

// validate checks a job's regions and flags. src is nil for Zero.
func (c *Client) validate(src *Region, dests []Region, flags Flags) error {
	if flags&^flagMask != 0 {
		return fmt.Errorf("%w: %#x", ErrBadFlags, uint(flags&^flagMask))
	}
	if len(dests) == 0 {
		return ErrNoDests
	}
	if len(dests) > MaxRegions {
		return fmt.Errorf("%w: %d given", ErrTooManyDests, len(dests))
	}
	all := make([]Region, 0, len(dests)+1)
	if src != nil {
		all = append(all, *src)
	}
	all = append(all, dests...)
	length := all[0].Len
	what := func(i int) string {
		if src == nil {
			return fmt.Sprintf("destination %d", i)
		}
		if i == 0 {
			return "source"
		}
		return fmt.Sprintf("destination %d", i-1)
	}
	for i, r := range all {
		if r.Dev == nil {
			return fmt.Errorf("%w: %s", ErrNilDevice, what(i))
		}
		if r.Len != length {
			return fmt.Errorf("%w: %s is %d bytes, want %d", ErrLengthMismatch, what(i), r.Len, length)
		}
		if size := r.Dev.Size(); r.Off < 0 || r.Len < 0 || r.Off > size || r.Len > size-r.Off {
			if r.Off < 0 || r.Len < 0 {
				return fmt.Errorf("%w: %s has offset %d and length %d; both must be at least 0", ErrOutOfRange, what(i), r.Off, r.Len)
			}
			return fmt.Errorf("%w: %s [%d, +%d) on %s of %d bytes", ErrOutOfRange, what(i), r.Off, r.Len, device.Name(r.Dev), size)
		}
		if err := dmio.CheckLimits(r.Dev); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrBadLimits, what(i), err)
		}
		if a := int64(device.LimitsOf(r.Dev).OffsetAlign); a > 1 {
			// An unaligned length is allowed when it ends at the end of
			// the device (device.Device's contract).
			if r.Off%a != 0 || (r.Len%a != 0 && r.Off+r.Len != r.Dev.Size()) || c.subJob%a != 0 {
				return fmt.Errorf("%w: %s [%d, +%d) on %s needs multiples of %d bytes", ErrAlignment, what(i), r.Off, r.Len, device.Name(r.Dev), a)
			}
		}
	}
	// Overlap is judged on the underlying store: two opens of one file, or
	// a partition and its disk, are the same store.
	var ids [MaxRegions + 1]string
	var bases [MaxRegions + 1]int64
	for i, r := range all {
		ids[i], bases[i] = device.PlacementOf(r.Dev)
	}
	for i := range all {
		for j := i + 1; j < len(all); j++ {
			a, b := all[i].Off+bases[i], all[j].Off+bases[j]
			if length > 0 && ids[i] == ids[j] && a < b+length && b < a+length {
				return fmt.Errorf("%w: %s [%d, +%d) and %s [%d, +%d)", ErrOverlap,
					device.Name(all[i].Dev), all[i].Off, length, device.Name(all[j].Dev), all[j].Off, length)
			}
		}
	}
	return nil
}
