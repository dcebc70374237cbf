package task

import (
	"fmt"
	"math"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/location"
)

// run is the state of one Run.
type run struct {
	o        *Options
	rep      *Report
	client   *kcopyd.Client
	zeroFrom []int64   // per destination, see batch.Dest.ZeroFrom
	pm       *mapState // Options.Map, or nil
}

// prepare checks the run, creates its client, creates and grows the
// destination files and loads or creates the map. On failure nothing was
// written; the caller undoes what was created.
func (r *run) prepare() error {
	o := r.o
	if err := r.check(); err != nil {
		return err
	}
	client, err := kcopyd.NewClient(&kcopyd.Options{SubJobSize: o.SubJobSize, Throttle: o.Throttle})
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	r.client = client
	// Create and extend files last: these are the first changes.
	if err := r.createDests(); err != nil {
		return err
	}
	if err := r.checkJobs(); err != nil {
		return err
	}
	r.zeroFrom = make([]int64, len(o.Dests))
	for i, l := range o.Dests {
		r.zeroFrom[i] = knownZeroFrom(l, o.DestIsZero && o.Src != nil)
	}
	if err := r.sequentialFor(); err != nil {
		return err
	}
	return r.setupMap()
}

// check runs the checks that need no client: duplicates, bounds,
// overlaps and the alignment of the opened devices.
func (r *run) check() error {
	o := r.o
	if err := CheckDuplicates(o.Dests); err != nil {
		return err
	}
	if err := CheckRanges(o.Regions, o.Src, o.Dests); err != nil {
		return err
	}
	if o.Src != nil {
		if err := checkOverlaps(o.Regions); err != nil {
			return err
		}
	}
	if err := checkAliases(o.Regions, o.Src, o.Dests); err != nil {
		return err
	}
	return CheckAlignment(o.Regions, o.Src, o.Dests, r.directName())
}

// directName is the name of Direct when it is set, for messages.
func (r *run) directName() string {
	if r.o.Direct {
		return r.o.Names.Direct
	}
	return ""
}

// createDests creates the missing destination files and grows the short
// ones to the end of the last region, and checks their alignment.
func (r *run) createDests() error {
	var needed int64
	for _, rg := range r.o.Regions {
		needed = max(needed, rg.DestEnd())
	}
	some := false
	for _, l := range r.o.Dests {
		if l.Dev != nil {
			continue
		}
		if r.o.Create == nil || l.Kind != location.File {
			return fmt.Errorf("destination %s is not open", l.Spec)
		}
		var err error
		if l.Exists {
			err = l.Grow(needed, r.o.Create)
		} else {
			err = l.Create(needed, r.o.Create)
		}
		if err != nil {
			return fmt.Errorf("destination %w", err)
		}
		some = true
	}
	if !some {
		return nil
	}
	return CheckAlignment(r.o.Regions, nil, r.o.Dests, r.directName())
}

// knownZeroFrom returns the offset from which l is known to read zeroes
// before the run: 0 for a file this run created or under destIsZero, the
// old size for a file this run extended, plan.Unknown otherwise.
func knownZeroFrom(l *location.Location, destIsZero bool) int64 {
	switch {
	case destIsZero || l.Created:
		return 0
	case l.Grown:
		return l.Size
	}
	return math.MaxInt64
}

// sequentialFor makes a run onto a host-managed zoned destination write
// the way such a device must be written: in ascending order, one job at a
// time (WriteSeq), and every hole written as zeroes, so that no gap is
// left before a zone's write pointer. IgnoreErrors cannot be honoured by a
// sequential writer and is refused.
func (r *run) sequentialFor() error {
	o := r.o
	var zoned []string
	for i, l := range o.Dests {
		if device.LimitsOf(l.Dev).Zoned == device.ZoneHostManaged {
			zoned = append(zoned, l.Spec)
			r.zeroFrom[i] = math.MaxInt64
		}
	}
	if len(zoned) == 0 {
		return nil
	}
	names := strings.Join(zoned, ", ")
	if o.IgnoreErrors {
		return &optionsError{fmt.Sprintf("%s is a host-managed zoned device, written in order: %s cannot be used (a sequential writer stops at the first error)", names, o.Names.IgnoreErrors)}
	}
	if !o.WriteSeq {
		o.WriteSeq = true
		o.Events.note(fmt.Sprintf("%s is a host-managed zoned device: writing in ascending order, one region at a time (%s)", names, o.Names.WriteSeq))
	}
	return nil
}

// offloadable reports whether a copy is left to the file system through
// the engine's copy offload (FICLONERANGE where blocks can be shared, as
// on XFS and Btrfs, else copy_file_range; the engine falls back to
// copying through memory, once, where a file system refuses): every
// location a regular file, all on one file system, without Direct. Zero
// detection is then left out, since it needs the bytes in memory: zeroes
// inside data are copied (or shared) like the rest, as cp does, and holes
// are still skipped from SEEK_DATA. Chosen by measurement: 1 GiB file ->
// new file on ext4, interleaved on a busy machine (2026-11-29, 5 rounds),
// median 2.05 s offloaded, 4.85 s with zero detection, 2.52 s for cp;
// the quiet figures are in docs/PERFORMANCE.md.
func (r *run) offloadable() bool {
	src := r.o.Src
	if r.o.Direct || src == nil || src.Kind != location.File {
		return false
	}
	var st unix.Stat_t
	if unix.Stat(src.Spec, &st) != nil {
		return false
	}
	for _, l := range r.o.Dests {
		var dst unix.Stat_t
		if l.Kind != location.File || unix.Stat(l.Spec, &dst) != nil || dst.Dev != st.Dev {
			return false
		}
	}
	return true
}

// closeAll closes every location; with undo, files this run created are
// removed and grown files truncated back. It returns the destinations'
// errors.
func (r *run) closeAll(undo bool) []error {
	errs := make([]error, len(r.o.Dests))
	for i, l := range r.o.Dests {
		if undo {
			errs[i] = l.Undo()
		} else {
			errs[i] = l.Close()
		}
	}
	if r.o.Src != nil {
		r.o.Src.Close()
	}
	return errs
}
