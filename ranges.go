package kcopyd

import (
	"slices"
	"sort"
)

// MaxRanges bounds the ranges a JobError reports in each list (ReadRanges,
// and WriteRanges for each destination), and so the memory a job holds
// however many of its chunks fail. Ranges that touch or overlap are merged
// as they are recorded; past MaxRanges, the two ranges with the smallest
// gap between them are merged into one that spans the gap. A reported
// range may then include bytes that did not fail, never the reverse: every
// failed byte stays inside a reported range.
const MaxRanges = 1024

// rangeSet is a sorted list of disjoint, non-touching ranges, merged on
// insert and bounded by MaxRanges. The zero value is empty.
type rangeSet struct {
	rs []Range
}

// add records r, merging it with the ranges it touches or overlaps.
func (s *rangeSet) add(r Range) {
	if r.Len <= 0 {
		return
	}
	// i: the first range that ends at or after r starts (it may touch r).
	i := sort.Search(len(s.rs), func(k int) bool { return s.rs[k].Off+s.rs[k].Len >= r.Off })
	// k: one past the last range that starts at or before r ends.
	k := i
	end := r.Off + r.Len
	for k < len(s.rs) && s.rs[k].Off <= end {
		k++
	}
	if i < k {
		r.Off = min(r.Off, s.rs[i].Off)
		end = max(end, s.rs[k-1].Off+s.rs[k-1].Len)
		r.Len = end - r.Off
	}
	s.rs = slices.Replace(s.rs, i, k, r)
	if len(s.rs) > MaxRanges {
		s.coarsen()
	}
}

// coarsen merges the two neighbours with the smallest gap between them.
func (s *rangeSet) coarsen() {
	best := 1
	for k := 2; k < len(s.rs); k++ {
		if gap(s.rs[k-1], s.rs[k]) < gap(s.rs[best-1], s.rs[best]) {
			best = k
		}
	}
	a, b := s.rs[best-1], s.rs[best]
	s.rs[best-1] = Range{Off: a.Off, Len: b.Off + b.Len - a.Off}
	s.rs = slices.Delete(s.rs, best, best+1)
}

func gap(a, b Range) int64 { return b.Off - (a.Off + a.Len) }

// list returns a copy of the ranges, or nil when there are none.
func (s *rangeSet) list() []Range {
	if len(s.rs) == 0 {
		return nil
	}
	return slices.Clone(s.rs)
}
