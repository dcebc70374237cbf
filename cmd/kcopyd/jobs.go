package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
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

	dropped bool           // a write failed: later jobs leave it out (not under --ignore-errors)
	errs    []error        // write, zeroing, flush and close errors
	ranges  []kcopyd.Range // destination byte ranges that did not receive the right data
	cmp     *cmpResult     // --verify result
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
	completed int64 // bytes from the segment's start known complete on its live destinations
}

// task is one submitted engine job: a segment from off on.
type task struct {
	seg   *segment
	off   int64
	dests []int
	job   *kcopyd.Job
	err   error
}

// engineRun runs the segments of a copy or zero command on a client.
type engineRun struct {
	client  *kcopyd.Client
	src     device.Device // nil for zero
	dests   []*dest
	regions []region
	segs    []*segment
	maxJobs int
	flags   kcopyd.Flags // IgnoreError, WriteSeq
	sparse  bool         // detect or skip zero chunks
	ignore  bool
	prog    progress

	readErr     error          // first source read error
	readRanges  []kcopyd.Range // unreadable source ranges (--ignore-errors)
	internalErr error          // a job was refused: a bug in the checks before it
	canceled    bool           // the context stopped dispatch
	submitted   bool           // at least one job was submitted
}

// run submits the segments in order, at most maxJobs at once, and waits
// until every submitted job finished. It returns when the work is done,
// the context is canceled, a read error stops the run (not under
// --ignore-errors) or every destination failed.
func (r *engineRun) run(ctx context.Context) {
	done := make(chan *task, r.maxJobs+1)
	var (
		inflight []*task
		retries  []*task
		next     int
		stopping bool
		ctxDone  = ctx.Done()
	)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		for !stopping && len(inflight) < r.maxJobs {
			var t *task
			switch {
			case len(retries) > 0:
				t, retries = retries[0], retries[1:]
			case next < len(r.segs):
				seg := r.segs[next]
				next++
				if seg.kind == segSkip {
					seg.completed = seg.len
					continue
				}
				t = &task{seg: seg, dests: r.live(seg.dests)}
			}
			if t == nil {
				break
			}
			if len(t.dests) == 0 {
				// Every destination of the segment was dropped.
				stopping = !r.anyLive()
				continue
			}
			if err := r.submit(ctx, t, done); err != nil {
				if ctx.Err() != nil {
					r.canceled = true
				} else {
					r.internalErr = err
				}
				stopping = true
				break
			}
			inflight = append(inflight, t)
		}
		if len(inflight) == 0 {
			break
		}
		select {
		case t := <-done:
			inflight = slices.DeleteFunc(inflight, func(x *task) bool { return x == t })
			if retry, stop := r.finish(t); stop {
				stopping = true
			} else if retry != nil {
				retries = append(retries, retry)
			}
		case <-ctxDone:
			ctxDone = nil
			r.canceled = true
			stopping = true
		case <-tick.C:
			r.prog.set(r.progress(inflight))
		}
	}
	if ctx.Err() != nil && r.incomplete() {
		r.canceled = true
	}
	r.prog.set(r.progress(nil))
}

// submit starts the engine job for t. done receives t after its callback.
func (r *engineRun) submit(ctx context.Context, t *task, done chan<- *task) error {
	seg := t.seg
	length := seg.len - t.off
	regs := make([]kcopyd.Region, len(t.dests))
	allZero := true
	for k, i := range t.dests {
		regs[k] = kcopyd.Region{Dev: r.dests[i].loc.dev, Off: seg.dest + t.off, Len: length}
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

// finish records the result of t. It returns a continuation task for the
// live destinations when some destination failed, and stop when the run
// must not submit more jobs.
func (r *engineRun) finish(t *task) (retry *task, stop bool) {
	seg := t.seg
	if t.err == nil {
		seg.completed = seg.len
		return nil, false
	}
	var je *kcopyd.JobError
	if !errors.As(t.err, &je) {
		r.internalErr = t.err
		return nil, true
	}
	length := seg.len - t.off
	seg.completed = max(seg.completed, t.off+min(je.Completed, length))
	if je.Read != nil {
		if r.readErr == nil {
			r.readErr = je.Read
		}
		if r.ignore {
			r.readRanges = append(r.readRanges, je.ReadRanges...)
			for _, i := range t.dests {
				for _, rr := range je.ReadRanges {
					r.dests[i].ranges = append(r.dests[i].ranges, kcopyd.Range{Off: rr.Off - seg.src + seg.dest, Len: rr.Len})
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
		}
		if k < len(je.Writes) && je.Writes[k] != nil {
			wrote = true
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

// progress returns the bytes finished: completed segments plus the
// progress of the jobs in flight.
func (r *engineRun) progress(inflight []*task) int64 {
	var n int64
	for _, s := range r.segs {
		n += s.completed
	}
	for _, t := range inflight {
		n += t.job.Progress()
	}
	return n
}

// completed returns the bytes of the regions known complete.
func (r *engineRun) completed() int64 {
	var n int64
	for _, s := range r.segs {
		n += s.completed
	}
	return n
}

func (r *engineRun) incomplete() bool {
	for _, s := range r.segs {
		if s.completed < s.len {
			return true
		}
	}
	return false
}

// regionPrefixes returns, per region, the bytes from its start known
// complete: segments in order up to the first incomplete one.
func (r *engineRun) regionPrefixes() []int64 {
	out := make([]int64, len(r.regions))
	stopped := make([]bool, len(r.regions))
	for _, s := range r.segs {
		if stopped[s.reg] {
			continue
		}
		out[s.reg] += s.completed
		if s.completed < s.len {
			stopped[s.reg] = true
		}
	}
	return out
}

// flush flushes every destination that has a volatile cache. Errors are
// recorded on the destination.
func (r *engineRun) flush() {
	for i, d := range r.dests {
		if f, ok := d.loc.dev.(device.Flusher); ok {
			if err := f.Flush(); err != nil {
				d.errs = append(d.errs, fmt.Errorf("flush: %w", err))
				if !d.dropped {
					d.dropped = true
					r.prog.fail(i)
				}
			}
		}
	}
}

// planSegments splits the regions into segments. With sparse, holes and
// known-zero extents of src (device.Extenter) become Zero jobs for the
// destinations that do not read zeroes there yet, or nothing at all. Hole
// boundaries are rounded inwards to align bytes.
func planSegments(src device.Device, regions []region, dests []*dest, sparse bool, align int64) ([]*segment, []string) {
	all := make([]int, len(dests))
	for i := range all {
		all[i] = i
	}
	var (
		segs     []*segment
		warnings []string
	)
	ext, _ := src.(device.Extenter)
	for ri, rg := range regions {
		if rg.len == 0 {
			continue // an empty region (--length 0, an empty source) is done
		}
		if !sparse || ext == nil {
			segs = append(segs, &segment{reg: ri, src: rg.src, dest: rg.dest, len: rg.len, kind: segCopy, dests: all})
			continue
		}
		holes, err := sourceHoles(ext, rg.src, rg.len, align)
		if err != nil && !errors.Is(err, device.ErrNotSupported) {
			warnings = append(warnings, fmt.Sprintf("cannot read the source's allocation map (%v); copying every byte", err))
		}
		pos := rg.src
		addData := func(end int64) {
			if end > pos {
				segs = append(segs, &segment{reg: ri, src: pos, dest: rg.dest + pos - rg.src, len: end - pos, kind: segCopy, dests: all})
			}
		}
		for _, h := range holes {
			addData(h.Off)
			dOff := rg.dest + h.Off - rg.src
			var zd []int
			for i, d := range dests {
				if d.zeroFrom > dOff {
					zd = append(zd, i)
				}
			}
			kind := segZero
			if len(zd) == 0 {
				kind = segSkip
			}
			segs = append(segs, &segment{reg: ri, src: h.Off, dest: dOff, len: h.Len, kind: kind, dests: zd})
			pos = h.Off + h.Len
		}
		addData(rg.src + rg.len)
	}
	return segs, warnings
}

// minHole is the smallest source hole turned into its own job; smaller
// holes are copied (and their zeroes detected) with the data around them.
const minHole = 64 << 10

// sourceHoles returns the ranges of [off, off+length) that src reports as
// holes or known zeroes, merged, aligned inwards to align, and at least
// minHole long. On an error it returns the holes found so far.
func sourceHoles(ext device.Extenter, off, length, align int64) ([]kcopyd.Range, error) {
	var raw []kcopyd.Range
	end := off + length
	for pos := off; pos < end; {
		exts, err := ext.Extents(pos, end-pos)
		if err != nil {
			return nil, err
		}
		if len(exts) == 0 {
			return nil, errors.New("device reported no extents")
		}
		for _, e := range exts {
			if e.Off != pos || e.Len <= 0 {
				return nil, fmt.Errorf("device reported extent [%d, +%d) where [%d, ...) was expected", e.Off, e.Len, pos)
			}
			l := min(e.Len, end-pos)
			if e.Hole || e.Zero {
				if n := len(raw); n > 0 && raw[n-1].Off+raw[n-1].Len == pos {
					raw[n-1].Len += l
				} else {
					raw = append(raw, kcopyd.Range{Off: pos, Len: l})
				}
			}
			pos += l
			if pos >= end {
				break
			}
		}
	}
	if align < 1 {
		align = 1
	}
	var out []kcopyd.Range
	for _, h := range raw {
		s := off + roundUp(h.Off-off, align)
		e := off + (h.Off+h.Len-off)/align*align
		if h.Off+h.Len == end {
			e = end // the region's end is as aligned as it must be
		}
		if e-s >= minHole {
			out = append(out, kcopyd.Range{Off: s, Len: e - s})
		}
	}
	return out, nil
}

func roundUp(n, a int64) int64 { return (n + a - 1) / a * a }

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
