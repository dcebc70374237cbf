package mapfile

import "slices"

// bound coarsens the map down to 3/4 of its bound when it holds more
// ranges than the bound, so that coarsening runs at most once per quarter
// bound of new ranges. m.mu must be held.
func (m *Map) bound() {
	if len(m.mu.ranges) > m.mu.maxRanges {
		m.mu.ranges = coarsen(m.mu.ranges, m.mu.maxRanges*3/4)
	}
}

// recolour is a candidate change of coarsen: range i takes the state and
// destinations of to, and so does its neighbour k (a no-op except when two
// failed ranges join and their destination sets are united).
type recolour struct {
	i, k int
	to   Range
}

// coarsen returns rs with at most target ranges (target >= 2). It only
// makes the map more pessimistic, never claiming done for a byte that was
// not: a done range may become untried (copied again) or failed (retried
// by RetryFailed, reported as failed), a failed range may become untried
// (tried again on the next run) or fail on more destinations. Untried
// ranges never change, and nothing becomes done. The smallest ranges are
// changed first, so the least information is lost.
func coarsen(rs []Range, target int) []Range {
	for len(rs) > target {
		cands := candidates(rs)
		slices.SortStableFunc(cands, func(a, b recolour) int { return cmpInt(rs[a.i].Len, rs[b.i].Len) })
		changed := make([]bool, len(rs))
		need := len(rs) - target
		for _, c := range cands {
			if need == 0 {
				break
			}
			// Changes at least 3 apart cannot interfere: each touches
			// only i and k, and merging happens after the pass.
			if slices.Contains(changed[max(c.i-2, 0):min(c.i+3, len(rs))], true) {
				continue
			}
			changed[c.i] = true
			rs[c.i].State, rs[c.i].Dests = c.to.State, c.to.Dests
			rs[c.k].State, rs[c.k].Dests = c.to.State, c.to.Dests
			need--
		}
		rs = mergeAdjacent(rs)
	}
	return rs
}

// candidates returns every allowed recolouring of a range into one of its
// neighbours. There is at least one whenever len(rs) >= 2: an untried
// range's neighbours can become untried, and a failed range between done
// ranges has done neighbours that can become failed.
func candidates(rs []Range) []recolour {
	var cs []recolour
	for i, r := range rs {
		for _, k := range []int{i - 1, i + 1} {
			if k < 0 || k >= len(rs) {
				continue
			}
			n := rs[k]
			switch {
			case r.State == Untried, n.State == Done:
				// Untried stays untried; nothing becomes done.
			case n.State == Untried:
				cs = append(cs, recolour{i: i, k: k, to: n})
			case r.State == Done: // into a failed neighbour
				cs = append(cs, recolour{i: i, k: k, to: n})
			default: // two failed ranges with different destinations
				to := Range{State: Failed, Dests: r.Dests | n.Dests}
				if r.Dests == 0 || n.Dests == 0 {
					to.Dests = 0 // a read failure: no destination has it
				}
				cs = append(cs, recolour{i: i, k: k, to: to})
			}
		}
	}
	return cs
}
