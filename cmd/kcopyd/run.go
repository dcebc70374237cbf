package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
)

// writeRun is the state shared by the copy and zero commands.
type writeRun struct {
	e       *env
	o       *options
	verb    string // "copy" or "zero"
	start   time.Time
	src     *location // nil for zero
	locs    []*location
	regions []region
	rep     jsonReport
	prepped bool         // files were created or grown: undo on a failure before the first write
	warnMu  sync.Mutex   // guards rep.Warnings while the planner runs
	pm      *progressMap // --map, or nil
	// abandoned is set when an interrupted run gave up on I/O in flight:
	// closing the locations would wait for it, so they are left open.
	abandoned bool
}

// fail ends a command that wrote nothing: undoes created and grown files,
// closes everything and returns err as an exitUsage error (with JSON under
// --json), or as exitInterrupted when err comes from the command's
// context being canceled (a signal while connecting to an NBD server).
func (w *writeRun) fail(err error) error {
	w.closeAll(true)
	if errors.Is(err, context.Canceled) {
		w.rep.Interrupted = true
		return w.report(exitInterrupted, err)
	}
	return w.report(exitUsage, err)
}

// closeAll closes every location; with undo, files this run created are
// removed and grown files truncated back.
func (w *writeRun) closeAll(undo bool) []error {
	errs := make([]error, len(w.locs))
	if w.abandoned {
		return errs
	}
	for i, l := range w.locs {
		if undo {
			errs[i] = l.Undo()
		} else {
			errs[i] = l.Close()
		}
	}
	if w.src != nil {
		w.src.Close()
	}
	return errs
}

// report prints the JSON report under --json and turns code and err into
// the command's result.
func (w *writeRun) report(code int, err error) error {
	if w.o.json {
		w.rep.Command = w.verb
		w.rep.Seconds = time.Since(w.start).Seconds()
		w.rep.ExitCode = code
		w.rep.Error = errPtr(err)
		if len(w.rep.Destinations) == 0 {
			for _, l := range w.locs {
				w.rep.Destinations = append(w.rep.Destinations, jsonDest{Location: l.Spec, FailedRanges: [][2]int64{}})
			}
		}
		w.rep.write(w.e.stdout)
	}
	if code == exitOK {
		return nil
	}
	var ee *exitError
	if errors.As(err, &ee) {
		ee.code = code
		return ee
	}
	return &exitError{code: code, err: err, noHint: true}
}

// inspectDests classifies the destination arguments and refuses
// directories, other file types and duplicates (the same storage under two
// names).
func inspectDests(specs []string) ([]*location, error) {
	if len(specs) > kcopyd.MaxRegions {
		return nil, usageErrorf("at most %d destinations, got %d", kcopyd.MaxRegions, len(specs))
	}
	locs := make([]*location, len(specs))
	for i, s := range specs {
		l, err := inspectLocation(s)
		if err != nil {
			return nil, inputError(fmt.Errorf("destination %w", err))
		}
		for _, o := range locs[:i] {
			if o.Key() != "" && o.Key() == l.Key() {
				return nil, inputError(fmt.Errorf("destination %s is given twice (also as %s)", s, o.Spec))
			}
		}
		locs[i] = l
	}
	return locs, nil
}

// checkOpenedDuplicates compares the identities of opened devices (URLs
// have no stat key) with each other and with the source.
func checkOpenedDuplicates(locs []*location) error {
	for i, l := range locs {
		if l.Dev == nil || l.Key() != "" {
			continue
		}
		id := device.IdentityOf(l.Dev)
		for _, o := range locs[:i] {
			if o.Dev != nil && o.Key() == "" && device.IdentityOf(o.Dev) == id {
				return fmt.Errorf("destination %s is given twice (also as %s)", l.Spec, o.Spec)
			}
		}
	}
	return nil
}

// openForWrite opens every existing destination for writing.
func (w *writeRun) openForWrite(ctx context.Context, l *location) error {
	err := openLocation(ctx, l, openMode{write: true, direct: w.o.direct, buffered: w.o.buffered, force: w.o.force, nbd: &w.o.nbd, keepAllocation: w.verb == "zero" && !w.o.punchHoles})
	if err == nil && l.Forced {
		fmt.Fprintf(w.e.stderr, "kcopyd: warning: %s is in use; writing to it anyway (--force)\n", l.Spec)
	}
	w.warnNotes(l)
	return err
}

// warnNotes shows the remarks the NBD client made while opening l as
// warnings on stderr (unless --quiet) and in the JSON report.
// openSource does what copy and verify do first: it checks the arguments
// and options, loads --regions, inspects (without opening) the
// destinations and opens the source. On failure it has reported the
// error, and returns the error for the command to return.
func (w *writeRun) openSource(ctx context.Context, cmd *cobra.Command, args []string) ([]region, []*location, *location, error) {
	o := w.o
	if len(args) < 2 {
		return nil, nil, nil, w.report(exitUsage, usageErrorf("%s needs a SOURCE and at least one DEST", w.verb))
	}
	w.rep.Source = args[0]
	if err := o.check(cmd, args); err != nil {
		return nil, nil, nil, w.report(exitUsage, err)
	}
	regions, err := o.loadRegions(w.e.stdin, copyRegions)
	if err != nil {
		return nil, nil, nil, w.report(exitUsage, err)
	}
	locs, err := inspectDests(args[1:])
	if err != nil {
		return nil, nil, nil, w.report(exitUsage, err)
	}
	w.locs = locs
	src, err := inspectLocation(args[0])
	if err != nil {
		return nil, nil, nil, w.fail(inputError(fmt.Errorf("source %w", err)))
	}
	if !src.Exists {
		return nil, nil, nil, w.fail(inputError(fmt.Errorf("source %s does not exist", src.Spec)))
	}
	if err := openLocation(ctx, src, openMode{direct: o.direct, buffered: o.buffered, nbd: &o.nbd}); err != nil {
		return nil, nil, nil, w.fail(inputError(fmt.Errorf("source: %w", err)))
	}
	w.src = src
	w.warnNotes(src)
	return regions, locs, src, nil
}

func (w *writeRun) warnNotes(l *location) {
	for _, n := range l.Notes {
		msg := l.Spec + ": " + n
		w.rep.Warnings = append(w.rep.Warnings, msg)
		if !w.o.quiet {
			fmt.Fprintf(w.e.stderr, "kcopyd: warning: %s\n", msg)
		}
	}
}

// offloadable reports whether a copy from src to dests is left to the
// file system's reflink (FICLONERANGE, through the engine's copy offload):
// every location a regular file, all on one XFS or Btrfs file system (the
// ones that share blocks; the engine falls back to copying through memory,
// once, where a file system refuses), without --direct. Zero detection is
// then left out, since it needs the bytes in memory: zeroes inside data
// are shared like the rest, and holes are still skipped from SEEK_DATA.
// Elsewhere zero detection is kept: on ext4, whose copy_file_range copies
// zeroes as data, the copy would lose the sparseness the command promises
// (1 GiB file -> new file on ext4, offloaded: 2.0 s and 0.51-0.64 CPU
// seconds, with zero detection 2.3 s and 0.83-0.88, on a busy machine).
func offloadable(src *location, dests []*dest, direct bool) bool {
	if direct || src.Kind != locFile {
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
	for _, d := range dests {
		var dst unix.Stat_t
		if d.loc.Kind != locFile || unix.Stat(d.loc.Spec, &dst) != nil || dst.Dev != st.Dev {
			return false
		}
	}
	return true
}

// checkAlignment checks the regions against the alignment each device
// demands (under --direct, its logical block size or statx's dio
// alignment). A region may end unaligned exactly at a device's end.
func checkAlignment(regions []region, src *location, locs []*location, direct bool) error {
	check := func(l *location, off, length int64, what string, rg region) error {
		a := int64(device.LimitsOf(l.Dev).OffsetAlign)
		if a <= 1 {
			return nil
		}
		if l.AutoDirect && (off%a != 0 || (length%a != 0 && off+length != l.Dev.Size())) {
			// O_DIRECT was our choice, not the user's: serve this
			// region through the page cache instead.
			return l.ReopenBuffered()
		}
		hint := ""
		if direct {
			hint = " under --direct"
		}
		if off%a != 0 {
			return fmt.Errorf("%s: %s %d is not a multiple of %d bytes, as %s requires%s", rg.where(), what, off, a, l.Spec, hint)
		}
		if length%a != 0 && off+length != l.Dev.Size() {
			return fmt.Errorf("%s: length %d is not a multiple of %d bytes, as %s requires%s", rg.where(), length, a, l.Spec, hint)
		}
		return nil
	}
	for _, rg := range regions {
		if src != nil {
			if err := check(src, rg.src, rg.len, "source offset", rg); err != nil {
				return err
			}
		}
		for i, l := range locs {
			if !rg.has(i) {
				continue
			}
			if err := check(l, rg.dest, rg.len, "destination offset", rg); err != nil {
				return err
			}
		}
	}
	return nil
}

// maxAlign returns the largest OffsetAlign of the devices.
func maxAlign(devs ...device.Device) int64 {
	a := int64(1)
	for _, d := range devs {
		if d != nil {
			a = max(a, int64(device.LimitsOf(d).OffsetAlign))
		}
	}
	return a
}

// destNames returns the destination arguments.
func destNames(locs []*location) []string {
	out := make([]string, len(locs))
	for i, l := range locs {
		out[i] = l.Spec
	}
	return out
}

// newClient returns the engine client of a copy or zero run over the
// opened locs, its throttle (nil when the flags ask for none) and the rate
// file's initial contents.
func (o *options) newClient(locs ...*location) (*kcopyd.Client, *kcopyd.Throttle, []byte, error) {
	th, rateContent, err := o.newThrottle()
	if err != nil {
		return nil, nil, nil, err
	}
	o.settleSubJobSize(locs...)
	client, err := kcopyd.NewClient(&kcopyd.Options{SubJobSize: o.subJobSize.n, Throttle: th})
	if err != nil {
		return nil, nil, nil, inputError(fmt.Errorf("engine: %w", err))
	}
	return client, th, rateContent, nil
}

// newThrottle returns the throttle the flags ask for, or nil, and the
// rate file's initial contents.
func (o *options) newThrottle() (*kcopyd.Throttle, []byte, error) {
	rate := o.rate.n
	var content []byte
	if o.rateFile != "" {
		r, c, exists, err := readRateFile(o.rateFile)
		if err != nil {
			return nil, nil, inputError(fmt.Errorf("--rate-file %s: %w", o.rateFile, err))
		}
		if exists {
			rate, content = r, c
		}
	}
	if o.throttle >= 100 && rate == 0 && o.rateFile == "" {
		return nil, nil, nil
	}
	th := kcopyd.NewThrottle(o.throttle)
	th.SetRate(rate)
	return th, content, nil
}

func (w *writeRun) chunkSize() int64 { return w.o.subJobSize.n }

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
