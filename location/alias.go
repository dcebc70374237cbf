package location

import (
	"fmt"
	"slices"
)

// A Range is a byte range of a location that a job reads or writes.
type Range struct {
	Off, Len int64
	// Line is the line of a regions file the range comes from, for
	// messages ("regions line 3"); 0 names the one region of a job given
	// without such a file ("the region").
	Line int
}

// End returns r.Off + r.Len.
func (r Range) End() int64 { return r.Off + r.Len }

// lineName names the source of a range in messages.
func lineName(line int) string {
	if line == 0 {
		return "the region"
	}
	return fmt.Sprintf("regions line %d", line)
}

// FirstOverlap returns a range x of a and a range y of b that overlap, or
// ok false when none do. Empty ranges overlap nothing. It sorts a copy,
// so it takes O((len(a)+len(b)) log(len(a)+len(b))) time.
func FirstOverlap(a, b []Range) (x, y Range, ok bool) {
	return firstOverlap(a, b, false)
}

// FirstSelfOverlap returns two distinct ranges of a that overlap, x
// starting no later than y, or ok false when none do.
func FirstSelfOverlap(a []Range) (x, y Range, ok bool) {
	return firstOverlap(a, nil, true)
}

// firstOverlap sweeps a and b (or a alone, when same) sorted by offset,
// keeping per side the range reaching furthest so far.
func firstOverlap(a, b []Range, same bool) (x, y Range, ok bool) {
	type ev struct {
		r    Range
		from int // 0: a, 1: b
	}
	evs := make([]ev, 0, len(a)+len(b))
	for _, r := range a {
		if r.Len > 0 {
			evs = append(evs, ev{r, 0})
		}
	}
	for _, r := range b {
		if r.Len > 0 {
			evs = append(evs, ev{r, 1})
		}
	}
	slices.SortFunc(evs, func(p, q ev) int {
		switch {
		case p.r.Off < q.r.Off:
			return -1
		case p.r.Off > q.r.Off:
			return 1
		}
		return p.from - q.from
	})
	var far [2]*ev
	for i := range evs {
		e := &evs[i]
		other := 1 - e.from
		if same {
			other = 0
		}
		if f := far[other]; f != nil && f.r.End() > e.r.Off {
			if e.from == 0 && !same {
				return e.r, f.r, true
			}
			return f.r, e.r, true
		}
		if f := far[e.from]; f == nil || e.r.End() > f.r.End() {
			far[e.from] = e
		}
	}
	return Range{}, Range{}, false
}

// CheckAliases refuses a job in which two locations that are one storage
// under different names would touch overlapping bytes: a destination and
// the source (src nil for a job without one, such as zeroing), or two
// destinations. srcRanges are the ranges read from src; destRanges[i]
// the ranges written to dests[i]. Locations are compared by Placement, the
// store they lie in and their offset there, so that a loop device and its
// backing file, two loop devices over one file, a partition and its disk,
// and a file under any name (symbolic link, hard link, /proc/self/fd/N,
// bind mount) are recognised. A destination given twice is refused too.
// Open the locations first: unopened ones are compared by Key alone.
func CheckAliases(src *Location, srcRanges []Range, dests []*Location, destRanges [][]Range) error {
	type placed struct {
		loc   *Location
		store string
		base  int64
		dst   []Range // its destination ranges, in the store's offsets
	}
	ps := make([]placed, len(dests))
	for i, l := range dests {
		store, base := l.Placement()
		ps[i] = placed{loc: l, store: store, base: base, dst: shift(destRanges[i], base)}
	}
	if src != nil {
		store, base := src.Placement()
		srcs := shift(srcRanges, base)
		for _, p := range ps {
			if p.store != store {
				continue
			}
			if d, s, ok := FirstOverlap(p.dst, srcs); ok {
				return aliasError(p.loc, p.base, d, src, base, s, "source")
			}
		}
	}
	for i, p := range ps {
		for _, q := range ps[:i] {
			if p.store != q.store {
				continue
			}
			if p.base == q.base && p.loc.Identity() == q.loc.Identity() {
				return fmt.Errorf("destination %s is given twice (also as %s)", p.loc.Spec, q.loc.Spec)
			}
			if a, b, ok := FirstOverlap(p.dst, q.dst); ok {
				return aliasError(p.loc, p.base, a, q.loc, q.base, b, "destination")
			}
		}
	}
	return nil
}

// shift returns the non-empty ranges of rs moved by base bytes.
func shift(rs []Range, base int64) []Range {
	out := make([]Range, 0, len(rs))
	for _, r := range rs {
		if r.Len > 0 {
			out = append(out, Range{base + r.Off, r.Len, r.Line})
		}
	}
	return out
}

// aliasError explains that the range a of destination l (at base in the
// store) overlaps the range b of other (the source or another
// destination, at obase); both ranges are in the store's offsets.
func aliasError(l *Location, base int64, a Range, other *Location, obase int64, b Range, what string) error {
	rel := "is the " + what + " " + other.Spec
	if l.Identity() != other.Identity() || base != obase {
		rel = fmt.Sprintf("is the same storage as the %s %s (%s)", what, other.Spec, where(l, base, other, obase))
	}
	lines := ""
	if a.Line != 0 || b.Line != 0 {
		lines = fmt.Sprintf(" (%s and %s)", lineName(a.Line), lineName(b.Line))
	}
	return fmt.Errorf("destination %s %s, and its range [%d, +%d) overlaps the %s's range [%d, +%d)%s; nothing was written: choose offsets that do not overlap, or another destination",
		l.Spec, rel, a.Off-base, a.Len, what, b.Off-obase, b.Len, lines)
}

// where says how two locations lie in one store.
func where(l *Location, base int64, other *Location, obase int64) string {
	switch {
	case base == obase:
		return "at the same offsets"
	case base > obase:
		return fmt.Sprintf("byte 0 of %s is byte %d of %s", l.Spec, base-obase, other.Spec)
	}
	return fmt.Sprintf("byte 0 of %s is byte %d of %s", other.Spec, obase-base, l.Spec)
}
