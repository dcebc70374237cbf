package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/batch"
)

// verifyOutcome is the result of the --verify phase.
type verifyOutcome struct {
	ran     bool  // the destinations were read back
	srcErr  error // a read error on the source while verifying
	stopped bool  // interrupted: some chunks were never compared
}

// conclude prints the outcome, fills the JSON report and returns the
// result.
func (w *writeRun) conclude(r *batch.Result, dests []*dest, total int64, v verifyOutcome) error {
	o, out := w.o, w.e.stderr
	elapsed := time.Since(w.start)
	w.rep.Bytes, w.rep.Total = r.Completed, total
	failed, ok, mismatch := w.concludeDests(r, dests, v)
	if r.ReadErr != nil {
		w.rep.ReadError = true
		w.rep.ReadMessage = errPtr(r.ReadErr)
	}
	w.rep.Interrupted = r.Canceled || v.stopped
	prefixes := r.Prefixes
	if o.regionsFile == "" && len(w.regions) == 1 {
		c := prefixes[0]
		w.rep.Completed = &c
	}
	w.rep.Remaining = w.remaining(prefixes)
	code, err := w.resultOf(r, dests, v, failed, ok, mismatch)
	code, err = w.concludeMap(code, err)
	if r.Canceled || code == exitReadError && r.ReadErr != nil && !o.ignoreErrors {
		w.printResume(out, prefixes, nil)
	}
	for i, d := range dests {
		if d.failed() && len(w.rep.Destinations[i].Remaining) > 0 {
			w.printResume(out, r.Dests[i].Prefixes, d)
		}
	}
	if code == exitOK && !o.quiet {
		what, suffix, done := "copied", "", r.Completed
		if w.verb == "zero" {
			what = "zeroed"
		}
		if v.ran {
			suffix = ", verified"
		}
		fmt.Fprintf(out, "kcopyd: %s %s (%d bytes) to %d destination%s in %s (%s/s)%s\n", what, humanSize(float64(done)), done,
			len(dests), plural(len(dests)), elapsed.Round(time.Millisecond), humanSize(float64(done)/max(elapsed.Seconds(), 1e-9)), suffix)
	}
	return w.report(code, err)
}

// concludeDests prints the write errors and records every destination in
// the JSON report. It returns the destinations that failed and those that
// did not, and whether --verify found a difference.
func (w *writeRun) concludeDests(r *batch.Result, dests []*dest, v verifyOutcome) (failed, ok []string, mismatch bool) {
	w.rep.Destinations = nil
	for i, d := range dests {
		jd := jsonDest{Location: d.loc.Spec, FailedRanges: rangePairs(d.ranges)}
		w.reportDest(r, i, &jd)
		if d.failed() {
			jd.Error = errPtr(errors.Join(d.errs...))
			failed = append(failed, d.loc.Spec)
			for _, err := range d.errs {
				fmt.Fprintf(w.e.stderr, "kcopyd: write error on %s: %v\n", d.loc.Spec, err)
			}
		} else {
			ok = append(ok, d.loc.Spec)
		}
		if v.ran && w.reportVerify(d, v, &jd) {
			mismatch = true
		}
		w.rep.Destinations = append(w.rep.Destinations, jd)
	}
	return failed, ok, mismatch
}

// resultOf returns the exit code and error of a copy or zero run, the
// first failure by precedence: interrupted, refused, read error, failed
// destinations, then --verify's findings.
func (w *writeRun) resultOf(r *batch.Result, dests []*dest, v verifyOutcome, failed, ok []string, mismatch bool) (int, error) {
	switch {
	case r.Canceled:
		return exitInterrupted, errors.New("interrupted")
	case v.stopped:
		return exitInterrupted, fmt.Errorf("interrupted while verifying: the %s finished, but the destinations were not all compared (run \"kcopyd verify\" to check them)", w.verb)
	case r.InternalErr != nil:
		code := exitWriteError
		if !r.Submitted {
			code = exitUsage
		}
		return code, fmt.Errorf("the engine refused the job: %w", r.InternalErr)
	case r.ReadErr != nil && w.o.ignoreErrors:
		return exitReadError, fmt.Errorf("read error on %s (unreadable ranges were written as zeroes, see failed_ranges under --json): %w", w.src.Spec, r.ReadErr)
	case r.ReadErr != nil:
		return exitReadError, fmt.Errorf("read error on %s: %w", w.src.Spec, r.ReadErr)
	case len(failed) > 0 && len(ok) > 0:
		return exitWriteError, fmt.Errorf("%s failed on %s; completed on %s", w.verb, strings.Join(failed, ", "), strings.Join(ok, ", "))
	case len(failed) > 0:
		return exitWriteError, fmt.Errorf("%s failed on every destination", w.verb)
	case v.srcErr != nil:
		return exitReadError, fmt.Errorf("verify: read error on %s: %w", w.src.Spec, v.srcErr)
	case v.ran && anyVerifyReadError(dests):
		return exitReadError, errors.New("verify: a destination could not be read back")
	case mismatch:
		return exitVerify, errors.New("verify found a difference")
	}
	return exitOK, nil
}

// reportVerify prints and records the --verify result of d; it returns
// whether d differs. An interrupted verify proves no destination
// identical; a difference it found is real.
func (w *writeRun) reportVerify(d *dest, v verifyOutcome, jd *jsonDest) (differs bool) {
	out := w.e.stderr
	ok := d.cmp != nil && d.cmp.Err == nil && d.cmp.FirstDiff < 0 && !v.stopped
	jd.Verified = &ok
	c := d.cmp
	if c == nil {
		return false
	}
	if !v.stopped || c.FirstDiff >= 0 {
		jd.Identical = &ok
	}
	switch {
	case c.Err != nil:
		fmt.Fprintf(out, "kcopyd: verify: cannot read %s: %v\n", d.loc.Spec, c.Err)
	case c.FirstDiff >= 0:
		first, n := c.FirstDiff, c.Chunks
		jd.FirstDifference, jd.DifferingChunks = &first, &n
		fmt.Fprintf(out, "kcopyd: verify: %s differs: first differing byte at offset %d (%s)\n", d.loc.Spec, c.FirstDiff, chunksText(c.Chunks, w.chunkSize(), v.stopped))
		return true
	}
	return false
}

func anyVerifyReadError(dests []*dest) bool {
	for _, d := range dests {
		if d.cmp != nil && d.cmp.Err != nil {
			return true
		}
	}
	return false
}

// printResume tells how far an interrupted or failed run got and how to
// resume it: on every destination when dest is nil, else on dest alone.
func (w *writeRun) printResume(out io.Writer, prefixes []int64, dest *dest) {
	if w.pm != nil {
		if dest == nil {
			fmt.Fprintf(out, "kcopyd: to resume, run the same command again: --map %s says what is left\n", w.pm.path)
		}
		return
	}
	who, args, what := "every destination", "...", "to resume"
	if dest != nil {
		who, what = dest.loc.Spec, "to finish "+dest.loc.Spec
		args = dest.loc.Spec
		if w.src != nil {
			args = w.src.Spec + " " + args
		}
	}
	if w.o.regionsFile == "" && len(w.regions) == 1 {
		rg, p := w.regions[0], prefixes[0]
		fmt.Fprintf(out, "kcopyd: %d bytes (%s) from the start of the region are complete on %s\n", p, humanSize(float64(p)), who)
		if p < rg.len {
			if w.verb == "zero" {
				fmt.Fprintf(out, "kcopyd: %s: kcopyd zero --offset %d --length %d %s\n", what, rg.dest+p, rg.len-p, args)
			} else {
				fmt.Fprintf(out, "kcopyd: %s: kcopyd copy --offset %d --dest-offset %d --length %d %s\n", what, rg.src+p, rg.dest+p, rg.len-p, args)
			}
		}
		return
	}
	complete := 0
	for i, rg := range w.regions {
		if prefixes[i] == rg.len {
			complete++
		}
	}
	fmt.Fprintf(out, "kcopyd: %d of %d regions complete on %s; %s, run kcopyd %s --regions FILE %s with these lines:\n", complete, len(w.regions), who, what, w.verb, args)
	for i, rg := range w.regions {
		p := prefixes[i]
		if p == rg.len {
			continue
		}
		if w.verb == "zero" {
			fmt.Fprintf(out, "%d %d # line %d\n", rg.dest+p, rg.len-p, rg.line)
		} else {
			fmt.Fprintf(out, "%d %d %d # line %d\n", rg.src+p, rg.len-p, rg.dest+p, rg.line)
		}
	}
}

// remaining returns, in regions-file syntax, what is left of each region
// of which only prefixes[i] bytes are complete; nil when nothing is.
func (w *writeRun) remaining(prefixes []int64) [][3]int64 {
	var out [][3]int64
	for i, rg := range w.regions {
		if p := prefixes[i]; p < rg.len {
			out = append(out, [3]int64{rg.src + p, rg.len - p, rg.dest + p})
		}
	}
	return out
}

// reportDest fills in what the run left on destination i: the prefix
// known good, what remains to finish it and the ranges never written.
func (w *writeRun) reportDest(r *batch.Result, i int, jd *jsonDest) {
	prefixes := r.Dests[i].Prefixes
	if w.o.regionsFile == "" && len(w.regions) == 1 {
		c := prefixes[0]
		jd.Completed = &c
	}
	jd.Remaining = w.remaining(prefixes)
	for reg, u := range r.Dests[i].Unwritten {
		if rg := w.regions[reg]; u < rg.len {
			jd.UnwrittenRanges = append(jd.UnwrittenRanges, [2]int64{rg.dest + u, rg.len - u})
		}
	}
}

// dest is one destination of a copy or zero run, with its results.
type dest struct {
	loc *location
	// zeroFrom is the offset from which the destination is known to read
	// as zeroes before the run: 0 for a file this run created or under
	// --dest-is-zero, the old size for a file this run extended, and
	// math.MaxInt64 otherwise.
	zeroFrom int64

	errs   []error        // write, zeroing, flush and close errors
	ranges []kcopyd.Range // destination byte ranges that did not receive the right data
	cmp    *cmpResult     // --verify result
}

// failed reports whether anything went wrong on d.
func (d *dest) failed() bool { return len(d.errs) > 0 }

// concludeMap adjusts the result of a --map run: failed ranges left in
// the map (from this run or an earlier one) or a map that could not be
// saved make a run that is otherwise fine fail. It prints the map's
// counts and fills the JSON report.
func (w *writeRun) concludeMap(code int, err error) (int, error) {
	pm := w.pm
	if pm == nil {
		return code, err
	}
	jm := pm.json()
	w.rep.Map = jm
	if !w.o.quiet || code != exitOK {
		state := "complete"
		if !jm.Complete {
			state = "not complete: rerun the same command to resume"
		}
		fmt.Fprintf(w.e.stderr, "kcopyd: --map %s: %d bytes done, %d failed, %d untried (%s)\n", pm.path, jm.Done, jm.Failed, jm.Untried, state)
	}
	if code != exitOK {
		return code, err
	}
	switch {
	case pm.saveErr != nil:
		return exitWriteError, fmt.Errorf("--map %s: %w", pm.path, pm.saveErr)
	case jm.Failed > 0 && pm.readFailed():
		return exitReadError, fmt.Errorf("%d bytes failed (read errors, in this run or an earlier one; see --map %s); --retry-failed tries them again", jm.Failed, pm.path)
	case jm.Failed > 0:
		return exitWriteError, fmt.Errorf("%d bytes failed (write errors, in this run or an earlier one; see --map %s); --retry-failed tries them again", jm.Failed, pm.path)
	}
	return code, err
}
