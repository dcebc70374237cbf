package mapfile

import (
	"fmt"
	"iter"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// DefaultMaxRanges bounds the number of ranges a map holds (about 24 bytes
// each in memory, at most about 60 bytes each in the file): 1<<17 ranges
// are about 3 MiB in memory and at most 8 MiB on disk. See "Memory" in the
// package documentation for what happens beyond it.
const DefaultMaxRanges = 1 << 17

// minMaxRanges is the smallest bound SetMaxRanges accepts.
const minMaxRanges = 8

// State is the state of a range.
type State uint8

const (
	// Untried ranges have not been copied (or zeroed) yet, or were
	// copied but not yet flushed when the map was saved.
	Untried State = iota
	// Done ranges are durable on every destination.
	Done
	// Failed ranges hit a read error (nothing durable anywhere) or a
	// write error on the destinations in Range.Dests.
	Failed
)

// String returns the state's word in the map file.
func (s State) String() string {
	switch s {
	case Untried:
		return "untried"
	case Done:
		return "done"
	case Failed:
		return "failed"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// DestSet is a set of destination indexes (0 to MaxDests-1), bit i for
// destination i.
type DestSet uint8

// Has reports whether destination i is in the set.
func (s DestSet) Has(i int) bool { return i >= 0 && i < MaxDests && s&(1<<i) != 0 }

// Len returns the number of destinations in the set.
func (s DestSet) Len() int { return bits.OnesCount8(uint8(s)) }

// String returns the indexes separated by commas, as in the map file.
func (s DestSet) String() string {
	var b strings.Builder
	for i := range MaxDests {
		if s.Has(i) {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(i))
		}
	}
	return b.String()
}

// Range is a piece of the job's byte space in one state.
type Range struct {
	Off, Len int64 // job-relative bytes
	State    State
	// Dests, for a Failed range, are the destinations whose write failed;
	// empty for a read failure (no destination has the data). Empty for
	// the other states.
	Dests DestSet
}

// End returns Off+Len.
func (r Range) End() int64 { return r.Off + r.Len }

// same reports whether two ranges have the same state and destinations,
// so that adjacent they are one range.
func (r Range) same(o Range) bool { return r.State == o.State && r.Dests == o.Dests }

// Map is the progress of one job: its byte space [0, Job.Length()) cut
// into sorted, non-overlapping, adjacent-merged ranges, each done, failed
// or untried. Its methods are safe for concurrent use.
type Map struct {
	job Job // immutable

	mu struct {
		sync.Mutex
		ranges    []Range // cover [0, job.Length()) exactly; never two adjacent with same()
		maxRanges int
		saved     string // status time of the last Save or of the loaded file
	}
	// saveMu serializes Save, so temporary files are not shared.
	saveMu sync.Mutex
}

// New returns a map of job with every byte untried. It returns an error
// wrapping ErrBadJob when the job is invalid (see Job); the job is copied.
func New(job Job) (*Map, error) {
	if err := job.validate(); err != nil {
		return nil, err
	}
	m := &Map{job: job.clone()}
	m.mu.maxRanges = DefaultMaxRanges
	if n := job.Length(); n > 0 {
		m.mu.ranges = []Range{{Off: 0, Len: n, State: Untried}}
	}
	return m, nil
}

// Job returns a copy of the job the map belongs to.
func (m *Map) Job() Job { return m.job.clone() }

// SetMaxRanges sets the most ranges the map keeps (default
// DefaultMaxRanges, at least 8) and coarsens it at once if it holds more.
func (m *Map) SetMaxRanges(n int) {
	if n < minMaxRanges {
		panic(fmt.Sprintf("mapfile: SetMaxRanges(%d): want at least %d", n, minMaxRanges))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.maxRanges = n
	m.bound()
}

// MarkDone records that job bytes [off, off+n) are durable on every
// destination, whatever their state was. Call it only after the data was
// flushed to every destination (see "Crash safety" in the package
// documentation). n == 0 does nothing; a range outside the job panics.
func (m *Map) MarkDone(off, n int64) { m.mark(Range{Off: off, Len: n, State: Done}) }

// MarkUntried records that job bytes [off, off+n) must be copied again,
// whatever their state was. n == 0 does nothing; a range outside the job
// panics.
func (m *Map) MarkUntried(off, n int64) { m.mark(Range{Off: off, Len: n, State: Untried}) }

// MarkFailed records that job bytes [off, off+n) failed, replacing their
// state: with no dests, a read failure (none of the destinations got the
// data); otherwise a write failure on the destinations given (indexes into
// Job.Dests), which the other destinations need not redo but the range is
// not done. n == 0 does nothing. A range outside the job, a destination
// index out of range, or a read failure on a zero job panics.
func (m *Map) MarkFailed(off, n int64, dests ...int) {
	var set DestSet
	for _, d := range dests {
		if d < 0 || d >= len(m.job.Dests) {
			panic(fmt.Sprintf("mapfile: MarkFailed: destination %d of %d", d, len(m.job.Dests)))
		}
		set |= 1 << d
	}
	if set == 0 && m.job.Kind == KindZero {
		panic("mapfile: MarkFailed: a zero job has no reads to fail; name the destinations")
	}
	m.mark(Range{Off: off, Len: n, State: Failed, Dests: set})
}

// RetryFailed turns every failed range back to untried (the --retry-failed
// of the command) and returns the number of bytes it turned.
func (m *Map) RetryFailed() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for i, r := range m.mu.ranges {
		if r.State == Failed {
			n += r.Len
			m.mu.ranges[i].State, m.mu.ranges[i].Dests = Untried, 0
		}
	}
	m.mu.ranges = mergeAdjacent(m.mu.ranges)
	return n
}

// markUntriedDone marks done the untried bytes of r, leaving the others.
func (m *Map) markUntriedDone(r Range) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var untried []Range
	for _, x := range m.mu.ranges[firstEndingAfter(m.mu.ranges, r.Off):] {
		if x.Off >= r.End() {
			break
		}
		if x.State == Untried {
			lo, hi := max(x.Off, r.Off), min(x.End(), r.End())
			untried = append(untried, Range{Off: lo, Len: hi - lo, State: Done})
		}
	}
	for _, u := range untried {
		m.mu.ranges = set(m.mu.ranges, u)
	}
	m.bound()
}

// mark sets the state of r's bytes to r's, merging with its neighbours,
// and coarsens the map if it grew past its bound.
func (m *Map) mark(r Range) {
	if r.Len == 0 {
		return
	}
	total := m.job.Length()
	if r.Off < 0 || r.Len < 0 || r.Off > total || r.Len > total-r.Off {
		panic(fmt.Sprintf("mapfile: range [%d, +%d) outside the job [0, %d)", r.Off, r.Len, total))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.ranges = set(m.mu.ranges, r)
	m.bound()
}

// set returns rs with r's bytes in r's state. rs covers the job and is
// merged; so is the result.
func set(rs []Range, r Range) []Range {
	// i: first range ending after r.Off; j: first range starting at or
	// after r.End().
	i := firstEndingAfter(rs, r.Off)
	j, _ := slices.BinarySearchFunc(rs, r.End(), func(x Range, end int64) int { return cmpInt(x.Off, end) })
	repl := make([]Range, 0, 3)
	if left := rs[i]; left.Off < r.Off {
		left.Len = r.Off - left.Off
		repl = append(repl, left)
	}
	repl = append(repl, r)
	if right := rs[j-1]; right.End() > r.End() {
		right.Len, right.Off = right.End()-r.End(), r.End()
		repl = append(repl, right)
	}
	// Widen to the neighbours so that merging sees them.
	if i > 0 {
		i--
		repl = slices.Insert(repl, 0, rs[i])
	}
	if j < len(rs) {
		repl = append(repl, rs[j])
		j++
	}
	return slices.Replace(rs, i, j, mergeAdjacent(repl)...)
}

// firstEndingAfter returns the index of the first range of rs that ends
// after off (len(rs) if none).
func firstEndingAfter(rs []Range, off int64) int {
	i, _ := slices.BinarySearchFunc(rs, off, func(x Range, off int64) int { return cmpInt(x.End(), off+1) })
	return i
}

// mergeAdjacent merges adjacent ranges with the same state in place.
func mergeAdjacent(rs []Range) []Range {
	out := rs[:0]
	for _, r := range rs {
		if k := len(out) - 1; k >= 0 && out[k].same(r) {
			out[k].Len += r.Len
			continue
		}
		out = append(out, r)
	}
	return out
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Ranges yields every range of the map in ascending order, from a copy
// taken when the iteration starts, so the loop may mark the map.
func (m *Map) Ranges() iter.Seq[Range] { return m.filter(func(Range) bool { return true }) }

// Untried yields the untried ranges in ascending order: what a resumed job
// has left to do. It iterates over a copy taken when the iteration starts,
// so the loop may mark the map.
func (m *Map) Untried() iter.Seq[Range] {
	return m.filter(func(r Range) bool { return r.State == Untried })
}

// Failed yields the failed ranges in ascending order, like Untried.
func (m *Map) Failed() iter.Seq[Range] {
	return m.filter(func(r Range) bool { return r.State == Failed })
}

func (m *Map) filter(keep func(Range) bool) iter.Seq[Range] {
	return func(yield func(Range) bool) {
		m.mu.Lock()
		rs := make([]Range, 0, len(m.mu.ranges))
		for _, r := range m.mu.ranges {
			if keep(r) {
				rs = append(rs, r)
			}
		}
		m.mu.Unlock()
		for _, r := range rs {
			if !yield(r) {
				return
			}
		}
	}
}

// Counts returns the bytes done, failed and untried; they add up to the
// job's length.
func (m *Map) Counts() (done, failed, untried int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return counts(m.mu.ranges)
}

func counts(rs []Range) (done, failed, untried int64) {
	for _, r := range rs {
		switch r.State {
		case Done:
			done += r.Len
		case Failed:
			failed += r.Len
		default:
			untried += r.Len
		}
	}
	return done, failed, untried
}

// Complete reports whether every byte of the job is done (an empty job is
// complete).
func (m *Map) Complete() bool {
	_, failed, untried := m.Counts()
	return failed == 0 && untried == 0
}

// Len returns the number of ranges.
func (m *Map) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.mu.ranges)
}
