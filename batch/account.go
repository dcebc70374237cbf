package batch

import (
	"slices"

	"github.com/kcopyd/kcopyd"
)

// finish records the result of t. It returns a continuation task for the
// live destinations when some destination failed, and stop when the batch
// must not submit more jobs.
func (b *Batch) finish(t *task) (retry *task, stop bool) {
	je, ok := b.jobError(t)
	if !ok {
		return nil, true
	}
	b.report(t, je)
	if je == nil {
		for _, s := range t.segs {
			s.completed = s.Len
		}
		return nil, false
	}
	_, _, length := t.span()
	good := t.off + min(je.Completed, length) // from the first segment's start
	b.setCompleted(t, good)
	stop = b.readFailed(t, je)
	wrote := b.writesFailed(t, je, good)
	switch {
	case je.Canceled != nil:
		b.res.Canceled = true
		return nil, true
	case b.ignore:
		// The engine went on to the end of the job.
		b.setCompleted(t, t.off+length)
		return nil, false
	case stop:
		return nil, true
	case !wrote:
		// Neither a read, a write nor a cancellation: the engine failed
		// the job for a reason the checks before the batch should have
		// caught.
		b.res.InternalErr = t.err
		return nil, true
	}
	live := b.live(t.dests)
	if len(live) == 0 {
		return nil, !b.anyLive()
	}
	if good < t.off+length {
		return &task{segs: t.segs, off: good, dests: live}, false
	}
	return nil, false
}

// setCompleted records that the first n bytes of t's segments are
// complete on its live destinations.
func (b *Batch) setCompleted(t *task, n int64) {
	var at int64
	for _, s := range t.segs {
		s.completed = max(s.completed, min(max(n-at, 0), s.Len))
		at += s.Len
	}
}

// cutRange cuts, on destination i, every segment of t that the range
// [off, off+n) of the segments (from the first one's start) touches.
func cutRange(t *task, i int, off, n int64) {
	var at int64
	for _, s := range t.segs {
		if off < at+s.Len && off+n > at {
			s.cutAt(i, off-at)
		}
		at += s.Len
	}
}

// readFailed records the read failure of t, if any. It returns true when
// it must stop the batch.
func (b *Batch) readFailed(t *task, je *kcopyd.JobError) bool {
	if je.Read == nil {
		return false
	}
	if b.res.ReadErr == nil {
		b.res.ReadErr = je.Read
	}
	if !b.ignore {
		return true
	}
	first := t.segs[0]
	b.res.ReadRanges = append(b.res.ReadRanges, je.ReadRanges...)
	// The segments are contiguous in the source and on the destinations.
	at := destRanges(je.ReadRanges, first.Src, first.Dest)
	for _, i := range t.dests {
		b.dests[i].Ranges = append(b.dests[i].Ranges, at...)
		for _, r := range at {
			cutRange(t, i, r.Off-first.Dest, r.Len)
		}
	}
	return false
}

// writesFailed records the write failures of t, dropping the failed
// destinations (not under IgnoreError). good is the prefix of the
// segments complete. It reports whether a write failed.
func (b *Batch) writesFailed(t *task, je *kcopyd.JobError, good int64) (wrote bool) {
	first := t.segs[0]
	for k, i := range t.dests {
		d := &b.dests[i]
		if k < len(je.WriteRanges) {
			d.Ranges = append(d.Ranges, je.WriteRanges[k]...)
			for _, wr := range je.WriteRanges[k] {
				cutRange(t, i, wr.Off-first.Dest, wr.Len)
			}
		}
		if k < len(je.Writes) && je.Writes[k] != nil {
			wrote = true
			cutRange(t, i, good, 1<<62)
			d.Errs = append(d.Errs, je.Writes[k])
			if !b.ignore {
				b.drop(i)
			}
		}
	}
	return wrote
}

// live returns the destinations of idx that have not been dropped.
func (b *Batch) live(idx []int) []int {
	var out []int
	for _, i := range idx {
		if !b.dests[i].Dropped {
			out = append(out, i)
		}
	}
	return out
}

func (b *Batch) anyLive() bool {
	for _, d := range b.dests {
		if !d.Dropped {
			return true
		}
	}
	return false
}

// pendingCompleted returns the bytes complete in pending segments.
func (b *Batch) pendingCompleted() int64 {
	var n int64
	for _, p := range b.pending {
		for _, s := range p {
			n += s.completed
		}
	}
	return n
}

func (b *Batch) total() int64 {
	var n int64
	for _, rg := range b.o.Regions {
		n += rg.Len
	}
	return n
}

// settleGroup marks the segments of g idle and settles their regions.
func (b *Batch) settleGroup(g []*segment) {
	for _, s := range g {
		s.active = false
	}
	for k, s := range g {
		if k == 0 || s.Region != g[k-1].Region {
			b.settle(s.Region)
		}
	}
}

// settle accounts the leading segments of region reg that are finished,
// so that pending holds only the segments in flight and those after them.
func (b *Batch) settle(reg int) {
	p := b.pending[reg]
	for len(p) > 0 && p[0].started && !p[0].active {
		b.account(p[0])
		p[0] = nil
		p = p[1:]
	}
	b.pending[reg] = p
}

// settleAll accounts every pending segment once the batch is over.
func (b *Batch) settleAll() {
	for reg, p := range b.pending {
		for _, s := range p {
			b.account(s)
		}
		b.pending[reg] = nil
	}
}

// account adds a finished segment to the totals and to the prefix known
// good on each destination.
func (b *Batch) account(s *segment) {
	if *s.left--; *s.left == 0 {
		b.npending-- // the last segment of its group
	}
	b.res.Completed += s.completed
	for i := range b.dests {
		d := &b.dests[i]
		mine, live := slices.Contains(s.Dests, i), slices.Contains(s.live, i)
		if mine && !live {
			u := &d.Unwritten[s.Region]
			*u = min(*u, s.Dest-b.o.Regions[s.Region].Dest)
		}
		if b.stuck[i][s.Region] {
			continue
		}
		good := s.Len // nothing to do for i: it reads zeroes there
		if s.Failed {
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
		d.Prefixes[s.Region] += good
		if good < s.Len {
			b.stuck[i][s.Region] = true
		}
	}
}
