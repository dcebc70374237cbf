package main

import (
	"context"
	"fmt"
	"io"
	"math"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/batch"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/plan"
)

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
	p := &plan.Planner{Extents: pc.ext, Kind: pc.kind, Regions: planRegions(w.regions), Align: pc.align,
		Warn: func(msg string) {
			w.warnMu.Lock()
			defer w.warnMu.Unlock()
			w.rep.Warnings = append(w.rep.Warnings, msg)
			fmt.Fprintf(msgs, "kcopyd: warning: %s\n", msg)
		}}
	opts := &batch.Options{
		Regions: p.Regions, Plan: p.Run, MaxJobs: o.inFlight(), Sparse: w.src != nil && !o.noSparse,
		InterruptWait: o.interruptWait, Progress: prog.set, Dropped: prog.fail,
		Notify: func(s string) { fmt.Fprintf(msgs, "kcopyd: %s\n", s) },
	}
	if w.src != nil {
		opts.Src = w.src.dev
	}
	if o.ignoreErrors {
		opts.Flags |= kcopyd.IgnoreError
	}
	if o.writeSeq {
		opts.Flags |= kcopyd.WriteSeq
	}
	for _, d := range dests {
		p.ZeroFrom = append(p.ZeroFrom, d.zeroFrom)
		opts.Dests = append(opts.Dests, batch.Dest{Dev: d.loc.dev, Name: d.loc.spec, ZeroFrom: d.zeroFrom})
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
	case destIsZero || l.created:
		return 0
	case l.grown:
		return l.size
	}
	return math.MaxInt64
}
