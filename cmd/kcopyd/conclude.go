package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/ratefile"
	"github.com/kcopyd/kcopyd/task"
)

// taskNames make the task's messages name the command's flags.
var taskNames = task.Names{Map: "--map", RetryFailed: "--retry-failed", InterruptWait: "--interrupt-wait", Direct: "--direct", WriteSeq: "--write-seq",
	IgnoreErrors: "--ignore-errors", Offset: "--offset", Length: "--length", DestOffset: "--dest-offset",
	FailedRanges: "failed_ranges under --json"}

// taskOptions maps the flags of copy and zero to task.Options.
func (w *writeRun) taskOptions(th *kcopyd.Throttle) *task.Options {
	o := w.o
	t := &task.Options{Src: w.src, Dests: w.locs, Regions: w.regions, SubJobSize: o.subJobSize.n, Throttle: th,
		MaxJobs: o.jobs, Sparse: !o.noSparse, DestIsZero: o.destIsZero, IgnoreErrors: o.ignoreErrors, WriteSeq: o.writeSeq,
		NoFlush: o.noFlush, Verify: o.verify, Direct: o.direct, InterruptWait: o.waitOption(), Names: taskNames}
	if o.create {
		t.Create = openMode{write: true, direct: o.direct}.options()
	}
	if o.mapFile != "" {
		t.Map = &task.MapOptions{Path: o.mapFile, RetryFailed: o.retryFailed, CheckpointInterval: o.checkpointInterval}
	}
	t.WrapVerify = wrapVerify
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
			stopWatch = ratefile.Watch(ctx, o.rateFile, rateContent, th, rateReport(msgs, o.rateFile))
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

// destNames returns the destination arguments.
func destNames(locs []*location) []string {
	out := make([]string, len(locs))
	for i, l := range locs {
		out[i] = l.Spec
	}
	return out
}

// conclude prints the outcome of a copy or zero task, fills the JSON
// report and returns the result.
func (w *writeRun) conclude() error {
	o, out, tr := w.o, w.e.stderr, w.tr
	r, v := tr.Result, tr.Verify
	elapsed := time.Since(w.start)
	w.rep.Bytes, w.rep.Total = r.Completed, tr.Total
	w.concludeDests()
	if r.ReadErr != nil {
		w.rep.ReadError = true
		w.rep.ReadMessage = errPtr(r.ReadErr)
	}
	w.rep.Interrupted = tr.Interrupted()
	if w.single() {
		c := r.Prefixes[0]
		w.rep.Completed = &c
	}
	w.rep.Remaining = tr.Remaining(r.Prefixes)
	code, err := w.resultOf()
	w.concludeMap(code)
	if r.Canceled || code == exitReadError && r.ReadErr != nil && !o.ignoreErrors {
		w.printResume(out, r.Prefixes, -1)
	}
	for i, d := range tr.Dests {
		if d.Failed() && len(w.rep.Destinations[i].Remaining) > 0 {
			w.printResume(out, r.Dests[i].Prefixes, i)
		}
	}
	if code == exitOK && !o.quiet {
		what, suffix, done := "copied", "", r.Completed
		if w.verb == "zero" {
			what = "zeroed"
		}
		if v.Ran {
			suffix = ", verified"
		}
		n := len(tr.Dests)
		fmt.Fprintf(out, "kcopyd: %s %s (%d bytes) to %d destination%s in %s (%s/s)%s\n", what, humanSize(float64(done)), done,
			n, plural(n), elapsed.Round(time.Millisecond), humanSize(float64(done)/max(elapsed.Seconds(), 1e-9)), suffix)
	}
	return w.report(code, err)
}

// single reports whether the run has the one region of the command line.
func (w *writeRun) single() bool { return w.o.regionsFile == "" && len(w.regions) == 1 }

// concludeDests prints the write errors and the --verify findings and
// records every destination in the JSON report.
func (w *writeRun) concludeDests() {
	tr := w.tr
	w.rep.Destinations = nil
	for i, d := range tr.Dests {
		spec := w.locs[i].Spec
		jd := jsonDest{Location: spec, FailedRanges: rangePairs(d.Ranges)}
		prefixes := tr.Result.Dests[i].Prefixes
		if w.single() {
			c := prefixes[0]
			jd.Completed = &c
		}
		jd.Remaining = tr.Remaining(prefixes)
		jd.UnwrittenRanges = tr.Unwritten(i)
		if d.Failed() {
			jd.Error = errPtr(errors.Join(d.Errs...))
			for _, err := range d.Errs {
				fmt.Fprintf(w.e.stderr, "kcopyd: write error on %s: %v\n", spec, err)
			}
		}
		if tr.Verify.Ran {
			w.reportVerify(i, &jd)
		}
		w.rep.Destinations = append(w.rep.Destinations, jd)
	}
}

// resultOf returns the exit code and error of a copy or zero run: the
// task's failure (task.Report.Err) and its kind's exit status.
func (w *writeRun) resultOf() (int, error) {
	err := w.tr.Err()
	switch {
	case err == nil:
		return exitOK, nil
	case errors.Is(err, task.ErrInterrupted):
		if w.tr.Verify.Stopped {
			err = fmt.Errorf("%w (run \"kcopyd verify\" to check them)", err)
		}
		return exitInterrupted, err
	case errors.Is(err, task.ErrEngine) && !w.tr.Result.Submitted:
		return exitUsage, err
	case errors.Is(err, task.ErrRead):
		return exitReadError, err
	case errors.Is(err, task.ErrDiffers):
		return exitVerify, err
	}
	return exitWriteError, err
}

// reportVerify prints and records the --verify result of destination i;
// an interrupted verify proves no destination identical; a difference it
// found is real.
func (w *writeRun) reportVerify(i int, jd *jsonDest) {
	out, stopped, spec := w.e.stderr, w.tr.Verify.Stopped, w.locs[i].Spec
	c := w.tr.Dests[i].Verify
	ok := c != nil && c.Err == nil && c.FirstDiff < 0 && !stopped
	jd.Verified = &ok
	if c == nil {
		return
	}
	if !stopped || c.FirstDiff >= 0 {
		jd.Identical = &ok
	}
	switch {
	case c.Err != nil:
		fmt.Fprintf(out, "kcopyd: verify: cannot read %s: %v\n", spec, c.Err)
	case c.FirstDiff >= 0:
		first, n := c.FirstDiff, c.Chunks
		jd.FirstDifference, jd.DifferingChunks = &first, &n
		fmt.Fprintf(out, "kcopyd: verify: %s differs: first differing byte at offset %d (%s)\n", spec, c.FirstDiff, chunksText(c.Chunks, w.tr.SubJobSize, stopped))
	}
}

// printResume tells how far an interrupted or failed run got and how to
// resume it: on every destination when dest is -1, else on that one.
func (w *writeRun) printResume(out io.Writer, prefixes []int64, dest int) {
	if w.tr.Map != nil {
		if dest < 0 {
			fmt.Fprintf(out, "kcopyd: to resume, run the same command again: --map %s says what is left\n", w.tr.Map.Path)
		}
		return
	}
	who, args, what := "every destination", "...", "to resume"
	if dest >= 0 {
		spec := w.locs[dest].Spec
		who, what, args = spec, "to finish "+spec, spec
		if w.src != nil {
			args = w.src.Spec + " " + args
		}
	}
	if w.single() {
		rg, p := w.regions[0], prefixes[0]
		fmt.Fprintf(out, "kcopyd: %d bytes (%s) from the start of the region are complete on %s\n", p, humanSize(float64(p)), who)
		if p < rg.Len {
			if w.verb == "zero" {
				fmt.Fprintf(out, "kcopyd: %s: kcopyd zero --offset %d --length %d %s\n", what, rg.Dest+p, rg.Len-p, args)
			} else {
				fmt.Fprintf(out, "kcopyd: %s: kcopyd copy --offset %d --dest-offset %d --length %d %s\n", what, rg.Src+p, rg.Dest+p, rg.Len-p, args)
			}
		}
		return
	}
	w.printResumeLines(out, prefixes, who, what, args)
}

// printResumeLines prints the regions file that finishes a run of many
// regions.
func (w *writeRun) printResumeLines(out io.Writer, prefixes []int64, who, what, args string) {
	complete := 0
	for i, rg := range w.regions {
		if prefixes[i] == rg.Len {
			complete++
		}
	}
	fmt.Fprintf(out, "kcopyd: %d of %d regions complete on %s; %s, run kcopyd %s --regions FILE %s with these lines:\n", complete, len(w.regions), who, what, w.verb, args)
	for i, rg := range w.regions {
		p := prefixes[i]
		if p == rg.Len {
			continue
		}
		if w.verb == "zero" {
			fmt.Fprintf(out, "%d %d # line %d\n", rg.Dest+p, rg.Len-p, rg.Line)
		} else {
			fmt.Fprintf(out, "%d %d %d # line %d\n", rg.Src+p, rg.Len-p, rg.Dest+p, rg.Line)
		}
	}
}

// concludeMap prints the map's counts (unless --quiet, when the run
// succeeded) and records them in the JSON report.
func (w *writeRun) concludeMap(code int) {
	m := w.tr.Map
	if m == nil {
		return
	}
	w.rep.Map = jsonMapOf(m)
	if !w.o.quiet || code != exitOK {
		state := "complete"
		if !m.Complete {
			state = "not complete: rerun the same command to resume"
		}
		fmt.Fprintf(w.e.stderr, "kcopyd: --map %s: %d bytes done, %d failed, %d untried (%s)\n", m.Path, m.Done, m.Failed, m.Untried, state)
	}
}

// jsonMapOf returns the --map part of the JSON report.
func jsonMapOf(m *task.MapReport) *jsonMap {
	return &jsonMap{Path: m.Path, Done: m.Done, Failed: m.Failed, Untried: m.Untried, Complete: m.Complete}
}
