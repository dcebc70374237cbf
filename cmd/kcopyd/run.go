package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/plan"
	"github.com/kcopyd/kcopyd/task"
)

// writeRun is the state of a copy, zero or verify command: the locations
// it opened, its regions and its JSON report. The work itself is done by
// package task; writeRun turns the flags into task.Options and the
// outcome into messages, JSON and an exit status.
type writeRun struct {
	e       *env
	o       *options
	verb    string // "copy", "zero" or "verify"
	start   time.Time
	src     *location // nil for zero
	locs    []*location
	regions []region
	rep     jsonReport
	// tr is the task's outcome (copy, zero), once it ran.
	tr *task.Report
}

// fail ends a command that wrote nothing: undoes created and grown files,
// closes everything and returns err as an exitUsage error (with JSON under
// --json), or as exitInterrupted when err comes from the command's
// context being canceled (a signal while connecting to an NBD server).
func (w *writeRun) fail(err error) error {
	w.closeAll()
	if errors.Is(err, context.Canceled) {
		w.rep.Interrupted = true
		return w.report(exitInterrupted, err)
	}
	return w.report(exitUsage, err)
}

// closeAll closes every location opened so far.
func (w *writeRun) closeAll() {
	for _, l := range w.locs {
		l.Close()
	}
	if w.src != nil {
		w.src.Close()
	}
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

// openForWrite opens an existing destination for writing.
func (w *writeRun) openForWrite(ctx context.Context, l *location) error {
	err := openLocation(ctx, l, openMode{write: true, direct: w.o.direct, buffered: w.o.buffered, force: w.o.force, nbd: &w.o.nbd, keepAllocation: w.verb == "zero" && !w.o.punchHoles})
	if err == nil && l.Forced {
		fmt.Fprintf(w.e.stderr, "kcopyd: warning: %s is in use; writing to it anyway (--force)\n", l.Spec)
	}
	w.warnNotes(l)
	return err
}

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

// warnNotes shows the remarks the NBD client made while opening l as
// warnings on stderr (unless --quiet) and in the JSON report.
func (w *writeRun) warnNotes(l *location) {
	for _, n := range l.Notes {
		msg := l.Spec + ": " + n
		w.rep.Warnings = append(w.rep.Warnings, msg)
		if !w.o.quiet {
			fmt.Fprintf(w.e.stderr, "kcopyd: warning: %s\n", msg)
		}
	}
}

// taskRegions returns the regions as package task takes them.
func taskRegions(regions []region) []task.Region {
	out := make([]task.Region, len(regions))
	for i, rg := range regions {
		out[i] = task.Region{Region: plan.Region{Src: rg.src, Dest: rg.dest, Len: rg.len, Dests: rg.dests}, Line: rg.line}
	}
	return out
}

// taskNames make the task's messages name the command's flags.
var taskNames = task.Names{Map: "--map", RetryFailed: "--retry-failed", InterruptWait: "--interrupt-wait", Direct: "--direct", WriteSeq: "--write-seq", IgnoreErrors: "--ignore-errors"}

// taskOptions maps the flags of copy and zero to task.Options.
func (w *writeRun) taskOptions(th *kcopyd.Throttle) *task.Options {
	o := w.o
	t := &task.Options{Src: w.src, Dests: w.locs, Regions: taskRegions(w.regions), SubJobSize: o.subJobSize.n, Throttle: th,
		MaxJobs: o.jobs, Sparse: !o.noSparse, DestIsZero: o.destIsZero, IgnoreErrors: o.ignoreErrors, WriteSeq: o.writeSeq,
		NoFlush: o.noFlush, Verify: o.verify, Direct: o.direct, InterruptWait: o.waitOption(), Names: taskNames}
	if o.create {
		t.Create = openMode{write: true, direct: o.direct}.options()
	}
	if o.mapFile != "" {
		t.Map = &task.MapOptions{Path: o.mapFile, RetryFailed: o.retryFailed, CheckpointInterval: o.checkpointInterval}
	}
	t.WrapVerify = verifyWrap()
	return t
}

// execute runs the task with the progress display and the --rate-file
// watcher, and concludes.
func (w *writeRun) execute(ctx context.Context, th *kcopyd.Throttle, rateContent []byte) error {
	o := w.o
	var prog progress = nopProgress{}
	msgs := io.Writer(w.e.stderr)
	stopWatch := func() {}
	t := w.taskOptions(th)
	t.Events = task.Events{
		Start: func(total int64) {
			prog = newProgress(progressConfig{out: w.e.stderr, quiet: o.quiet, verb: w.verb, total: total, names: destNames(w.locs), interval: o.progressInterval})
			if bp, ok := prog.(*barProgress); ok {
				msgs = bp.p
			}
			stopWatch = w.watchRate(ctx, th, rateContent, msgs)
		},
		Progress: func(n int64) { prog.set(n) },
		Dropped:  func(i int) { prog.fail(i) },
		Warn:     func(m string) { fmt.Fprintf(msgs, "kcopyd: warning: %s\n", m) },
		Note:     func(m string) { fmt.Fprintf(msgs, "kcopyd: %s\n", m) },
		Info: func(m string) {
			if !o.quiet {
				fmt.Fprintf(msgs, "kcopyd: %s\n", m)
			}
		},
	}
	tr := task.Run(ctx, t)
	stopWatch()
	prog.stop()
	w.tr = tr
	w.rep.Warnings = append(w.rep.Warnings, tr.Warnings...)
	switch {
	case tr.Refused != nil:
		if errors.Is(tr.Refused, task.ErrOptions) {
			return w.report(exitUsage, &exitError{code: exitUsage, err: tr.Refused})
		}
		return w.report(exitUsage, inputError(tr.Refused))
	case tr.Map != nil && tr.Map.AlreadyComplete:
		// Said even under --quiet: the run did nothing.
		fmt.Fprintf(w.e.stderr, "kcopyd: --map %s: the %s is complete already (%d bytes); nothing to do\n", tr.Map.Path, w.verb, tr.Map.Done)
		w.rep.Map = jsonMapOf(tr.Map)
		return w.report(exitOK, nil)
	case tr.Result.Abandoned:
		fmt.Fprintf(w.e.stderr, "kcopyd: the destinations were not flushed; the bytes reported complete were written, the jobs still in flight may be partly written\n")
	}
	return w.conclude()
}

// watchRate follows --rate-file until the returned function is called.
func (w *writeRun) watchRate(ctx context.Context, th *kcopyd.Throttle, rateContent []byte, msgs io.Writer) (stop func()) {
	if w.o.rateFile == "" {
		return func() {}
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		watchRateFile(watchCtx, w.o.rateFile, rateContent, th, msgs, rateFilePoll)
	}()
	return func() {
		stopWatch()
		wg.Wait()
	}
}

// destNames returns the destination arguments.
func destNames(locs []*location) []string {
	out := make([]string, len(locs))
	for i, l := range locs {
		out[i] = l.Spec
	}
	return out
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

// waitOption returns --interrupt-wait as package task takes it: 0 is no
// wait.
func (o *options) waitOption() time.Duration {
	if o.interruptWait == 0 {
		return -1
	}
	return o.interruptWait
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
