package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/plan"
	"github.com/kcopyd/kcopyd/ratefile"
	"github.com/kcopyd/kcopyd/task"
	"github.com/kcopyd/kcopyd/units"
)

// The files of copy, zero and verify depend one way: copy.go, zero.go
// and verify.go (the subcommands) use conclude.go (run a task, render its
// report), which uses run.go (the state of a run and its locations),
// which uses report.go, progress.go, location.go, flags.go and exit.go.

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
	regions []task.Region
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
func (w *writeRun) openSource(ctx context.Context, cmd *cobra.Command, args []string) ([]task.Region, []*location, *location, error) {
	o := w.o
	if len(args) < 2 {
		return nil, nil, nil, w.report(exitUsage, usageErrorf("%s needs a SOURCE and at least one DEST", w.verb))
	}
	w.rep.Source = args[0]
	if err := o.check(cmd, args); err != nil {
		return nil, nil, nil, w.report(exitUsage, err)
	}
	regions, err := o.loadRegions(w.e.stdin, plan.CopyRegions)
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

// newThrottle returns the throttle the flags ask for, or nil, and the
// rate file's initial contents (ratefile.NewThrottle).
func (o *options) newThrottle() (*kcopyd.Throttle, []byte, error) {
	th, content, err := ratefile.NewThrottle(o.throttle, o.rate.n, o.rateFile)
	if err != nil {
		return nil, nil, inputError(fmt.Errorf("--rate-file %s: %w", o.rateFile, err))
	}
	return th, content, nil
}

// rateReport returns the report function of ratefile.Watch: it tells out
// of each new rate from the --rate-file path and of each refused one.
func rateReport(out io.Writer, path string) func(int64, error) {
	return func(rate int64, err error) {
		if err != nil {
			fmt.Fprintf(out, "kcopyd: --rate-file %s: %v; rate unchanged\n", path, err)
			return
		}
		fmt.Fprintf(out, "kcopyd: rate set to %s (from %s)\n", units.FormatRate(rate), path)
	}
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

// wrapVerify, when not nil, wraps every device a comparison reads
// (task.Options.WrapVerify): tests set it to interrupt a comparison at a
// known point.
var wrapVerify func(device.Device) device.Device

// chunksText says how many chunks of size bytes differ; partial says the
// comparison was interrupted, so that n is a lower bound.
func chunksText(n, size int64, partial bool) string {
	s := fmt.Sprintf("%d chunks of %s differ", n, formatSize(size))
	if n == 1 {
		s = fmt.Sprintf("1 chunk of %s differs", formatSize(size))
	}
	if partial {
		s = "at least " + s + " (the comparison was interrupted)"
	}
	return s
}
