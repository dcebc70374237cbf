package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/kcopyd/kcopyd/device"
)

// minHole is the smallest source hole turned into its own job; smaller
// holes are copied (and their zeroes detected) with the data around them.
const minHole = 64 << 10

// planStep bounds both the range one Extents call asks about and the
// length of a segment the planner emits: the planner reads the source's
// allocation map no further than about one step ahead of what it hands
// out, so its memory does not depend on the source's size or
// fragmentation, and no single call delays a cancellation for long.
const planStep = 1 << 30

// A planner turns regions into segments, in order, as the run asks for
// them. With an extent map (sparse copies), source holes and known-zero
// extents of at least minHole bytes, aligned inwards to align, become
// Zero segments for the destinations that do not read zeroes there yet,
// or skipped segments; everything else is copied.
type planner struct {
	ext     device.Extenter // nil: every region is one segment of kind
	kind    segKind         // segCopy or segZero, for regions planned without ext
	regions []region
	dests   []*dest
	align   int64
	// warn reports that the allocation map could not be read; the rest
	// of that region is copied byte for byte. Called on the planner's
	// goroutine.
	warn func(string)
	// pm, under --map, cuts the segments by the map's state: only untried
	// ranges are run.
	pm *progressMap
}

// run sends the segments of every region, in order, on out, and closes
// out when it is done or ctx is.
func (p *planner) run(ctx context.Context, out chan<- *segment) {
	defer close(out)
	emit := func(s *segment) bool {
		select {
		case out <- s:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if p.pm != nil {
		plain := emit
		emit = func(s *segment) bool { return p.pm.split(s, plain) }
	}
	for ri, rg := range p.regions {
		if rg.len == 0 {
			continue // an empty region (--length 0, an empty source) is done
		}
		if p.ext == nil {
			if !emit(&segment{reg: ri, src: rg.src, dest: rg.dest, len: rg.len, kind: p.kind, dests: p.regionDests(rg)}) {
				return
			}
			continue
		}
		if !p.planRegion(ctx, ri, emit) {
			return
		}
	}
}

// regionDests returns the destinations of rg by index.
func (p *planner) regionDests(rg region) []int {
	if rg.dests != nil {
		return rg.dests
	}
	all := make([]int, len(p.dests))
	for i := range all {
		all[i] = i
	}
	return all
}

// regionPlan is the state of planning one region from its allocation
// map: data from start on is not handed out yet, and [holeOff, holeEnd),
// when not empty, is a run of holes right after it.
type regionPlan struct {
	p       *planner
	ri      int
	rg      region
	all     []int
	emit    func(*segment) bool
	start   int64
	holeOff int64
	holeEnd int64
}

// planRegion reads region ri's allocation map one step at a time and
// emits its segments. It returns false when ctx ended it.
func (p *planner) planRegion(ctx context.Context, ri int, emit func(*segment) bool) bool {
	rg := p.regions[ri]
	rp := &regionPlan{p: p, ri: ri, rg: rg, all: p.regionDests(rg), emit: emit, start: rg.src}
	end := rg.srcEnd()
	for pos := rg.src; pos < end; {
		if ctx.Err() != nil {
			return false
		}
		exts, err := p.ext.Extents(pos, min(end-pos, planStep))
		if err == nil && len(exts) == 0 {
			err = errors.New("device reported no extents")
		}
		for _, e := range exts {
			if err != nil {
				break
			}
			if e.Off != pos || e.Len <= 0 {
				err = fmt.Errorf("device reported extent [%d, +%d) where [%d, ...) was expected", e.Off, e.Len, pos)
				break
			}
			l := min(e.Len, end-pos)
			if !rp.add(pos, l, e.Hole || e.Zero) {
				return false
			}
			pos += l
			if pos >= end {
				break
			}
		}
		if err != nil {
			if !errors.Is(err, device.ErrNotSupported) {
				p.warn(fmt.Sprintf("cannot read the source's allocation map at offset %d (%v); copying the rest of the region byte for byte", pos, err))
			}
			rp.holeOff, rp.holeEnd = 0, 0
			break
		}
	}
	return rp.finish()
}

// add takes the next piece [off, off+n) of the map.
func (rp *regionPlan) add(off, n int64, zero bool) bool {
	if zero {
		if rp.holeEnd != off {
			rp.holeOff = off
		}
		rp.holeEnd = off + n
		if rp.holeEnd-rp.holeOff >= planStep {
			return rp.flushHole(false)
		}
		return true
	}
	if rp.holeEnd > rp.holeOff && !rp.flushHole(true) {
		return false
	}
	if off+n-rp.start >= planStep {
		// A long run of data: hand out what is aligned so far.
		if cut := rp.alignDown(off + n); cut > rp.start {
			return rp.data(cut)
		}
	}
	return true
}

// flushHole hands out the hole run [holeOff, holeEnd) when, aligned
// inwards, it is at least minHole long (with the data before it); a
// shorter one stays data. Unless whole, the run goes on past holeEnd, and
// its unaligned tail stays pending.
func (rp *regionPlan) flushHole(whole bool) bool {
	s := rp.rg.src + roundUp(rp.holeOff-rp.rg.src, rp.p.align)
	e := rp.alignDown(rp.holeEnd)
	if rp.holeEnd == rp.rg.srcEnd() {
		e = rp.holeEnd // the region's end is as aligned as it must be
	}
	if e-s < minHole {
		if whole {
			rp.holeOff, rp.holeEnd = 0, 0
		}
		return true
	}
	if !rp.data(s) || !rp.hole(s, e) {
		return false
	}
	rp.holeOff = e
	if whole || rp.holeOff == rp.holeEnd {
		rp.holeOff, rp.holeEnd = 0, 0
	}
	return true
}

// finish hands out what is left of the region.
func (rp *regionPlan) finish() bool {
	if rp.holeEnd > rp.holeOff && !rp.flushHole(true) {
		return false
	}
	return rp.data(rp.rg.srcEnd())
}

// data hands out [start, end) as a copy segment.
func (rp *regionPlan) data(end int64) bool {
	if end <= rp.start {
		return true
	}
	rg := rp.rg
	s := &segment{reg: rp.ri, src: rp.start, dest: rg.dest + rp.start - rg.src, len: end - rp.start, kind: segCopy, dests: rp.all}
	rp.start = end
	return rp.emit(s)
}

// hole hands out the source hole [off, end): a Zero segment for the
// destinations that do not read zeroes there, or a skipped one.
func (rp *regionPlan) hole(off, end int64) bool {
	rg := rp.rg
	dOff := rg.dest + off - rg.src
	var zd []int
	for _, i := range rp.all {
		if rp.p.dests[i].zeroFrom > dOff {
			zd = append(zd, i)
		}
	}
	kind := segZero
	if len(zd) == 0 {
		kind = segSkip
	}
	rp.start = end
	return rp.emit(&segment{reg: rp.ri, src: off, dest: dOff, len: end - off, kind: kind, dests: zd})
}

// alignDown rounds off down to the alignment, counted from the region's
// start.
func (rp *regionPlan) alignDown(off int64) int64 {
	return rp.rg.src + (off-rp.rg.src)/rp.p.align*rp.p.align
}

func roundUp(n, a int64) int64 { return (n + a - 1) / a * a }
