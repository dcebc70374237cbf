package main

import (
	loc "github.com/kcopyd/kcopyd/location"
)

// maxOffset is the largest byte offset a region may reach.
const maxOffset = 1<<63 - 1

// checkAliases refuses a run in which two locations that are one storage
// under different names would touch overlapping bytes: a destination and
// the source (src, nil for zero), or two destinations
// (location.CheckAliases, given the regions' source and per-destination
// ranges).
func checkAliases(regions []region, src *location, locs []*location) error {
	var srcs []loc.Range
	dsts := make([][]loc.Range, len(locs))
	for _, rg := range regions {
		if src != nil {
			srcs = append(srcs, loc.Range{Off: rg.src, Len: rg.len, Line: rg.line})
		}
		for i := range locs {
			if rg.has(i) {
				dsts[i] = append(dsts[i], loc.Range{Off: rg.dest, Len: rg.len, Line: rg.line})
			}
		}
	}
	return loc.CheckAliases(src, srcs, locs, dsts)
}
