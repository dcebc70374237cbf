package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/kcopyd/kcopyd/plan"
	"github.com/kcopyd/kcopyd/task"
)

// options holds the flags of copy, zero and verify; each command registers
// the subset that applies to it.
type options struct {
	offset, length, destOffset sizeFlag
	regionsFile                string
	jobs                       int
	throttle                   int
	rate                       sizeFlag
	rateFile                   string
	subJobSize                 sizeFlag
	ignoreErrors               bool
	writeSeq                   bool
	punchHoles                 bool // zero: files lose the zeroed blocks
	direct                     bool
	buffered                   bool
	sparse, noSparse           bool
	destIsZero                 bool
	create                     bool
	noFlush                    bool
	verify                     bool
	force                      bool
	json                       bool
	quiet                      bool
	progressInterval           time.Duration
	interruptWait              time.Duration
	mapFile                    string
	retryFailed                bool
	checkpointInterval         time.Duration
	nbd                        nbdOptions
}

// flagSet names the groups of flags a command takes.
type flagSet struct {
	destOffset bool // --dest-offset (copy, verify)
	write      bool // engine and write flags (copy, zero)
	copy       bool // copy-only flags
}

// defaultInterruptWait is the default of --interrupt-wait.
const defaultInterruptWait = 30 * time.Second

// defaultJobs is the default of --jobs.
const defaultJobs = 4

func (o *options) register(cmd *cobra.Command, fs flagSet) {
	f := cmd.Flags()
	f.SortFlags = false
	if fs.destOffset {
		f.Var(&o.offset, "offset", "source start `SIZE` (default 0)")
		f.Var(&o.length, "length", "region length `SIZE` (default: to the end of the source)")
		f.Var(&o.destOffset, "dest-offset", "start `SIZE` in every destination (default 0)")
		f.StringVar(&o.regionsFile, "regions", "", "run the regions listed in `FILE` (- = stdin), one \"SRC_OFFSET LENGTH DEST_OFFSET\" per line")
	} else {
		f.Var(&o.offset, "offset", "start `SIZE` in every destination (default 0)")
		f.Var(&o.length, "length", "region length `SIZE` (default: to the end of each destination)")
		f.StringVar(&o.regionsFile, "regions", "", "zero the regions listed in `FILE` (- = stdin), one \"OFFSET LENGTH\" per line")
	}
	f.IntVarP(&o.jobs, "jobs", "j", defaultJobs, "at most `N` regions in flight")
	f.Var(&o.subJobSize, "sub-job-size", "engine chunk `SIZE`, a multiple of 4KiB from 4KiB to 64MiB (default 1MiB, 4MiB when a location uses O_DIRECT)")
	f.BoolVar(&o.direct, "direct", false, "open every location with O_DIRECT (fails if a device or file system refuses it; block devices use it by default)")
	f.BoolVar(&o.buffered, "buffered", false, "open block devices through the page cache (by default they are opened with O_DIRECT where it works)")
	if fs.write {
		f.IntVar(&o.throttle, "throttle", 100, "let kcopyd use the disks at most `PERCENT` of the time (1..100; 100 = no limit)")
		f.Var(&o.rate, "rate", "limit the copy to `SIZE` bytes per second (0 = unlimited)")
		f.StringVar(&o.rateFile, "rate-file", "", "poll `FILE` once a second for a new rate (a SIZE per second, 0 = unlimited), changeable while running")
		f.BoolVar(&o.ignoreErrors, "ignore-errors", false, "keep going after read and write errors (unreadable source ranges are written as zeroes and reported)")
		f.BoolVar(&o.writeSeq, "write-seq", false, "write each destination strictly in ascending order, one region at a time (zoned devices)")
		f.BoolVar(&o.noFlush, "no-flush", false, "do not flush the destinations' caches before reporting success")
		f.BoolVar(&o.verify, "verify", false, "after writing, read every destination back and compare")
		f.BoolVar(&o.force, "force", false, "write to block devices even when they are mounted or in use")
		f.StringVar(&o.mapFile, "map", "", "keep the progress in `FILE` and resume from it: a rerun copies only what is not done yet")
		f.BoolVar(&o.retryFailed, "retry-failed", false, "with --map, try the ranges that failed in an earlier run again")
		f.DurationVar(&o.checkpointInterval, "checkpoint-interval", task.DefaultCheckpointInterval, "with --map, flush and save the map at least this often")
		_ = f.MarkHidden("checkpoint-interval")
	}
	f.DurationVar(&o.interruptWait, "interrupt-wait", defaultInterruptWait, "after SIGINT/SIGTERM, wait at most `DURATION` for I/O in flight, then give up on it (and do not flush)")
	if fs.write && !fs.copy {
		f.BoolVar(&o.punchHoles, "punch-holes", false, "free the zeroed blocks of files (FALLOC_FL_PUNCH_HOLE) instead of zeroing them in place")
	}
	if fs.copy {
		f.BoolVar(&o.sparse, "sparse", false, "skip source holes and write all-zero chunks as write-zeroes (the default)")
		f.BoolVar(&o.noSparse, "no-sparse", false, "copy every byte, holes and zeroes included")
		f.BoolVar(&o.destIsZero, "dest-is-zero", false, "the destinations already read as zeroes: do not write holes and zero chunks at all")
		f.BoolVar(&o.create, "create", false, "create missing destination files, and extend short ones, to the size needed")
	}
	o.registerCommon(cmd, "print one JSON object with the results on stdout at the end")
}

// registerCommon registers the flags every command that opens locations
// takes: --json (described by jsonHelp), --quiet, the hidden
// --progress-interval and the NBD client options.
func (o *options) registerCommon(cmd *cobra.Command, jsonHelp string) {
	f := cmd.Flags()
	f.BoolVar(&o.json, "json", false, jsonHelp)
	f.BoolVarP(&o.quiet, "quiet", "q", false, "no progress display and no summary line")
	f.DurationVar(&o.progressInterval, "progress-interval", 5*time.Second, "interval of plain progress lines when stderr is not a terminal")
	_ = f.MarkHidden("progress-interval")
	o.nbd.register(f)
	cmd.SetUsageTemplate(groupedUsageTemplate)
}

// check validates flag values and combinations; specs are the location
// arguments, which are not opened.
func (o *options) check(cmd *cobra.Command, specs []string) error {
	f := cmd.Flags()
	if o.regionsFile != "" {
		for _, name := range []string{"offset", "length", "dest-offset"} {
			if fl := f.Lookup(name); fl != nil && fl.Changed {
				return usageErrorf("--%s cannot be combined with --regions (give the offsets in the regions file)", name)
			}
		}
	}
	if o.jobs < 1 || o.jobs > 1024 {
		return usageErrorf("--jobs must be between 1 and 1024, got %d", o.jobs)
	}
	if f.Lookup("throttle") != nil && (o.throttle < 1 || o.throttle > 100) {
		return usageErrorf("--throttle must be a percentage between 1 and 100, got %d", o.throttle)
	}
	if n := o.subJobSize.n; o.subJobSize.set && (n < 4096 || n > 64<<20 || n%4096 != 0) {
		return usageErrorf("--sub-job-size must be a multiple of 4KiB between 4KiB and 64MiB, got %d", n)
	}
	if o.sparse && o.noSparse {
		return usageErrorf("--sparse and --no-sparse cannot be combined")
	}
	if o.direct && o.buffered {
		return usageErrorf("--direct and --buffered cannot be combined")
	}
	if o.noSparse && o.destIsZero {
		return usageErrorf("--dest-is-zero works only with --sparse (the default), not with --no-sparse")
	}
	if o.writeSeq && o.ignoreErrors {
		return usageErrorf("--write-seq cannot be combined with --ignore-errors (a sequential writer stops at the first error)")
	}
	if o.retryFailed && o.mapFile == "" {
		return usageErrorf("--retry-failed needs --map FILE (the map says what failed)")
	}
	if o.mapFile != "" && o.noFlush {
		return usageErrorf("--map cannot be combined with --no-flush: a range is recorded as done only after it was flushed")
	}
	if o.mapFile != "" && o.checkpointInterval <= 0 {
		return usageErrorf("--checkpoint-interval must be positive")
	}
	if o.interruptWait < 0 {
		return usageErrorf("--interrupt-wait must not be negative")
	}
	if o.progressInterval <= 0 {
		return usageErrorf("--progress-interval must be positive")
	}
	return o.nbd.check(cmd, specs)
}

// span returns the region of --offset, --length and --dest-offset.
func (o *options) span() task.Span {
	return task.Span{Offset: o.offset.n, DestOffset: o.destOffset.n, Length: o.length.n, HasLength: o.length.set}
}

// spanError returns the error of task.Span as the command's: a usage
// error for offsets out of range, an input error for the source's size.
func spanError(err error) error {
	if errors.Is(err, task.ErrOptions) {
		return &exitError{code: exitUsage, err: err}
	}
	return inputError(err)
}

// loadRegions reads --regions, or returns nil when it was not given.
func (o *options) loadRegions(stdin io.Reader, format plan.RegionsFormat) ([]task.Region, error) {
	if o.regionsFile == "" {
		return nil, nil
	}
	r := stdin
	if o.regionsFile != "-" {
		f, err := os.Open(o.regionsFile)
		if err != nil {
			return nil, inputError(fmt.Errorf("--regions: %w", err))
		}
		defer f.Close()
		r = f
	}
	regs, err := task.ParseRegions(r, format)
	if err != nil {
		return nil, inputError(fmt.Errorf("--regions %s: %w", o.regionsFile, err))
	}
	return regs, nil
}
