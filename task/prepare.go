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

// check runs the checks that need no client: options that cannot be
// combined, duplicates, bounds, overlaps and the alignment of the opened
// devices.
func (r *run) check() error {
	o := r.o
	if o.IgnoreErrors && o.WriteSeq {
		return &optionsError{fmt.Sprintf("%s cannot be combined with %s (a sequential writer stops at the first error)", o.Names.WriteSeq, o.Names.IgnoreErrors)}
	}
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

// offloadable reports whether a copy is left to the file system's reflink
// (FICLONERANGE, through the engine's copy offload): every location a
// regular file, all on one XFS or Btrfs file system (the ones that share
// blocks; the engine falls back to copying through memory, once, where a
// file system refuses), without Direct. Zero detection is then left out,
// since it needs the bytes in memory: zeroes inside data are shared like
// the rest, and holes are still skipped from SEEK_DATA. Elsewhere zero
// detection is kept: on ext4, whose copy_file_range copies zeroes as
// data, the copy would lose the sparseness (1 GiB file -> new file on
// ext4, offloaded: 2.0 s and 0.51-0.64 CPU seconds, with zero detection
// 2.3 s and 0.83-0.88, on a busy machine).
func (r *run) offloadable() bool {
	src := r.o.Src
	if r.o.Direct || src == nil || src.Kind != location.File {
		return false
	}
	var st unix.Stat_t
	var fs unix.Statfs_t
	if unix.Stat(src.Spec, &st) != nil || unix.Statfs(src.Spec, &fs) != nil {
		return false
	}
	if fs.Type != unix.XFS_SUPER_MAGIC && fs.Type != unix.BTRFS_SUPER_MAGIC {
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
