package main

import (
	"fmt"
)

// maxOffset is the largest byte offset a region may reach.
const maxOffset = 1<<63 - 1

// checkAliases refuses a run in which two locations that are one storage
// under different names would touch overlapping bytes: a destination and
// the source (src, nil for zero), or two destinations. Locations are
// compared by placement, the store they lie in and their offset there, so
// that a loop device and its backing file, two loop devices over one file,
// a partition and its disk, and a file under any name (symbolic link, hard
// link, /proc/self/fd/N, bind mount) are recognised. Destinations given
// twice under names that stat tells apart are refused here too.
func checkAliases(regions []region, src *location, locs []*location) error {
	type placed struct {
		loc   *location
		store string
		base  int64
		dst   []lineRange // its destination ranges, in the store's offsets
	}
	ps := make([]placed, len(locs))
	for i, l := range locs {
		store, base := l.placement()
		ps[i] = placed{loc: l, store: store, base: base}
		for _, rg := range regions {
			if rg.has(i) && rg.len > 0 {
				ps[i].dst = append(ps[i].dst, lineRange{base + rg.dest, rg.len, rg.line})
			}
		}
	}
	if src != nil {
		store, base := src.placement()
		var srcs []lineRange
		for _, rg := range regions {
			if rg.len > 0 {
				srcs = append(srcs, lineRange{base + rg.src, rg.len, rg.line})
			}
		}
		for _, p := range ps {
			if p.store != store {
				continue
			}
			if d, s, ok := firstOverlap(p.dst, srcs, false); ok {
				return aliasError(p.loc, p.base, d, src, base, s, "source")
			}
		}
	}
	for i, p := range ps {
		for _, q := range ps[:i] {
			if p.store != q.store {
				continue
			}
			if p.base == q.base && p.loc.identity() == q.loc.identity() {
				return fmt.Errorf("destination %s is given twice (also as %s)", p.loc.spec, q.loc.spec)
			}
			if a, b, ok := firstOverlap(p.dst, q.dst, false); ok {
				return aliasError(p.loc, p.base, a, q.loc, q.base, b, "destination")
			}
		}
	}
	return nil
}

// aliasError explains that the range a of destination l (at base in the
// store) overlaps the range b of other (the source or another
// destination, at obase); both ranges are in the store's offsets.
func aliasError(l *location, base int64, a lineRange, other *location, obase int64, b lineRange, what string) error {
	rel := "is the " + what + " " + other.spec
	if l.identity() != other.identity() || base != obase {
		rel = fmt.Sprintf("is the same storage as the %s %s (%s)", what, other.spec, where(l, base, other, obase))
	}
	lines := ""
	if a.line != 0 || b.line != 0 {
		lines = fmt.Sprintf(" (%s and %s)", lineName(a.line), lineName(b.line))
	}
	return fmt.Errorf("destination %s %s, and its range [%d, +%d) overlaps the %s's range [%d, +%d)%s; nothing was written: choose offsets that do not overlap, or another destination",
		l.spec, rel, a.off-base, a.len, what, b.off-obase, b.len, lines)
}

// where says how two locations lie in one store.
func where(l *location, base int64, other *location, obase int64) string {
	switch {
	case base == obase:
		return "at the same offsets"
	case base > obase:
		return fmt.Sprintf("byte 0 of %s is byte %d of %s", l.spec, base-obase, other.spec)
	}
	return fmt.Sprintf("byte 0 of %s is byte %d of %s", other.spec, obase-base, l.spec)
}
