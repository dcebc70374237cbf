package batch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/plan"
)

// plan runs Options.Plan and sends its segments on out in groups: one
// segment, or contiguous copy segments to coalesce into one job. It
// closes out when the plan is done or ctx is.
func (b *Batch) plan(ctx context.Context, out chan<- []*segment) {
	defer close(out)
	send := func(g []*segment) bool {
		select {
		case out <- g:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var cur []*segment
	emit := func(s plan.Segment) bool {
		seg := &segment{Segment: s}
		if len(cur) > 0 && b.joins(cur, seg) {
			cur = append(cur, seg)
		} else {
			if len(cur) > 0 && !send(cur) {
				return false
			}
			cur = []*segment{seg}
		}
		if !b.canGrow(cur) {
			g := cur
			cur = nil
			return send(g)
		}
		return true
	}
	if b.o.Plan(ctx, emit) && len(cur) > 0 {
		send(cur)
	}
}

// groupLen returns the bytes of the segments of g.
func groupLen(g []*segment) int64 {
	var n int64
	for _, s := range g {
		n += s.Len
	}
	return n
}

// canGrow reports whether a segment may be joined to the group g: its
// last segment is a copy and g is shorter than MaxJobLen. A chunk of the
// joined job may then straddle two segments; results are accounted by
// byte (see finish), so a failed chunk is charged to each segment it
// touches.
func (b *Batch) canGrow(g []*segment) bool {
	last := g[len(g)-1]
	return b.o.MaxJobLen > 0 && last.Kind == plan.Copy && !last.Failed && groupLen(g) < b.o.MaxJobLen
}

// joins reports whether s follows the group g (which canGrow) in the
// source and on every destination, with the same destinations and zero
// handling, within MaxJobLen, and the engine accepts the joined job (two
// regions each clear of the other's destinations may not be together:
// copying [0, 1M) to [1M, 2M) and [1M, 2M) to [2M, 3M) of one device).
func (b *Batch) joins(g []*segment, s *segment) bool {
	last := g[len(g)-1]
	n := groupLen(g) + s.Len
	if s.Kind != plan.Copy || s.Failed || !slices.Equal(s.Dests, last.Dests) ||
		s.Src != last.Src+last.Len || s.Dest != last.Dest+last.Len || n > b.o.MaxJobLen ||
		b.allZero(g[0].Dest, s.Dests) != b.allZero(s.Dest, s.Dests) {
		return false
	}
	regs := make([]kcopyd.Region, len(s.Dests))
	for k, i := range s.Dests {
		regs[k] = kcopyd.Region{Dev: b.o.Dests[i].Dev, Off: g[0].Dest, Len: n}
	}
	return b.client.CheckCopy(kcopyd.Region{Dev: b.o.Src, Off: g[0].Src, Len: n}, regs, b.o.Flags) == nil
}

// allZero reports whether every destination of idx reads zeroes from
// dest on.
func (b *Batch) allZero(dest int64, idx []int) bool {
	for _, i := range idx {
		if b.o.Dests[i].ZeroFrom > dest {
			return false
		}
	}
	return true
}

// dispatcher is the state of Run's loop.
type dispatcher struct {
	done     chan *task
	inflight []*task
	retries  []*task
	stopping bool
}

// dispatch is Run's loop.
func (b *Batch) dispatch(ctx context.Context, groups <-chan []*segment) {
	d := &dispatcher{done: make(chan *task, b.o.MaxJobs+1)}
	var (
		ctxDone = ctx.Done()
		note    <-chan time.Time // after an interrupt: say what is awaited
		giveUp  <-chan time.Time // after an interrupt: stop waiting
	)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		b.startRetries(ctx, d)
		in := groups
		if d.stopping || len(d.inflight) >= b.o.MaxJobs || b.npending >= b.window() {
			in = nil
		}
		if in == nil && len(d.inflight) == 0 {
			return
		}
		select {
		case g, ok := <-in:
			if !ok {
				groups = nil
				if len(d.inflight) == 0 && len(d.retries) == 0 {
					return
				}
				continue
			}
			d.stopping = d.stopping || !b.take(ctx, g, d)
		case t := <-d.done:
			b.taskDone(d, t)
		case <-ctxDone:
			ctxDone, note, giveUp = nil, time.After(time.Second), time.After(b.o.InterruptWait)
			b.res.Canceled, d.stopping = true, true
		case <-note:
			b.notify(fmt.Sprintf("waiting for %d job%s in flight (%s) to finish, at most %v%s", len(d.inflight), plural(len(d.inflight)), b.awaited(d.inflight), max(b.o.InterruptWait, 0), b.waitName()))
		case <-giveUp:
			b.res.Abandoned = true
			b.notify(fmt.Sprintf("gave up waiting for %d job%s in flight (%s) after %v", len(d.inflight), plural(len(d.inflight)), b.awaited(d.inflight), max(b.o.InterruptWait, 0)))
			return
		case <-tick.C:
			b.progress(d.inflight)
			b.tick()
		}
	}
}

// waitName returns " (WaitName)", or "" without one.
func (b *Batch) waitName() string {
	if b.o.WaitName == "" {
		return ""
	}
	return " (" + b.o.WaitName + ")"
}

// startRetries submits the continuations waiting for a place.
func (b *Batch) startRetries(ctx context.Context, d *dispatcher) {
	for !d.stopping && len(d.inflight) < b.o.MaxJobs && len(d.retries) > 0 {
		t := d.retries[0]
		d.retries = d.retries[1:]
		d.stopping = !b.start(ctx, t, d)
	}
}

// take accepts the next group from the plan and starts it. It returns
// false when the batch must stop.
func (b *Batch) take(ctx context.Context, g []*segment, d *dispatcher) bool {
	b.npending++
	left := len(g)
	for _, seg := range g {
		seg.left = &left
		b.pending[seg.Region] = append(b.pending[seg.Region], seg)
		b.planned[seg.Region] = seg.Dest - b.o.Regions[seg.Region].Dest + seg.Len
		seg.started = true
	}
	seg := g[0]
	if seg.Kind == plan.Skip {
		if !seg.Failed {
			seg.completed = seg.Len
			if b.o.JobDone != nil {
				// Nothing to write: a hole on destinations that read
				// zeroes there, or a range done before.
				b.o.JobDone(&JobResult{Region: seg.Region, Src: seg.Src, Dest: seg.Dest, Len: seg.Len, All: true})
			}
		}
		b.settle(seg.Region)
		return true
	}
	live := b.live(seg.Dests)
	for _, s := range g {
		s.live = live
	}
	if len(live) == 0 {
		// Every destination of the segments was dropped.
		b.settleGroup(g)
		return b.anyLive()
	}
	return b.start(ctx, &task{segs: g, dests: live}, d)
}

// start submits t. It returns false when the batch must stop.
func (b *Batch) start(ctx context.Context, t *task, d *dispatcher) bool {
	if err := b.submit(ctx, t, d.done); err != nil {
		if ctx.Err() != nil {
			b.res.Canceled = true
		} else {
			b.res.InternalErr = err
		}
		b.settleGroup(t.segs)
		return false
	}
	for _, s := range t.segs {
		s.active = true
	}
	d.inflight = append(d.inflight, t)
	return true
}

// submit starts the engine job for t. done receives t after its callback.
func (b *Batch) submit(ctx context.Context, t *task, done chan<- *task) error {
	srcOff, destOff, length := t.span()
	regs := make([]kcopyd.Region, len(t.dests))
	for k, i := range t.dests {
		regs[k] = kcopyd.Region{Dev: b.o.Dests[i].Dev, Off: destOff, Len: length}
	}
	cb := func(readErr bool, writeErr uint64, err error) {
		t.err = err
		done <- t
	}
	flags := b.o.Flags
	var err error
	if t.segs[0].Kind == plan.Zero {
		t.job, err = b.client.Zero(ctx, regs, flags, cb)
	} else {
		if b.o.Sparse {
			if b.allZero(destOff, t.dests) {
				flags |= kcopyd.SkipZeroes
			} else {
				flags |= kcopyd.DetectZeroes
			}
		}
		src := kcopyd.Region{Dev: b.o.Src, Off: srcOff, Len: length}
		t.job, err = b.client.Copy(ctx, src, regs, flags, cb)
	}
	if err == nil {
		b.res.Submitted = true
	}
	return err
}

// taskDone records the result of t, as finish, and settles its segments
// unless a continuation is to be submitted.
func (b *Batch) taskDone(d *dispatcher, t *task) {
	d.inflight = slices.DeleteFunc(d.inflight, func(x *task) bool { return x == t })
	retry, stop := b.finish(t)
	d.stopping = d.stopping || stop
	if retry != nil && !stop {
		d.retries = append(d.retries, retry)
	} else {
		b.settleGroup(t.segs)
	}
	b.tick()
}

// jobError returns t's error as a *kcopyd.JobError; ok false when it is
// another error (a bug: recorded as InternalErr).
func (b *Batch) jobError(t *task) (je *kcopyd.JobError, ok bool) {
	if t.err == nil {
		return nil, true
	}
	if !errors.As(t.err, &je) {
		b.res.InternalErr = t.err
		return nil, false
	}
	return je, true
}

// report tells JobDone the outcome of t.
func (b *Batch) report(t *task, je *kcopyd.JobError) {
	if b.o.JobDone == nil {
		return
	}
	src, dest, length := t.span()
	b.o.JobDone(&JobResult{Region: t.segs[0].Region, Src: src, Dest: dest, Len: length,
		Dests: t.dests, All: len(t.dests) == len(t.segs[0].Dests), Err: je})
}
