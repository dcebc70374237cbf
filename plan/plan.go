// Package plan turns regions to copy or zero into segments, each the work
// of one engine job, in order. Given the source's allocation map
// (device.Extenter), a sparse plan reads only the data: source holes and
// known-zero extents of at least MinHole bytes become Zero segments for
// the destinations that do not read zeroes there yet, or Skip segments
// when every destination does.
//
// The planner reads the allocation map at most one Step ahead of the
// segments it has handed out, so its memory does not depend on the
// source's size or fragmentation: a 1 PiB sparse device plans in constant
// space, and a caller that stops taking segments stops the map reads too.
//
// Segments are values; package batch runs them on a kcopyd.Client.
package plan

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/kcopyd/kcopyd/device"
)

// MinHole is the smallest source hole turned into its own segment; smaller
// holes are copied (and their zeroes detected) with the data around them.
const MinHole = 64 << 10

// Step bounds both the range one Extents call asks about and the length of
// a segment the planner emits from a map: no single call delays a
// cancellation for long.
const Step = 1 << 30

// Kind says how a Segment is processed.
type Kind int

const (
	Copy Kind = iota // an engine Copy job
	Zero             // an engine Zero job
	Skip             // nothing to do: a hole on destinations that read zeroes already
)

// String returns "copy", "zero" or "skip".
func (k Kind) String() string {
	switch k {
	case Copy:
		return "copy"
	case Zero:
		return "zero"
	case Skip:
		return "skip"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// A Region is a byte range to copy from the source (Src) to every
// destination (Dest, the same offset on each), or to zero (Src unused).
type Region struct {
	Src, Dest, Len int64 // bytes
	// Dests lists the destinations, by index, the region is for; nil
	// means all.
	Dests []int
}

// Has reports whether r is for destination i.
func (r Region) Has(i int) bool {
	if r.Dests == nil {
		return true
	}
	for _, d := range r.Dests {
		if d == i {
			return true
		}
	}
	return false
}

// A Segment is a piece of a region processed by one engine job.
type Segment struct {
	Region         int   // index of the region in Planner.Regions
	Src, Dest, Len int64 // bytes; Dest on every destination of the segment
	Kind           Kind
	// Dests lists the destinations, by index, the segment is for: every
	// destination of the region for Copy, those that do not read zeroes
	// there for Zero, none for Skip.
	Dests []int
	// Failed marks a Skip segment that is not complete: a range that
	// failed before (set by a caller's filter, such as a resumed map).
	Failed bool
}

// A Planner hands out the segments of its regions, in order.
type Planner struct {
	// Extents is the source's allocation map. Nil: every region is one
	// segment of Kind.
	Extents device.Extenter
	// Kind is the kind of the segments planned without a map: Copy or
	// Zero. With a map, data is Copy.
	Kind    Kind
	Regions []Region
	// ZeroFrom holds, per destination, the offset from which it reads
	// zeroes before the run (0 for a new file, its old size for a grown
	// one, math.MaxInt64 when unknown). Its length is the number of
	// destinations.
	ZeroFrom []int64
	// Align is the alignment, counted from each region's start, to which
	// hole segments are cut inwards (the largest OffsetAlign of the
	// devices). Default 1.
	Align int64
	// Warn, when not nil, is told that the allocation map could not be
	// read; the rest of that region is copied byte for byte. It is
	// called on Run's goroutine.
	Warn func(string)
	// ByOffset hands the regions out in ascending order of Src (of Dest
	// when Kind is Zero) instead of as listed; Segment.Region still
	// indexes Regions. The source is then read forwards, the destination
	// written forwards, and adjacent regions follow on, so package batch
	// can join them into one job. Set it only when the regions are
	// independent, as those of a run with many jobs in flight must be:
	// no region writes what another reads or writes. Default false.
	ByOffset bool
}

// LookAhead is how much of the allocation map the planner asks for at
// once under ByOffset, beyond the region it plans (within the source's
// size): one Extents call then serves every small region inside it.
const LookAhead = 64 << 20

// Run calls emit with the segments of every region, in order (as listed,
// or by offset under ByOffset), until emit
// returns false or ctx is done; it returns false then, true when every
// segment was handed out. Segments tile each region without gaps. A
// device.ErrNotSupported from Extents falls back to copying silently;
// other map errors are told to Warn and fall back the same way.
func (p *Planner) Run(ctx context.Context, emit func(Segment) bool) bool {
	order := p.order()
	var ahead []device.Extent // the map read last, under ByOffset
	for k := range p.Regions {
		ri := k
		if order != nil {
			ri = order[k]
		}
		rg := p.Regions[ri]
		if rg.Len == 0 {
			continue // an empty region is done
		}
		if ctx.Err() != nil {
			return false
		}
		if p.Extents == nil {
			if !emit(Segment{Region: ri, Src: rg.Src, Dest: rg.Dest, Len: rg.Len, Kind: p.Kind, Dests: p.regionDests(rg)}) {
				return false
			}
			continue
		}
		if !p.planRegion(ctx, ri, &ahead, emit) {
			return false
		}
	}
	return true
}

// order returns the indexes of Regions in the order Run plans them, or
// nil for the order they are listed in.
func (p *Planner) order() []int {
	if !p.ByOffset {
		return nil
	}
	key := func(rg Region) int64 {
		if p.Kind == Zero && p.Extents == nil {
			return rg.Dest
		}
		return rg.Src
	}
	order := make([]int, len(p.Regions))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		ra, rb := p.Regions[a], p.Regions[b]
		return cmp.Or(cmp.Compare(key(ra), key(rb)), cmp.Compare(ra.Dest, rb.Dest))
	})
	return order
}

// regionDests returns the destinations of rg by index.
func (p *Planner) regionDests(rg Region) []int {
	if rg.Dests != nil {
		return rg.Dests
	}
	all := make([]int, len(p.ZeroFrom))
	for i := range all {
		all[i] = i
	}
	return all
}

func (p *Planner) align() int64 { return max(p.Align, 1) }

// regionPlan is the state of planning one region from its allocation
// map: data from start on is not handed out yet, and [holeOff, holeEnd),
// when not empty, is a run of holes right after it.
type regionPlan struct {
	p       *Planner
	ahead   *[]device.Extent // see Planner.extents
	ri      int
	rg      Region
	all     []int
	emit    func(Segment) bool
	start   int64
	holeOff int64
	holeEnd int64
}

// planRegion reads region ri's allocation map one step at a time and
// emits its segments. It returns false when ctx or emit ended it.
func (p *Planner) planRegion(ctx context.Context, ri int, ahead *[]device.Extent, emit func(Segment) bool) bool {
	rg := p.Regions[ri]
	rp := &regionPlan{p: p, ahead: ahead, ri: ri, rg: rg, all: p.regionDests(rg), emit: emit, start: rg.Src}
	end := rg.Src + rg.Len
	for pos := rg.Src; pos < end; {
		if ctx.Err() != nil {
			return false
		}
		n, err := rp.step(pos, end)
		if n < 0 {
			return false
		}
		pos += n
		if err != nil {
			if !errors.Is(err, device.ErrNotSupported) && p.Warn != nil {
				p.Warn(fmt.Sprintf("cannot read the source's allocation map at offset %d (%v); copying the rest of the region byte for byte", pos, err))
			}
			rp.holeOff, rp.holeEnd = 0, 0
			break
		}
	}
	return rp.finish()
}

// step reads the map from pos (at most Step, not past end) and adds it.
// It returns the bytes added, -1 when emit stopped, and the map's error.
func (rp *regionPlan) step(pos, end int64) (int64, error) {
	exts, err := rp.p.extents(pos, end, rp.ahead)
	if err == nil && len(exts) == 0 {
		err = errors.New("device reported no extents")
	}
	start := pos
	for _, e := range exts {
		if err != nil || pos >= end {
			break
		}
		if e.Off != pos || e.Len <= 0 {
			err = fmt.Errorf("device reported extent [%d, +%d) where [%d, ...) was expected", e.Off, e.Len, pos)
			break
		}
		l := min(e.Len, end-pos)
		if !rp.add(pos, l, e.Hole || e.Zero) {
			return -1, nil
		}
		pos += l
	}
	return pos - start, err
}

// extents returns the map from pos on, at most Step of it and not past
// end. Under ByOffset it asks for LookAhead at least (within the source's
// size, when the Extenter has a Size method), keeps the answer in *ahead,
// and answers from it while it covers pos: the regions planned next start
// at or after this one.
func (p *Planner) extents(pos, end int64, ahead *[]device.Extent) ([]device.Extent, error) {
	n := min(end-pos, Step)
	if !p.ByOffset {
		return p.Extents.Extents(pos, n)
	}
	if exts := clip(*ahead, pos, pos+n); exts != nil {
		return exts, nil
	}
	*ahead = nil
	ask := n
	if d, ok := p.Extents.(interface{ Size() int64 }); ok {
		ask = max(n, min(LookAhead, d.Size()-pos))
	}
	exts, err := p.Extents.Extents(pos, ask)
	if err != nil || ask == n {
		return exts, err
	}
	*ahead = exts
	return clip(exts, pos, pos+n), nil
}

// clip returns the extents of exts (sorted, adjacent) within [off, end),
// the first starting at off, or nil when exts do not cover off. The
// result is a new slice: exts is not changed.
func clip(exts []device.Extent, off, end int64) []device.Extent {
	i, _ := slices.BinarySearchFunc(exts, off, func(e device.Extent, off int64) int {
		switch {
		case e.Off+e.Len <= off:
			return -1
		case e.Off > off:
			return 1
		}
		return 0
	})
	if i == len(exts) || exts[i].Off > off {
		return nil
	}
	var out []device.Extent
	for _, e := range exts[i:] {
		if e.Off >= end {
			break
		}
		e.Len = min(e.Off+e.Len, end) - max(e.Off, off)
		e.Off = max(e.Off, off)
		out = append(out, e)
	}
	return out
}

// add takes the next piece [off, off+n) of the map.
func (rp *regionPlan) add(off, n int64, zero bool) bool {
	if zero {
		if rp.holeEnd != off {
			rp.holeOff = off
		}
		rp.holeEnd = off + n
		if rp.holeEnd-rp.holeOff >= Step {
			return rp.flushHole(false)
		}
		return true
	}
	if rp.holeEnd > rp.holeOff && !rp.flushHole(true) {
		return false
	}
	if off+n-rp.start >= Step {
		// A long run of data: hand out what is aligned so far.
		if cut := rp.alignDown(off + n); cut > rp.start {
			return rp.data(cut)
		}
	}
	return true
}

// flushHole hands out the hole run [holeOff, holeEnd) when, aligned
// inwards, it is at least MinHole long (with the data before it); a
// shorter one stays data. Unless whole, the run goes on past holeEnd, and
// its unaligned tail stays pending.
func (rp *regionPlan) flushHole(whole bool) bool {
	a := rp.p.align()
	s := rp.rg.Src + (rp.holeOff-rp.rg.Src+a-1)/a*a
	e := rp.alignDown(rp.holeEnd)
	if rp.holeEnd == rp.rg.Src+rp.rg.Len {
		e = rp.holeEnd // the region's end is as aligned as it must be
	}
	if e-s < MinHole {
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
	return rp.data(rp.rg.Src + rp.rg.Len)
}

// data hands out [start, end) as a copy segment.
func (rp *regionPlan) data(end int64) bool {
	if end <= rp.start {
		return true
	}
	rg := rp.rg
	s := Segment{Region: rp.ri, Src: rp.start, Dest: rg.Dest + rp.start - rg.Src, Len: end - rp.start, Kind: Copy, Dests: rp.all}
	rp.start = end
	return rp.emit(s)
}

// hole hands out the source hole [off, end): a Zero segment for the
// destinations that do not read zeroes there, or a Skip one.
func (rp *regionPlan) hole(off, end int64) bool {
	rg := rp.rg
	dOff := rg.Dest + off - rg.Src
	var zd []int
	for _, i := range rp.all {
		if rp.p.ZeroFrom[i] > dOff {
			zd = append(zd, i)
		}
	}
	kind := Zero
	if len(zd) == 0 {
		kind = Skip
	}
	rp.start = end
	return rp.emit(Segment{Region: rp.ri, Src: off, Dest: dOff, Len: end - off, Kind: kind, Dests: zd})
}

// alignDown rounds off down to the alignment, counted from the region's
// start.
func (rp *regionPlan) alignDown(off int64) int64 {
	a := rp.p.align()
	return rp.rg.Src + (off-rp.rg.Src)/a*a
}

// Unknown is the ZeroFrom of a destination whose contents are unknown.
const Unknown = math.MaxInt64
