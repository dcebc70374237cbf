package plan_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/plan"
)

// patternMap is a device.Extenter of size bytes that repeats data bytes
// of data then hole bytes of hole, and records how far it was asked.
type patternMap struct {
	size, data, hole int64
	asked            atomic.Int64 // the largest end of a range asked about
}

func (m *patternMap) Extents(off, length int64) ([]device.Extent, error) {
	for a := m.asked.Load(); off+length > a && !m.asked.CompareAndSwap(a, off+length); a = m.asked.Load() {
	}
	var out []device.Extent
	period := m.data + m.hole
	for pos, end := off, off+length; pos < end && len(out) < 4096; {
		in := pos % period
		e := device.Extent{Off: pos, Len: m.data - in}
		if in >= m.data {
			e = device.Extent{Off: pos, Len: period - in, Hole: true, Zero: true}
		}
		e.Len = min(e.Len, end-pos)
		out = append(out, e)
		pos += e.Len
	}
	return out, nil
}

// TestPlannerTilesAndStaysAhead checks that the planner's segments tile
// the region in order, that holes of at least MinHole become aligned
// Zero segments, and that it reads the allocation map no further than
// two Steps ahead of the segments taken.
func TestPlannerTilesAndStaysAhead(t *testing.T) {
	for _, tt := range []struct {
		name             string
		size, data, hole int64
		off, len         int64
		align            int64
	}{
		{"fragmented", 1 << 40, 4096, 128 << 10, 0, 1 << 40, 4096},
		{"small holes stay data", 1 << 30, 4096, 60 << 10, 0, 1 << 30, 512},
		{"unaligned region", 1 << 34, 3 << 20, 5 << 20, 12345, 1<<34 - 12345 - 999, 4096},
		{"all data", 1 << 40, 1 << 40, 0, 0, 1 << 40, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := &patternMap{size: tt.size, data: tt.data, hole: tt.hole}
			if tt.hole == 0 {
				m.data = tt.size + 1
			}
			rg := plan.Region{Src: tt.off, Len: tt.len, Dest: 7 << 20}
			p := &plan.Planner{Extents: m, Kind: plan.Copy, Regions: []plan.Region{rg}, ZeroFrom: []int64{plan.Unknown}, Align: tt.align,
				Warn: func(s string) { t.Errorf("warning: %s", s) }}
			pos, n := rg.Src, 0
			var failed error
			done := p.Run(context.Background(), func(s plan.Segment) bool {
				n++
				if s.Src != pos || s.Len <= 0 || s.Dest != rg.Dest+s.Src-rg.Src {
					failed = fmt.Errorf("segment %d = %+v; want one starting at %d", n, s, pos)
					return false
				}
				if s.Kind == plan.Zero && (s.Len < plan.MinHole || (s.Src-rg.Src)%tt.align != 0) {
					failed = fmt.Errorf("hole segment %+v: shorter than %d or not aligned to %d", s, plan.MinHole, tt.align)
					return false
				}
				if s.Kind == plan.Zero && (s.Src%(m.data+m.hole) < m.data || (s.Src+s.Len-1)%(m.data+m.hole) < m.data) {
					failed = fmt.Errorf("hole segment %+v covers data", s)
					return false
				}
				pos += s.Len
				if ahead := m.asked.Load() - pos; ahead > 2*plan.Step {
					failed = fmt.Errorf("after %d segments up to %d the map was read up to %d: %d bytes ahead", n, pos, pos+ahead, ahead)
					return false
				}
				return n < 20000
			})
			if failed != nil {
				t.Fatal(failed)
			}
			if done && pos != rg.Src+rg.Len {
				t.Fatalf("segments end at %d; want %d", pos, rg.Src+rg.Len)
			}
		})
	}
}

// listMap is a device.Extenter answering from a fixed list, or failing.
type listMap struct {
	exts []device.Extent
	err  error
}

func (m listMap) Extents(off, length int64) ([]device.Extent, error) {
	if m.err != nil {
		return nil, m.err
	}
	var out []device.Extent
	for _, e := range m.exts {
		if e.Off+e.Len > off && e.Off < off+length {
			lo := max(e.Off, off)
			e.Len -= lo - e.Off
			e.Off = lo
			out = append(out, e)
		}
	}
	return out, nil
}

func collect(t *testing.T, p *plan.Planner) []plan.Segment {
	t.Helper()
	var out []plan.Segment
	if !p.Run(context.Background(), func(s plan.Segment) bool { out = append(out, s); return true }) {
		t.Fatal("Run = false; want true")
	}
	return out
}

// TestPlannerHoles checks which destinations a hole is zeroed on: those
// not known to read zeroes there.
func TestPlannerHoles(t *testing.T) {
	const M = 1 << 20
	m := listMap{exts: []device.Extent{{Off: 0, Len: M}, {Off: M, Len: 2 * M, Hole: true}, {Off: 3 * M, Len: M}}}
	p := &plan.Planner{Extents: m, Regions: []plan.Region{{Src: 0, Dest: 8 * M, Len: 4 * M}}, ZeroFrom: []int64{0, plan.Unknown, 9 * M}}
	got := collect(t, p)
	want := []plan.Segment{
		{Src: 0, Dest: 8 * M, Len: M, Kind: plan.Copy, Dests: []int{0, 1, 2}},
		{Src: M, Dest: 9 * M, Len: 2 * M, Kind: plan.Zero, Dests: []int{1}},
		{Src: 3 * M, Dest: 11 * M, Len: M, Kind: plan.Copy, Dests: []int{0, 1, 2}},
	}
	if !slices.EqualFunc(got, want, func(a, b plan.Segment) bool {
		return a.Src == b.Src && a.Dest == b.Dest && a.Len == b.Len && a.Kind == b.Kind && slices.Equal(a.Dests, b.Dests)
	}) {
		t.Errorf("segments = %+v; want %+v", got, want)
	}
	p.ZeroFrom = []int64{0, 0, 0}
	if got := collect(t, p); len(got) != 3 || got[1].Kind != plan.Skip || got[1].Dests != nil {
		t.Errorf("segments with zeroed destinations = %+v; want the hole skipped", got)
	}
}

// TestPlannerMapErrors checks that a map that cannot be read makes the
// region one copy, with a warning unless the device does not support maps.
func TestPlannerMapErrors(t *testing.T) {
	for _, tt := range []struct {
		err  error
		warn bool
	}{{device.ErrNotSupported, false}, {errors.New("EIO"), true}} {
		var warned bool
		p := &plan.Planner{Extents: listMap{err: tt.err}, Regions: []plan.Region{{Src: 4096, Dest: 0, Len: 1 << 20}}, ZeroFrom: []int64{0},
			Warn: func(string) { warned = true }}
		got := collect(t, p)
		if len(got) != 1 || got[0].Kind != plan.Copy || got[0].Len != 1<<20 || warned != tt.warn {
			t.Errorf("map error %v: segments %+v, warned %v; want one copy, warned %v", tt.err, got, warned, tt.warn)
		}
	}
}

// TestPlannerNoMap checks the plan without a map: one segment per
// non-empty region, of the planner's kind, for the region's destinations.
func TestPlannerNoMap(t *testing.T) {
	p := &plan.Planner{Kind: plan.Zero, Regions: []plan.Region{{Dest: 0, Len: 10}, {Dest: 10, Len: 0}, {Dest: 20, Len: 5, Dests: []int{1}}}, ZeroFrom: []int64{plan.Unknown, plan.Unknown}}
	got := collect(t, p)
	if len(got) != 2 || got[0].Region != 0 || !slices.Equal(got[0].Dests, []int{0, 1}) || got[1].Region != 2 || !slices.Equal(got[1].Dests, []int{1}) || got[1].Kind != plan.Zero {
		t.Errorf("segments = %+v; want regions 0 and 2 as Zero segments", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if p.Run(ctx, func(plan.Segment) bool { return true }) {
		t.Error("Run with a done context = true; want false")
	}
}

// TestPlannerByOffset checks that ByOffset hands the regions out by source
// offset (by destination offset when zeroing), each segment still naming
// its region's index, and that without it they go as listed.
func TestPlannerByOffset(t *testing.T) {
	regions := []plan.Region{{Src: 300, Dest: 0, Len: 10}, {Src: 0, Dest: 200, Len: 10}, {Src: 100, Dest: 100, Len: 10}}
	for _, tt := range []struct {
		kind     plan.Kind
		byOffset bool
		want     []int // regions, in the order planned
	}{
		{plan.Copy, false, []int{0, 1, 2}},
		{plan.Copy, true, []int{1, 2, 0}},
		{plan.Zero, true, []int{0, 2, 1}},
	} {
		p := &plan.Planner{Kind: tt.kind, Regions: regions, ZeroFrom: []int64{plan.Unknown}, ByOffset: tt.byOffset}
		var got []int
		for _, s := range collect(t, p) {
			got = append(got, s.Region)
			if rg := regions[s.Region]; s.Dest != rg.Dest || s.Len != rg.Len || (tt.kind == plan.Copy && s.Src != rg.Src) {
				t.Errorf("%v, ByOffset %v: segment %+v is not region %d %+v", tt.kind, tt.byOffset, s, s.Region, rg)
			}
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%v, ByOffset %v: regions planned in the order %v; want %v", tt.kind, tt.byOffset, got, tt.want)
		}
	}
}

// sizedMap is a patternMap with a Size, which the planner's look-ahead
// needs, and that counts its calls.
type sizedMap struct {
	*patternMap
	calls atomic.Int64
}

func (m *sizedMap) Size() int64 { return m.size }

func (m *sizedMap) Extents(off, length int64) ([]device.Extent, error) {
	m.calls.Add(1)
	return m.patternMap.Extents(off, length)
}

// TestPlannerLookAhead checks that under ByOffset many small regions in
// random order are planned from few map reads (LookAhead at a time), and
// into exactly the segments planned region by region without it.
func TestPlannerLookAhead(t *testing.T) {
	const size = 256 << 20
	rnd := rand.New(rand.NewPCG(1, 2))
	var regions []plan.Region
	for _, slot := range rnd.Perm(size / (64 << 10))[:2000] {
		off := int64(slot) * 64 << 10
		regions = append(regions, plan.Region{Src: off, Dest: off, Len: 64 << 10})
	}
	// 8 KiB of data, then a 200 KiB hole: regions see data, holes and both.
	m := &sizedMap{patternMap: &patternMap{size: size, data: 8 << 10, hole: 200 << 10}}
	p := &plan.Planner{Extents: m, Regions: regions, ZeroFrom: []int64{plan.Unknown}, Align: 4096}
	want := collect(t, p)
	plain := m.calls.Load()
	m.calls.Store(0)
	p.ByOffset = true
	got := collect(t, p)
	if calls := m.calls.Load(); calls > size/plan.LookAhead*8 || calls*10 > plain {
		t.Errorf("%d map reads under ByOffset (%d region by region); want at most a few per LookAhead", calls, plain)
	}
	byRegion := func(a, b plan.Segment) int { return cmp.Or(cmp.Compare(a.Region, b.Region), cmp.Compare(a.Src, b.Src)) }
	slices.SortFunc(want, byRegion)
	slices.SortFunc(got, byRegion)
	if !slices.EqualFunc(got, want, func(a, b plan.Segment) bool {
		return a.Region == b.Region && a.Src == b.Src && a.Dest == b.Dest && a.Len == b.Len && a.Kind == b.Kind && slices.Equal(a.Dests, b.Dests)
	}) {
		t.Errorf("segments under ByOffset differ from those planned region by region (%d against %d)", len(got), len(want))
	}
}
