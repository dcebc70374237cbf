package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
)

// lockedWriter serializes writes from the progress display, the rate file
// watcher and the command.
type lockedWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

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
	err := openLocation(ctx, l, openMode{write: true, direct: w.o.direct, force: w.o.force, nbd: &w.o.nbd, keepAllocation: w.verb == "zero" && !w.o.punchHoles})
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
	if err := openLocation(ctx, src, openMode{direct: o.direct, nbd: &o.nbd}); err != nil {
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

// checkAlignment checks the regions against the alignment each device
// demands (under --direct, its logical block size or statx's dio
// alignment). A region may end unaligned exactly at a device's end.
func checkAlignment(regions []region, src *location, locs []*location, direct bool) error {
	check := func(l *location, off, length int64, what string, rg region) error {
		a := int64(device.LimitsOf(l.Dev).OffsetAlign)
		if a <= 1 {
			return nil
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

// execute runs the planned segments with the engine, flushes, verifies
// (--verify), closes and reports. It returns the command's result.
func (w *writeRun) execute(ctx context.Context, client *kcopyd.Client, th *kcopyd.Throttle, rateContent []byte, dests []*dest, plan *planner, total int64) error {
	o := w.o
	if err := o.sequentialFor(dests, w.e.stderr); err != nil {
		client.Close()
		return w.fail(err)
	}
	var srcDev device.Device
	if w.src != nil {
		srcDev = w.src.Dev
	}
	prog := newProgress(progressConfig{out: w.e.stderr, quiet: o.quiet, verb: w.verb, total: total, names: destNames(w.locs), interval: o.progressInterval})
	msgs := io.Writer(w.e.stderr)
	if bp, ok := prog.(*barProgress); ok {
		msgs = bp.p
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	var watchWG sync.WaitGroup
	if o.rateFile != "" {
		watchWG.Add(1)
		go func() {
			defer watchWG.Done()
			watchRateFile(watchCtx, o.rateFile, rateContent, th, msgs, rateFilePoll)
		}()
	}
	var flags kcopyd.Flags
	if o.ignoreErrors {
		flags |= kcopyd.IgnoreError
	}
	if o.writeSeq {
		flags |= kcopyd.WriteSeq
	}
	plan.warn = func(msg string) {
		w.warnMu.Lock()
		defer w.warnMu.Unlock()
		w.rep.Warnings = append(w.rep.Warnings, msg)
		fmt.Fprintf(msgs, "kcopyd: warning: %s\n", msg)
	}
	r := &engineRun{
		client: client, src: srcDev, dests: dests, regions: w.regions, plan: plan,
		maxJobs: o.inFlight(), flags: flags, sparse: w.src != nil && !o.noSparse,
		ignore: o.ignoreErrors, prog: prog, interruptWait: o.interruptWait,
		waitNote: func(s string) { fmt.Fprintf(msgs, "kcopyd: %s\n", s) },
		pm:       w.pm, ckInterval: o.checkpointInterval,
	}
	plan.pm = w.pm
	r.run(ctx)
	stopWatch()
	watchWG.Wait()
	if r.abandoned {
		// Closing the client, flushing or closing a location would wait
		// for the I/O that did not finish.
		w.abandoned = true
		prog.stop()
		fmt.Fprintf(w.e.stderr, "kcopyd: the destinations were not flushed; the bytes reported complete were written, the jobs still in flight may be partly written\n")
		return w.conclude(r, dests, total, verifyOutcome{})
	}
	closeErr := client.Close()

	switch {
	case w.pm != nil:
		// The final checkpoint, also after an interrupt: the jobs in
		// flight have finished.
		r.checkpoint()
	case !o.noFlush:
		r.flush()
	}
	var v verifyOutcome
	v.ran = o.verify && !r.canceled && r.internalErr == nil && (r.readErr == nil || o.ignoreErrors)
	if v.ran {
		v.srcErr, v.stopped = w.verifyDests(ctx, dests, prog)
	}
	prog.stop()
	for i, err := range w.closeAll(false) {
		if err != nil {
			dests[i].errs = append(dests[i].errs, fmt.Errorf("close: %w", err))
		}
	}
	if closeErr != nil && r.internalErr == nil {
		r.internalErr = closeErr
	}
	return w.conclude(r, dests, total, v)
}

// verifyOutcome is the result of the --verify phase.
type verifyOutcome struct {
	ran     bool  // the destinations were read back
	srcErr  error // a read error on the source while verifying
	stopped bool  // interrupted: some chunks were never compared
}

// verifyDests reads back every destination that did not fail and compares
// it with the source (copy) or zeroes (zero). Read errors of the source
// are returned; others are recorded on the destination. stopped reports
// that ctx ended the comparison early: the results are incomplete.
func (w *writeRun) verifyDests(ctx context.Context, dests []*dest, prog progress) (srcErr error, stopped bool) {
	var devs []device.Device
	var idx []int
	for i, d := range dests {
		if !d.failed() {
			devs = append(devs, d.loc.Dev)
			idx = append(idx, i)
		}
	}
	if len(devs) == 0 {
		return nil, false
	}
	var src device.Device
	if w.src != nil {
		src = w.src.Dev
	}
	res, srcErr, stopped := compareRegions(ctx, src, devs, idx, w.regions, w.chunkSize(), w.o.jobs, nil, w.giveUp)
	for k, i := range idx {
		dests[i].cmp = &res[k]
	}
	return srcErr, stopped
}

func (w *writeRun) chunkSize() int64 { return w.o.subJobSize.n }

// giveUp waits until idle is closed and returns false, unless ctx is done
// first and idle stays open for --interrupt-wait more: then it says it
// gave up waiting for what and returns true.
func (w *writeRun) giveUp(ctx context.Context, idle <-chan struct{}, what string) bool {
	select {
	case <-idle:
		return false
	case <-ctx.Done():
	}
	t := time.NewTimer(w.o.interruptWait)
	defer t.Stop()
	select {
	case <-idle:
		return false
	case <-t.C:
		fmt.Fprintf(w.e.stderr, "kcopyd: gave up waiting for the %s after %v (--interrupt-wait)\n", what, w.o.interruptWait)
		w.abandoned = true
		return true
	}
}

// conclude prints the outcome, fills the JSON report and returns the
// result.
func (w *writeRun) conclude(r *engineRun, dests []*dest, total int64, v verifyOutcome) error {
	o, out := w.o, w.e.stderr
	elapsed := time.Since(w.start)
	done := r.completed()
	w.rep.Bytes, w.rep.Total = done, total
	w.rep.Destinations = nil
	var failed, ok []string
	mismatch := false
	for i, d := range dests {
		jd := jsonDest{Location: d.loc.Spec, FailedRanges: rangePairs(d.ranges)}
		w.reportDest(r, i, &jd)
		if d.failed() {
			jd.Error = errPtr(errors.Join(d.errs...))
			failed = append(failed, d.loc.Spec)
			for _, err := range d.errs {
				fmt.Fprintf(out, "kcopyd: write error on %s: %v\n", d.loc.Spec, err)
			}
		} else {
			ok = append(ok, d.loc.Spec)
		}
		if v.ran && w.reportVerify(d, v, &jd) {
			mismatch = true
		}
		w.rep.Destinations = append(w.rep.Destinations, jd)
	}
	if r.readErr != nil {
		w.rep.ReadError = true
		w.rep.ReadMessage = errPtr(r.readErr)
	}
	w.rep.Interrupted = r.canceled || v.stopped
	prefixes := r.regionPrefixes()
	if o.regionsFile == "" && len(w.regions) == 1 {
		c := prefixes[0]
		w.rep.Completed = &c
	}
	w.rep.Remaining = w.remaining(prefixes)

	var (
		code int
		err  error
	)
	switch {
	case r.canceled:
		code = exitInterrupted
		err = errors.New("interrupted")
	case v.stopped:
		code = exitInterrupted
		err = fmt.Errorf("interrupted while verifying: the %s finished, but the destinations were not all compared (run \"kcopyd verify\" to check them)", w.verb)
	case r.internalErr != nil:
		code = exitWriteError
		if !r.submitted {
			code = exitUsage
		}
		err = fmt.Errorf("the engine refused the job: %w", r.internalErr)
	case r.readErr != nil:
		code = exitReadError
		if o.ignoreErrors {
			err = fmt.Errorf("read error on %s (unreadable ranges were written as zeroes, see failed_ranges under --json): %w", w.src.Spec, r.readErr)
		} else {
			err = fmt.Errorf("read error on %s: %w", w.src.Spec, r.readErr)
		}
	case len(failed) > 0:
		code = exitWriteError
		if len(ok) > 0 {
			err = fmt.Errorf("%s failed on %s; completed on %s", w.verb, strings.Join(failed, ", "), strings.Join(ok, ", "))
		} else {
			err = fmt.Errorf("%s failed on every destination", w.verb)
		}
	case v.srcErr != nil:
		code = exitReadError
		err = fmt.Errorf("verify: read error on %s: %w", w.src.Spec, v.srcErr)
	case v.ran && anyVerifyReadError(dests):
		code = exitReadError
		err = errors.New("verify: a destination could not be read back")
	case mismatch:
		code = exitVerify
		err = errors.New("verify found a difference")
	}
	code, err = w.concludeMap(code, err)
	if r.canceled || code == exitReadError && r.readErr != nil && !o.ignoreErrors {
		w.printResume(out, prefixes, nil)
	}
	for i, d := range dests {
		if d.failed() && len(w.rep.Destinations[i].Remaining) > 0 {
			w.printResume(out, r.destPrefixes(i), d)
		}
	}
	if code == exitOK && !o.quiet {
		what := "copied"
		if w.verb == "zero" {
			what = "zeroed"
		}
		suffix := ""
		if v.ran {
			suffix = ", verified"
		}
		fmt.Fprintf(out, "kcopyd: %s %s (%d bytes) to %d destination%s in %s (%s/s)%s\n", what, humanSize(float64(done)), done,
			len(dests), plural(len(dests)), elapsed.Round(time.Millisecond), humanSize(float64(done)/max(elapsed.Seconds(), 1e-9)), suffix)
	}
	return w.report(code, err)
}

// reportVerify prints and records the --verify result of d; it returns
// whether d differs. An interrupted verify proves no destination
// identical; a difference it found is real.
func (w *writeRun) reportVerify(d *dest, v verifyOutcome, jd *jsonDest) (differs bool) {
	out := w.e.stderr
	ok := d.cmp != nil && d.cmp.err == nil && d.cmp.first < 0 && !v.stopped
	jd.Verified = &ok
	c := d.cmp
	if c == nil {
		return false
	}
	if !v.stopped || c.first >= 0 {
		jd.Identical = &ok
	}
	switch {
	case c.err != nil:
		fmt.Fprintf(out, "kcopyd: verify: cannot read %s: %v\n", d.loc.Spec, c.err)
	case c.first >= 0:
		first, n := c.first, c.chunks
		jd.FirstDifference, jd.DifferingChunks = &first, &n
		fmt.Fprintf(out, "kcopyd: verify: %s differs: first differing byte at offset %d (%s)\n", d.loc.Spec, c.first, chunksText(c.chunks, w.chunkSize(), v.stopped))
		return true
	}
	return false
}

func anyVerifyReadError(dests []*dest) bool {
	for _, d := range dests {
		if d.cmp != nil && d.cmp.err != nil {
			return true
		}
	}
	return false
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
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
func (w *writeRun) reportDest(r *engineRun, i int, jd *jsonDest) {
	prefixes := r.destPrefixes(i)
	if w.o.regionsFile == "" && len(w.regions) == 1 {
		c := prefixes[0]
		jd.Completed = &c
	}
	jd.Remaining = w.remaining(prefixes)
	for reg, u := range r.unwrittenFrom(i) {
		if rg := w.regions[reg]; u < rg.len {
			jd.UnwrittenRanges = append(jd.UnwrittenRanges, [2]int64{rg.dest + u, rg.len - u})
		}
	}
}

// sequentialFor makes a run onto a host-managed zoned destination write the
// way such a device must be written: in ascending order, one job at a time
// (--write-seq), and every hole written as zeroes (dest.zeroFrom), so that
// no gap is left before a zone's write pointer. --ignore-errors cannot be
// honoured by a sequential writer and is refused before anything is
// written.
func (o *options) sequentialFor(dests []*dest, stderr io.Writer) error {
	var zoned []string
	for _, d := range dests {
		if device.LimitsOf(d.loc.Dev).Zoned == device.ZoneHostManaged {
			zoned = append(zoned, d.loc.Spec)
			d.zeroFrom = math.MaxInt64
		}
	}
	if len(zoned) == 0 {
		return nil
	}
	if o.ignoreErrors {
		return usageErrorf("%s is a host-managed zoned device, written in order: --ignore-errors cannot be used (a sequential writer stops at the first error)", strings.Join(zoned, ", "))
	}
	if !o.writeSeq {
		o.writeSeq = true
		fmt.Fprintf(stderr, "kcopyd: %s is a host-managed zoned device: writing in ascending order, one region at a time (--write-seq)\n", strings.Join(zoned, ", "))
	}
	return nil
}
