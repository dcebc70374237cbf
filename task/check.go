package task

import (
	"errors"
	"fmt"

	"github.com/kcopyd/kcopyd/batch"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/location"
)

// ErrOptions is wrapped by the errors of options that cannot be combined
// with the devices given (IgnoreErrors onto a host-managed zoned device).
var ErrOptions = errors.New("options cannot be combined")

// optionsError is a message that matches ErrOptions.
type optionsError struct{ msg string }

func (e *optionsError) Error() string        { return e.msg }
func (e *optionsError) Is(target error) bool { return target == ErrOptions }

// CheckRanges checks that every region lies inside the source (when src
// is not nil) and inside every opened destination it is for. Run checks
// this too; a caller may check early to report it first.
func CheckRanges(regions []Region, src *location.Location, dests []*location.Location) error {
	for _, rg := range regions {
		if src != nil && rg.Len > src.Size-rg.Src { // rg.SrcEnd() > src.Size, without overflow
			return fmt.Errorf("%s: source range [%d, +%d) ends at %d, beyond the end of %s (%d bytes)", rg.Where(), rg.Src, rg.Len, rg.SrcEnd(), src.Spec, src.Size)
		}
		what := "destination range"
		if src == nil {
			what = "range"
		}
		for i, l := range dests {
			if l.Dev != nil && rg.Has(i) && rg.Len > l.Size-rg.Dest {
				return fmt.Errorf("%s: %s [%d, +%d) ends at %d, beyond the end of %s (%d bytes)", rg.Where(), what, rg.Dest, rg.Len, rg.DestEnd(), l.Spec, l.Size)
			}
		}
	}
	return nil
}

// CheckDuplicates compares the identities of opened devices whose
// locations have no stat key (URLs) with each other: one storage given
// twice is refused. (Locations with a key are compared by Key before they
// are opened, and every one by CheckAliases.)
func CheckDuplicates(dests []*location.Location) error {
	for i, l := range dests {
		if l.Dev == nil || l.Key() != "" {
			continue
		}
		id := device.IdentityOf(l.Dev)
		for _, o := range dests[:i] {
			if o.Dev != nil && o.Key() == "" && device.IdentityOf(o.Dev) == id {
				return fmt.Errorf("destination %s is given twice (also as %s)", l.Spec, o.Spec)
			}
		}
	}
	return nil
}

// checkOverlaps refuses regions whose destination ranges overlap each
// other (the result would depend on timing).
func checkOverlaps(regions []Region) error {
	var dst []location.Range
	for _, rg := range regions {
		if rg.Len > 0 {
			dst = append(dst, location.Range{Off: rg.Dest, Len: rg.Len, Line: rg.Line})
		}
	}
	if x, y, ok := location.FirstSelfOverlap(dst); ok {
		if x.Line > y.Line {
			x, y = y, x
		}
		return fmt.Errorf("regions lines %d and %d write overlapping destination ranges [%d, +%d) and [%d, +%d); nothing was written: every destination byte may be written by one line only", x.Line, y.Line, x.Off, x.Len, y.Off, y.Len)
	}
	return nil
}

// checkAliases refuses a run in which two locations that are one storage
// under different names would touch overlapping bytes: a destination and
// the source (src nil for zeroing), or two destinations.
func checkAliases(regions []Region, src *location.Location, dests []*location.Location) error {
	var srcs []location.Range
	dsts := make([][]location.Range, len(dests))
	for _, rg := range regions {
		if src != nil {
			srcs = append(srcs, location.Range{Off: rg.Src, Len: rg.Len, Line: rg.Line})
		}
		for i := range dests {
			if rg.Has(i) {
				dsts[i] = append(dsts[i], location.Range{Off: rg.Dest, Len: rg.Len, Line: rg.Line})
			}
		}
	}
	return location.CheckAliases(src, srcs, dests, dsts)
}

// CheckAlignment checks the regions against the alignment each opened
// device demands (under O_DIRECT, its logical block size or statx's dio
// alignment); src may be nil, and unopened destinations are left out. A
// region may end unaligned exactly at a device's end. A block device that
// got O_DIRECT by default (Location.AutoDirect) is reopened through the
// page cache instead of refusing an unaligned region. direct names the
// option that asked for O_DIRECT in the message ("" when none did).
func CheckAlignment(regions []Region, src *location.Location, dests []*location.Location, direct string) error {
	for _, rg := range regions {
		if src != nil {
			if err := checkAligned(src, rg.Src, rg, "source offset", direct); err != nil {
				return err
			}
		}
		for i, l := range dests {
			if l.Dev == nil || !rg.Has(i) {
				continue
			}
			if err := checkAligned(l, rg.Dest, rg, "destination offset", direct); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkAligned checks one range of rg at off on l.
func checkAligned(l *location.Location, off int64, rg Region, what, direct string) error {
	a := int64(device.LimitsOf(l.Dev).OffsetAlign)
	if a <= 1 {
		return nil
	}
	length := rg.Len
	if l.AutoDirect && (off%a != 0 || (length%a != 0 && off+length != l.Dev.Size())) {
		// O_DIRECT was chosen by default, not asked for: serve this
		// region through the page cache instead.
		return l.ReopenBuffered()
	}
	hint := ""
	if direct != "" {
		hint = " under " + direct
	}
	if off%a != 0 {
		return fmt.Errorf("%s: %s %d is not a multiple of %d bytes, as %s requires%s", rg.Where(), what, off, a, l.Spec, hint)
	}
	if length%a != 0 && off+length != l.Dev.Size() {
		return fmt.Errorf("%s: length %d is not a multiple of %d bytes, as %s requires%s", rg.Where(), length, a, l.Spec, hint)
	}
	return nil
}

// checkJobs asks the engine whether it accepts the job of every region,
// before the first one is submitted.
func (r *run) checkJobs() error {
	opts := &batch.Options{Regions: planRegions(r.o.Regions)}
	if r.o.Src != nil {
		opts.Src = r.o.Src.Dev
	}
	for _, l := range r.o.Dests {
		opts.Dests = append(opts.Dests, batch.Dest{Dev: l.Dev})
	}
	var re *batch.RegionError
	if err := batch.Check(r.client, opts); errors.As(err, &re) {
		return fmt.Errorf("%s: %w", r.o.Regions[re.Region].Where(), re.Err)
	}
	return nil
}

// maxAlign returns the largest OffsetAlign of the opened locations.
func maxAlign(locs ...*location.Location) int64 {
	a := int64(1)
	for _, l := range locs {
		if l != nil && l.Dev != nil {
			a = max(a, int64(device.LimitsOf(l.Dev).OffsetAlign))
		}
	}
	return a
}
