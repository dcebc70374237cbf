package task

import (
	"context"
	"fmt"
	"sync"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/batch"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/plan"
)

// Run copies the regions of opts.Src to every destination, or zeroes
// them without a source: it checks, prepares the destinations, loads the
// map, runs the batch (a destination whose write fails is dropped, the
// others complete), flushes or checkpoints, verifies, closes every
// location and returns the outcome. It returns once the work is done or
// ctx is done and the I/O in flight finished (at most
// opts.InterruptWait: then Report.Abandoned). opts is not modified.
func Run(ctx context.Context, opts *Options) *Report {
	o := opts.clone()
	r := &run{o: o, rep: &Report{Regions: o.Regions, SubJobSize: o.SubJobSize, ignoreErrors: o.IgnoreErrors, names: o.Names}}
	if o.Src != nil {
		r.rep.Source = o.Src.Spec
	}
	for _, rg := range o.Regions {
		r.rep.Total += rg.Len
	}
	if err := r.prepare(); err != nil {
		if r.client != nil {
			r.client.Close()
		}
		r.closeAll(true)
		r.rep.Refused = err
		return r.rep
	}
	r.rep.Dests = make([]DestReport, len(o.Dests))
	for i, l := range o.Dests {
		r.rep.Dests[i].Spec = l.Spec
	}
	if r.pm.complete() {
		r.client.Close()
		r.closeAll(false)
		r.rep.Map = r.pm.report()
		r.rep.Map.AlreadyComplete = true
		return r.rep
	}
	r.execute(ctx)
	return r.rep
}

// execute runs the batch, then makes the destinations durable, verifies
// them and closes everything.
func (r *run) execute(ctx context.Context) {
	o := r.o
	if o.Events.Start != nil {
		o.Events.Start(r.rep.Total)
	}
	b := r.newBatch()
	b.Run(ctx)
	res := b.Result()
	r.rep.Result = res
	if res.Abandoned {
		// Closing the client, flushing or closing a location would wait
		// for the I/O that did not finish.
		r.takeResults(res)
		r.rep.Abandoned = true
		r.reportMap()
		return
	}
	closeErr := r.client.Close()
	switch {
	case r.pm != nil:
		// The final checkpoint, also after an interrupt: the jobs in
		// flight have finished.
		r.pm.checkpoint(b, o.Events.note, o.Names.Map)
	case !o.NoFlush:
		b.Flush()
	}
	r.takeResults(res) // with the flush errors
	v := &r.rep.Verify
	v.Ran = o.Verify && !res.Canceled && res.InternalErr == nil && (res.ReadErr == nil || o.IgnoreErrors)
	if v.Ran {
		r.verifyDests(ctx)
	}
	if !r.rep.Abandoned { // else closing would wait for verify's reads
		for i, err := range r.closeAll(false) {
			if err != nil {
				r.rep.Dests[i].Errs = append(r.rep.Dests[i].Errs, fmt.Errorf("close: %w", err))
			}
		}
	}
	if closeErr != nil && res.InternalErr == nil {
		res.InternalErr = closeErr
	}
	r.reportMap()
}

func (r *run) reportMap() {
	if r.pm != nil {
		r.rep.Map = r.pm.report()
	}
}

// takeResults copies what the batch did to each destination.
func (r *run) takeResults(res *batch.Result) {
	for i := range r.rep.Dests {
		d := &r.rep.Dests[i]
		d.Errs = append(d.Errs, res.Dests[i].Errs...)
		d.Ranges = mergeRanges(append(d.Ranges, res.Dests[i].Ranges...))
	}
}

// newBatch returns the batch of the run: a sparse plan from the source's
// allocation map, split by the map when there is one.
func (r *run) newBatch() *batch.Batch {
	o := r.o
	// The regions are independent (overlaps were refused), so they run by
	// offset unless WriteSeq keeps the order given, or a map records the
	// jobs: a job joining two regions is recorded at the job offsets of
	// its first one, which follow on only for regions listed in order.
	p := &plan.Planner{Kind: plan.Zero, Regions: planRegions(o.Regions), Align: 1, ZeroFrom: r.zeroFrom, ByOffset: !o.WriteSeq && r.pm == nil}
	var warnMu sync.Mutex // the planner runs on a goroutine of its own
	p.Warn = func(msg string) {
		warnMu.Lock()
		defer warnMu.Unlock()
		r.rep.Warnings = append(r.rep.Warnings, msg)
		o.Events.warn(msg)
	}
	opts := &batch.Options{
		Regions: p.Regions, Plan: p.Run, MaxJobs: o.MaxJobs, InterruptWait: o.InterruptWait, WaitName: o.Names.InterruptWait,
		Progress: o.Events.Progress, Dropped: o.Events.Dropped, Notify: o.Events.note,
	}
	if o.Src != nil {
		p.Kind, p.Align = plan.Copy, maxAlign(append(o.Dests, o.Src)...)
		if ext, ok := o.Src.Dev.(device.Extenter); ok && o.Sparse {
			p.Extents = ext
		}
		opts.Src, opts.Sparse = o.Src.Dev, o.Sparse && !r.offloadable()
	}
	if o.IgnoreErrors {
		opts.Flags |= kcopyd.IgnoreError
	}
	if o.WriteSeq {
		opts.Flags |= kcopyd.WriteSeq
		opts.MaxJobs = 1
	}
	for i, l := range o.Dests {
		opts.Dests = append(opts.Dests, batch.Dest{Dev: l.Dev, Name: l.Spec, ZeroFrom: r.zeroFrom[i]})
	}
	var b *batch.Batch
	if pm := r.pm; pm != nil {
		opts.Plan = func(ctx context.Context, emit func(plan.Segment) bool) bool {
			return p.Run(ctx, func(s plan.Segment) bool { return pm.split(s, emit) })
		}
		opts.MaxJobLen = pm.segMax
		opts.JobDone = func(j *batch.JobResult) { pm.record(j, o.IgnoreErrors) }
		opts.Tick = func() { pm.maybeCheckpoint(b, o.Events.note, o.Names.Map) }
	}
	b = batch.New(r.client, opts)
	return b
}

// verifyDests reads back every destination that did not fail and compares
// it with the source (or zeroes), on a client of its own with the run's
// throttle.
func (r *run) verifyDests(ctx context.Context) {
	o := r.o
	c := &CompareOptions{Regions: o.Regions, ChunkSize: o.SubJobSize, MaxJobs: o.MaxJobs, Throttle: o.Throttle,
		InterruptWait: o.InterruptWait, WaitName: o.Names.InterruptWait, Note: o.Events.Note, Wrap: o.WrapVerify}
	some := false
	for i, l := range o.Dests {
		var d device.Device
		if !r.rep.Dests[i].Failed() {
			d, some = l.Dev, true
		}
		c.Dests = append(c.Dests, d)
	}
	if !some {
		return
	}
	if o.Src != nil {
		c.Src = o.Src.Dev
	}
	res, err := Compare(ctx, c)
	if err != nil {
		r.rep.Verify.SrcErr = err
		return
	}
	for i, d := range c.Dests {
		if d != nil {
			r.rep.Dests[i].Verify = &res.Dests[i]
		}
	}
	r.rep.Verify.SrcErr = res.ReadErr
	r.rep.Verify.Stopped = res.Canceled || res.Abandoned
	r.rep.Abandoned = res.Abandoned
}
