package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
)

// dest is one destination of a copy or zero run, with its results.
type dest struct {
	loc *location
	// zeroFrom is the offset from which the destination is known to read
	// as zeroes before the run: 0 for a file this run created or under
	// --dest-is-zero, the old size for a file this run extended, and
	// math.MaxInt64 otherwise.
	zeroFrom int64

	flushFailed bool           // a flush failed: it is not tried again
	dropped     bool           // a write failed: later jobs leave it out (not under --ignore-errors)
	errs        []error        // write, zeroing, flush and close errors
	ranges      []kcopyd.Range // destination byte ranges that did not receive the right data
	cmp         *cmpResult     // --verify result
}

// failed reports whether anything went wrong on d.
func (d *dest) failed() bool { return len(d.errs) > 0 }

// segKind says how a segment is processed.
type segKind int

const (
	segCopy segKind = iota // an engine Copy job
	segZero                // an engine Zero job
	segSkip                // nothing to do: a hole on destinations that read zeroes already
)

// A segment is a piece of a region processed by one engine job (plus
// continuations after a destination failed).
type segment struct {
	reg       int // index of the region
	src, dest int64
	len       int64
	kind      segKind
	dests     []int // destinations the segment is for, by index
	// failedBefore marks a skipped segment that failed in an earlier run
	// (--map): it is not complete.
	failedBefore bool
	completed    int64 // bytes from the segment's start known complete on its live destinations

	started bool  // a task was submitted, or the segment needs none
	active  bool  // a task is in flight or queued for it
	live    []int // dests not dropped when the segment was first dispatched
	// cut holds, for a destination that failed in the segment, the bytes
	// from the segment's start known good on it.
	cut map[int]int64
}

// cutAt records that destination i holds good data for at most n bytes
// from the segment's start.
func (s *segment) cutAt(i int, n int64) {
	if s.cut == nil {
		s.cut = map[int]int64{}
	}
	if c, ok := s.cut[i]; !ok || n < c {
		s.cut[i] = max(n, 0)
	}
}

// task is one submitted engine job: a segment from off on.
type task struct {
	seg   *segment
	off   int64
	dests []int
	job   *kcopyd.Job
	err   error
}

// engineRun runs the segments of a copy or zero command on a client, as
// a planner hands them out.
type engineRun struct {
	client  *kcopyd.Client
	src     device.Device // nil for zero
	dests   []*dest
	regions []region
	plan    *planner
	maxJobs int
	flags   kcopyd.Flags // IgnoreError, WriteSeq
	sparse  bool         // detect or skip zero chunks
	ignore  bool
	prog    progress
	// interruptWait bounds the wait for I/O in flight once the context
	// is done; waitNote says, after a second of it, what is awaited.
	interruptWait time.Duration
	waitNote      func(string)
	// pm is the --map state, or nil; ckInterval its checkpoint interval.
	pm         *progressMap
	ckInterval time.Duration

	readErr     error          // first source read error
	readRanges  []kcopyd.Range // unreadable source ranges (--ignore-errors)
	internalErr error          // a job was refused: a bug in the checks before it
	canceled    bool           // the context stopped dispatch
	submitted   bool           // at least one job was submitted
	abandoned   bool           // jobs were still in flight after interruptWait: never Close the client

	// pending holds, per region, the segments received from the planner
	// and not yet accounted, in order; at most window of them in all.
	pending  [][]*segment
	npending int
	finished int64 // bytes of accounted segments complete on their live destinations
	// destPrefix[i][reg] is the bytes from the start of region reg known
	// good on destination i; destStuck[i][reg] that it can grow no more.
	destPrefix [][]int64
	destStuck  [][]bool
	// unwritten[i][reg] is the offset in region reg from which nothing
	// was written to destination i; planned[reg] the end of the
	// segments taken from the planner.
	unwritten [][]int64
	planned   []int64
}

// window bounds the segments planned ahead of the copy.
func (r *engineRun) window() int { return 2*r.maxJobs + 16 }

// run takes segments from the planner, submits them in order, at most
// maxJobs at once, and waits until every submitted job finished. It
// returns when the work is done, the context is canceled, a read error
// stops the run (not under --ignore-errors) or every destination failed.
func (r *engineRun) run(ctx context.Context) {
	r.pending = make([][]*segment, len(r.regions))
	r.destPrefix = make([][]int64, len(r.dests))
	r.destStuck = make([][]bool, len(r.dests))
	r.unwritten = make([][]int64, len(r.dests))
	r.planned = make([]int64, len(r.regions))
	for i := range r.dests {
		r.destPrefix[i] = make([]int64, len(r.regions))
		r.destStuck[i] = make([]bool, len(r.regions))
		r.unwritten[i] = make([]int64, len(r.regions))
		for reg, rg := range r.regions {
			r.unwritten[i][reg] = rg.len
		}
	}
	planCtx, stopPlan := context.WithCancel(ctx)
	segs := make(chan *segment)
	planDone := make(chan struct{})
	go func() {
		defer close(planDone)
		r.plan.run(planCtx, segs)
	}()
	r.dispatch(ctx, segs)
	stopPlan()
	go func() {
		for range segs {
			// Drop what the planner sent before it saw stopPlan.
		}
	}()
	if !r.abandoned {
		r.waitPlanner(planDone)
	}
	if ctx.Err() != nil && r.finished+r.pendingCompleted() < r.total() {
		r.canceled = true
	}
	r.prog.set(r.progress(nil))
	r.settleAll()
}

// waitPlanner waits until the planner, told to stop, returns: at once,
// unless it is stuck in an Extents call to a source that does not answer;
// then at most interruptWait.
func (r *engineRun) waitPlanner(planDone <-chan struct{}) {
	t := time.NewTimer(r.interruptWait)
	defer t.Stop()
	select {
	case <-planDone:
	case <-t.C:
		r.abandoned = true
		r.waitNote(fmt.Sprintf("gave up waiting for the allocation map of %s after %v", device.Name(r.src), r.interruptWait))
	}
}

// dispatch is run's loop.
func (r *engineRun) dispatch(ctx context.Context, segs <-chan *segment) {
	done := make(chan *task, r.maxJobs+1)
	var (
		inflight []*task
		retries  []*task
		stopping bool
		ctxDone  = ctx.Done()
		note     <-chan time.Time // after an interrupt: say what is awaited
		giveUp   <-chan time.Time // after an interrupt: stop waiting
	)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		for !stopping && len(inflight) < r.maxJobs && len(retries) > 0 {
			t := retries[0]
			retries = retries[1:]
			if !r.start(ctx, t, done, &inflight) {
				stopping = true
			}
		}
		in := segs
		if stopping || len(inflight) >= r.maxJobs || r.npending >= r.window() {
			in = nil
		}
		if in == nil && len(inflight) == 0 {
			return
		}
		select {
		case seg, ok := <-in:
			if !ok {
				segs = nil
				if len(inflight) == 0 && len(retries) == 0 {
					return
				}
				continue
			}
			if !r.take(ctx, seg, done, &inflight) {
				stopping = true
			}
		case t := <-done:
			inflight = slices.DeleteFunc(inflight, func(x *task) bool { return x == t })
			retry, stop := r.taskDone(t)
			if retry != nil {
				retries = append(retries, retry)
			}
			stopping = stopping || stop
			r.maybeCheckpoint()
		case <-ctxDone:
			ctxDone = nil
			r.canceled = true
			stopping = true
			note = time.After(time.Second)
			giveUp = time.After(r.interruptWait)
		case <-note:
			r.waitNote(fmt.Sprintf("waiting for %d job%s in flight (%s) to finish, at most %v (--interrupt-wait)", len(inflight), plural(len(inflight)), r.awaited(inflight), r.interruptWait))
		case <-giveUp:
			r.abandoned = true
			r.waitNote(fmt.Sprintf("gave up waiting for %d job%s in flight (%s) after %v", len(inflight), plural(len(inflight)), r.awaited(inflight), r.interruptWait))
			return
		case <-tick.C:
			r.prog.set(r.progress(inflight))
			r.maybeCheckpoint()
		}
	}
}

// awaited names what the tasks in flight read and write.
func (r *engineRun) awaited(inflight []*task) string {
	var reading bool
	var writing []string
	for _, t := range inflight {
		reading = reading || t.seg.kind == segCopy
		for _, i := range t.dests {
			if s := r.dests[i].loc.Spec; !slices.Contains(writing, s) {
				writing = append(writing, s)
			}
		}
	}
	var parts []string
	if reading && r.src != nil {
		parts = append(parts, "reading "+device.Name(r.src))
	}
	if len(writing) > 0 {
		parts = append(parts, "writing "+strings.Join(writing, ", "))
	}
	return strings.Join(parts, "; ")
}

// take accepts the next segment from the planner and starts it. It
// returns false when the run must stop.
func (r *engineRun) take(ctx context.Context, seg *segment, done chan<- *task, inflight *[]*task) bool {
	r.pending[seg.reg] = append(r.pending[seg.reg], seg)
	r.npending++
	r.planned[seg.reg] = seg.dest - r.regions[seg.reg].dest + seg.len
	seg.started = true
	if seg.kind == segSkip {
		if !seg.failedBefore {
			seg.completed = seg.len
			if r.pm != nil {
				// Nothing to write: a hole on destinations that read
				// zeroes there, or a range done before.
				r.pm.ck.Add(r.pm.jobOff(seg, seg.dest-r.regions[seg.reg].dest), seg.len)
			}
		}
		r.settle(seg.reg)
		return true
	}
	seg.live = r.live(seg.dests)
	if len(seg.live) == 0 {
		// Every destination of the segment was dropped.
		r.settle(seg.reg)
		return r.anyLive()
	}
	return r.start(ctx, &task{seg: seg, dests: seg.live}, done, inflight)
}

// start submits t. It returns false when the run must stop.
func (r *engineRun) start(ctx context.Context, t *task, done chan<- *task, inflight *[]*task) bool {
	if err := r.submit(ctx, t, done); err != nil {
		if ctx.Err() != nil {
			r.canceled = true
		} else {
			r.internalErr = err
		}
		t.seg.active = false
		r.settle(t.seg.reg)
		return false
	}
	t.seg.active = true
	*inflight = append(*inflight, t)
	return true
}

// submit starts the engine job for t. done receives t after its callback.
func (r *engineRun) submit(ctx context.Context, t *task, done chan<- *task) error {
	seg := t.seg
	length := seg.len - t.off
	regs := make([]kcopyd.Region, len(t.dests))
	allZero := true
	for k, i := range t.dests {
		regs[k] = kcopyd.Region{Dev: r.dests[i].loc.Dev, Off: seg.dest + t.off, Len: length}
		if r.dests[i].zeroFrom > seg.dest+t.off {
			allZero = false
		}
	}
	cb := func(readErr bool, writeErr uint64, err error) {
		t.err = err
		done <- t
	}
	flags := r.flags
	var err error
	if seg.kind == segZero {
		t.job, err = r.client.Zero(ctx, regs, flags, cb)
	} else {
		if r.sparse {
			if allZero {
				flags |= kcopyd.SkipZeroes
			} else {
				flags |= kcopyd.DetectZeroes
			}
		}
		src := kcopyd.Region{Dev: r.src, Off: seg.src + t.off, Len: length}
		t.job, err = r.client.Copy(ctx, src, regs, flags, cb)
	}
	if err == nil {
		r.submitted = true
	}
	return err
}

// taskDone records the result of t, as finish, and settles its segment
// unless a continuation is to be submitted.
func (r *engineRun) taskDone(t *task) (retry *task, stop bool) {
	retry, stop = r.finish(t)
	if retry != nil && !stop {
		return retry, false
	}
	t.seg.active = false
	r.settle(t.seg.reg)
	return nil, stop
}

// finish records the result of t. It returns a continuation task for the
// live destinations when some destination failed, and stop when the run
// must not submit more jobs.
func (r *engineRun) finish(t *task) (retry *task, stop bool) {
	seg := t.seg
	if t.err == nil {
		if r.pm != nil {
			r.record(t, nil)
		}
		seg.completed = seg.len
		return nil, false
	}
	var je *kcopyd.JobError
	if !errors.As(t.err, &je) {
		r.internalErr = t.err
		return nil, true
	}
	if r.pm != nil {
		r.record(t, je)
	}
	length := seg.len - t.off
	good := t.off + min(je.Completed, length)
	seg.completed = max(seg.completed, good)
	if je.Read != nil {
		if r.readErr == nil {
			r.readErr = je.Read
		}
		if r.ignore {
			r.readRanges = append(r.readRanges, je.ReadRanges...)
			for _, i := range t.dests {
				for _, rr := range je.ReadRanges {
					r.dests[i].ranges = append(r.dests[i].ranges, kcopyd.Range{Off: rr.Off - seg.src + seg.dest, Len: rr.Len})
					seg.cutAt(i, rr.Off-seg.src)
				}
			}
		} else {
			stop = true
		}
	}
	wrote := false
	for k, i := range t.dests {
		d := r.dests[i]
		if k < len(je.WriteRanges) {
			d.ranges = append(d.ranges, je.WriteRanges[k]...)
			for _, wr := range je.WriteRanges[k] {
				seg.cutAt(i, wr.Off-seg.dest)
			}
		}
		if k < len(je.Writes) && je.Writes[k] != nil {
			wrote = true
			seg.cutAt(i, good)
			d.errs = append(d.errs, je.Writes[k])
			if !r.ignore && !d.dropped {
				d.dropped = true
				r.prog.fail(i)
			}
		}
	}
	if je.Canceled != nil {
		r.canceled = true
		return nil, true
	}
	if r.ignore {
		// The engine went on to the end of the job.
		seg.completed = seg.len
		return nil, false
	}
	if stop {
		return nil, true
	}
	if !wrote {
		// Neither a read, a write nor a cancellation: the engine failed
		// the job for a reason the checks before the run should have
		// caught.
		r.internalErr = t.err
		return nil, true
	}
	live := r.live(t.dests)
	if len(live) == 0 {
		return nil, !r.anyLive()
	}
	if seg.completed < seg.len {
		return &task{seg: seg, off: seg.completed, dests: live}, false
	}
	return nil, false
}

// live returns the destinations of idx that have not been dropped.
func (r *engineRun) live(idx []int) []int {
	var out []int
	for _, i := range idx {
		if !r.dests[i].dropped {
			out = append(out, i)
		}
	}
	return out
}

func (r *engineRun) anyLive() bool {
	for _, d := range r.dests {
		if !d.dropped {
			return true
		}
	}
	return false
}

// progress returns the bytes finished: accounted segments, pending ones
// and the progress of the jobs in flight.
func (r *engineRun) progress(inflight []*task) int64 {
	n := r.finished + r.pendingCompleted()
	for _, t := range inflight {
		n += t.job.Progress()
	}
	return n
}

// completed returns the bytes of the regions known complete on their live
// destinations. Valid after run.
func (r *engineRun) completed() int64 { return r.finished }

// pendingCompleted returns the bytes complete in pending segments.
func (r *engineRun) pendingCompleted() int64 {
	var n int64
	for _, p := range r.pending {
		for _, s := range p {
			n += s.completed
		}
	}
	return n
}

func (r *engineRun) total() int64 {
	var n int64
	for _, rg := range r.regions {
		n += rg.len
	}
	return n
}

// settle accounts the leading segments of region reg that are finished,
// so that pending holds only the segments in flight and those after them.
func (r *engineRun) settle(reg int) {
	p := r.pending[reg]
	for len(p) > 0 && p[0].started && !p[0].active {
		r.account(p[0])
		p[0] = nil
		p = p[1:]
		r.npending--
	}
	r.pending[reg] = p
}

// settleAll accounts every pending segment once the run is over.
func (r *engineRun) settleAll() {
	for reg, p := range r.pending {
		for _, s := range p {
			r.account(s)
			r.npending--
		}
		r.pending[reg] = nil
	}
}

// account adds a finished segment to the totals and to the prefix known
// good on each destination.
func (r *engineRun) account(s *segment) {
	r.finished += s.completed
	for i := range r.dests {
		mine, live := slices.Contains(s.dests, i), slices.Contains(s.live, i)
		if mine && !live {
			u := &r.unwritten[i][s.reg]
			*u = min(*u, s.dest-r.regions[s.reg].dest)
		}
		if r.destStuck[i][s.reg] {
			continue
		}
		good := s.len // nothing to do for i: it reads zeroes there
		if s.failedBefore {
			good = 0
		}
		if mine {
			good = 0 // dropped before the segment started
			if live {
				good = s.completed
			}
			if c, ok := s.cut[i]; ok {
				good = min(good, c)
			}
		}
		r.destPrefix[i][s.reg] += good
		if good < s.len {
			r.destStuck[i][s.reg] = true
		}
	}
}

// regionPrefixes returns, per region, the bytes from its start known
// complete on every destination of the region. Valid after run.
func (r *engineRun) regionPrefixes() []int64 {
	out := make([]int64, len(r.regions))
	for reg, rg := range r.regions {
		out[reg] = rg.len
		for i := range r.dests {
			if rg.has(i) {
				out[reg] = min(out[reg], r.destPrefix[i][reg])
			}
		}
	}
	return out
}

// destPrefixes returns, per region, the bytes from its start known good
// on destination i. Valid after run.
func (r *engineRun) destPrefixes(i int) []int64 { return r.destPrefix[i] }

// unwrittenFrom returns, per region, the offset from its start on which
// nothing was written to destination i (the region's length when
// everything was). Valid after run.
func (r *engineRun) unwrittenFrom(i int) []int64 {
	out := make([]int64, len(r.regions))
	for reg, rg := range r.regions {
		out[reg] = min(r.unwritten[i][reg], r.planned[reg])
		if !rg.has(i) {
			out[reg] = rg.len
		}
	}
	return out
}

// flush flushes every destination that has a volatile cache. Errors are
// recorded on the destination.
func (r *engineRun) flush() { _ = r.flushErr() }

// flushErr is flush, returning an error when a destination is not known
// durable: its flush failed, now or before (it is not tried again: after
// a failed fsync a later one may succeed without the lost writes).
func (r *engineRun) flushErr() error {
	var errs []error
	for i, d := range r.dests {
		if d.flushFailed {
			errs = append(errs, fmt.Errorf("%s: an earlier flush failed", d.loc.Spec))
			continue
		}
		if f, ok := d.loc.Dev.(device.Flusher); ok {
			if err := f.Flush(); err != nil {
				d.flushFailed = true
				errs = append(errs, fmt.Errorf("%s: %w", d.loc.Spec, err))
				d.errs = append(d.errs, fmt.Errorf("flush: %w", err))
				if !d.dropped {
					d.dropped = true
					r.prog.fail(i)
				}
			}
		}
	}
	return errors.Join(errs...)
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
