package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/batch"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/mapfile"
	"github.com/kcopyd/kcopyd/plan"
)

// planConf says how the regions of a run are planned: from the source's
// allocation map ext (sparse copies), else as whole regions of kind.
type planConf struct {
	ext   device.Extenter
	kind  plan.Kind
	align int64
}

// newBatch returns the batch that runs the regions of w on client:
// progress goes to prog, messages to msgs.
func (w *writeRun) newBatch(client *kcopyd.Client, dests []*dest, pc planConf, prog progress, msgs io.Writer) *batch.Batch {
	o := w.o
	// The regions are independent (checkRegionOverlaps refused any
	// overlap), so they run by offset unless --write-seq keeps the
	// order given.
	p := &plan.Planner{Extents: pc.ext, Kind: pc.kind, Regions: planRegions(w.regions), Align: pc.align, ByOffset: !o.writeSeq,
		Warn: func(msg string) {
			w.warnMu.Lock()
			defer w.warnMu.Unlock()
			w.rep.Warnings = append(w.rep.Warnings, msg)
			fmt.Fprintf(msgs, "kcopyd: warning: %s\n", msg)
		}}
	opts := &batch.Options{
		Regions: p.Regions, Plan: p.Run, MaxJobs: o.inFlight(), Sparse: w.src != nil && !o.noSparse && !offloadable(w.src, dests, o.direct),
		InterruptWait: o.waitOption(), WaitName: "--interrupt-wait", Progress: prog.set, Dropped: prog.fail,
		Notify: func(s string) { fmt.Fprintf(msgs, "kcopyd: %s\n", s) },
	}
	if w.src != nil {
		opts.Src = w.src.Dev
	}
	if o.ignoreErrors {
		opts.Flags |= kcopyd.IgnoreError
	}
	if o.writeSeq {
		opts.Flags |= kcopyd.WriteSeq
	}
	for _, d := range dests {
		p.ZeroFrom = append(p.ZeroFrom, d.zeroFrom)
		opts.Dests = append(opts.Dests, batch.Dest{Dev: d.loc.Dev, Name: d.loc.Spec, ZeroFrom: d.zeroFrom})
	}
	var b *batch.Batch
	if pm := w.pm; pm != nil {
		opts.Plan = func(ctx context.Context, emit func(plan.Segment) bool) bool {
			return p.Run(ctx, func(s plan.Segment) bool { return pm.split(s, emit) })
		}
		opts.MaxJobLen = pm.segMax
		opts.JobDone = func(j *batch.JobResult) { pm.record(j, o.ignoreErrors) }
		opts.Tick = func() { pm.maybeCheckpoint(b, opts.Notify) }
	}
	b = batch.New(client, opts)
	return b
}

// planRegions returns the regions as the planner takes them.
func planRegions(regions []region) []plan.Region {
	out := make([]plan.Region, len(regions))
	for i, rg := range regions {
		out[i] = plan.Region{Src: rg.src, Dest: rg.dest, Len: rg.len, Dests: rg.dests}
	}
	return out
}

// takeResults copies what the batch did to each destination into dests.
func takeResults(res *batch.Result, dests []*dest) {
	for i, d := range dests {
		d.errs = append(d.errs, res.Dests[i].Errs...)
		d.ranges = append(d.ranges, res.Dests[i].Ranges...)
	}
}

// knownZeroFrom returns the dest's zeroFrom for a location.
func knownZeroFrom(l *location, destIsZero bool) int64 {
	switch {
	case destIsZero || l.Created:
		return 0
	case l.Grown:
		return l.Size
	}
	return math.MaxInt64
}

// execute runs the planned segments with the engine, flushes, verifies
// (--verify), closes and reports. It returns the command's result.
func (w *writeRun) execute(ctx context.Context, client *kcopyd.Client, th *kcopyd.Throttle, rateContent []byte, dests []*dest, pc planConf, total int64) error {
	o := w.o
	if err := o.sequentialFor(dests, w.e.stderr); err != nil {
		client.Close()
		return w.fail(err)
	}
	prog := newProgress(progressConfig{out: w.e.stderr, quiet: o.quiet, verb: w.verb, total: total, names: destNames(w.locs), interval: o.progressInterval})
	msgs := io.Writer(w.e.stderr)
	if bp, ok := prog.(*barProgress); ok {
		msgs = bp.p
	}
	stopWatch := w.watchRate(ctx, th, rateContent, msgs)
	b := w.newBatch(client, dests, pc, prog, msgs)
	b.Run(ctx)
	stopWatch()
	res := b.Result()
	if res.Abandoned {
		takeResults(res, dests)
		// Closing the client, flushing or closing a location would wait
		// for the I/O that did not finish.
		w.abandoned = true
		prog.stop()
		fmt.Fprintf(w.e.stderr, "kcopyd: the destinations were not flushed; the bytes reported complete were written, the jobs still in flight may be partly written\n")
		return w.conclude(res, dests, total, verifyOutcome{})
	}
	closeErr := client.Close()
	return w.afterRun(ctx, th, b, res, closeErr, dests, prog, total)
}

// afterRun makes the destinations durable (the final checkpoint under
// --map, else a flush unless --no-flush), verifies them (--verify), closes
// everything and concludes.
func (w *writeRun) afterRun(ctx context.Context, th *kcopyd.Throttle, b *batch.Batch, res *batch.Result, closeErr error, dests []*dest, prog progress, total int64) error {
	o := w.o
	switch {
	case w.pm != nil:
		// The final checkpoint, also after an interrupt: the jobs in
		// flight have finished.
		w.pm.checkpoint(b, func(s string) { fmt.Fprintf(w.e.stderr, "kcopyd: %s\n", s) })
	case !o.noFlush:
		b.Flush()
	}
	takeResults(res, dests) // with the flush errors
	var v verifyOutcome
	v.ran = o.verify && !res.Canceled && res.InternalErr == nil && (res.ReadErr == nil || o.ignoreErrors)
	if v.ran {
		v.srcErr, v.stopped = w.verifyDests(ctx, th, dests)
	}
	prog.stop()
	for i, err := range w.closeAll(false) {
		if err != nil {
			dests[i].errs = append(dests[i].errs, fmt.Errorf("close: %w", err))
		}
	}
	if closeErr != nil && res.InternalErr == nil {
		res.InternalErr = closeErr
	}
	return w.conclude(res, dests, total, v)
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

// verifyDests reads back every destination that did not fail and compares
// it with the source (copy) or zeroes (zero), with engine Verify jobs on a
// client of its own with throttle th. Read errors of the source are
// returned; others are recorded on the destination. stopped reports that
// ctx ended the comparison early: the results are incomplete.
func (w *writeRun) verifyDests(ctx context.Context, th *kcopyd.Throttle, dests []*dest) (srcErr error, stopped bool) {
	devs := make([]device.Device, len(dests))
	some := false
	for i, d := range dests {
		if !d.failed() {
			devs[i], some = d.loc.Dev, true
		}
	}
	if !some {
		return nil, false
	}
	var src device.Device
	if w.src != nil {
		src = w.src.Dev
	}
	res, err := w.compare(ctx, th, src, devs, nil, w.e.stderr)
	if err != nil {
		return err, false
	}
	for i := range dests {
		if devs[i] != nil {
			dests[i].cmp = &res.Dests[i]
		}
	}
	return res.ReadErr, res.Canceled || res.Abandoned
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

// setupMap loads --map, or creates and saves it for a new job, once every
// location is open and before anything is written. A map of another job
// is refused. With --retry-failed the failed ranges become untried. It
// also forgets what the destinations were known to read as zeroes when
// the map is resumed: an earlier run may have written anywhere.
func (w *writeRun) setupMap(src *location, dests []*dest) error {
	o := w.o
	if o.mapFile == "" {
		return nil
	}
	kind := mapfile.KindCopy
	if src == nil {
		kind = mapfile.KindZero
	}
	job := mapJob(kind, src, w.locs, w.regions, w.chunkSize())
	m, err := mapfile.Load(o.mapFile)
	fresh := errors.Is(err, fs.ErrNotExist)
	switch {
	case fresh:
		m, err = mapfile.New(job)
	case err == nil:
		err = m.Check(job)
	}
	if err != nil {
		return inputError(fmt.Errorf("--map %s: %w; nothing was written (give another --map FILE for this %s)", o.mapFile, err, w.verb))
	}
	pm := &progressMap{path: o.mapFile, m: m, ck: mapfile.NewCheckpointer(m, o.mapFile), regions: w.regions, fresh: fresh, last: time.Now(), segMax: mapSegChunks * w.chunkSize(), interval: o.checkpointInterval}
	var off int64
	for _, rg := range w.regions {
		pm.base = append(pm.base, off)
		off += rg.len
	}
	if o.retryFailed {
		if n := m.RetryFailed(); n > 0 && !o.quiet {
			fmt.Fprintf(w.e.stderr, "kcopyd: retrying %d bytes that failed before (--retry-failed)\n", n)
		}
	}
	if fresh || o.retryFailed {
		if err := m.Save(o.mapFile); err != nil {
			return inputError(fmt.Errorf("--map: %w; nothing was written", err))
		}
	}
	if !fresh {
		for _, d := range dests {
			d.zeroFrom = math.MaxInt64
		}
	}
	pm.snap = slices.Collect(m.Ranges())
	w.pm = pm
	return nil
}

// mapNoop ends a run whose map says the job is complete already.
func (w *writeRun) mapNoop() error {
	w.closeAll(false)
	done, _, _ := w.pm.m.Counts()
	// Said even under --quiet: the run did nothing.
	fmt.Fprintf(w.e.stderr, "kcopyd: --map %s: the %s is complete already (%d bytes); nothing to do\n", w.pm.path, w.verb, done)
	w.rep.Map = w.pm.json()
	return w.report(exitOK, nil)
}

// checkJobs asks the engine whether it accepts the job of every region,
// before the first one is submitted: what it would refuse is bad input,
// found before anything is written.
func checkJobs(client *kcopyd.Client, regions []region, src *location, locs []*location) error {
	opts := &batch.Options{Regions: planRegions(regions)}
	if src != nil {
		opts.Src = src.Dev
	}
	for _, l := range locs {
		opts.Dests = append(opts.Dests, batch.Dest{Dev: l.Dev})
	}
	var re *batch.RegionError
	if err := batch.Check(client, opts); errors.As(err, &re) {
		return fmt.Errorf("%s: %w", regions[re.Region].where(), re.Err)
	}
	return nil
}
