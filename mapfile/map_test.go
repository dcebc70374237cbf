package mapfile

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestMapMergeRules(t *testing.T) {
	type mark struct {
		st      State
		off, n  int64
		dests   []int
		retried bool // RetryFailed instead of a mark
	}
	tests := []struct {
		name  string
		marks []mark
		want  string
	}{
		{"new", nil, "0 100 untried"},
		{"done prefix", []mark{{st: Done, off: 0, n: 10}}, "0 10 done; 10 90 untried"},
		{"done middle", []mark{{st: Done, off: 40, n: 10}}, "0 40 untried; 40 10 done; 50 50 untried"},
		{"done suffix", []mark{{st: Done, off: 90, n: 10}}, "0 90 untried; 90 10 done"},
		{"adjacent done merge", []mark{{st: Done, off: 0, n: 10}, {st: Done, off: 10, n: 10}}, "0 20 done; 20 80 untried"},
		{"out of order merge", []mark{{st: Done, off: 20, n: 10}, {st: Done, off: 0, n: 10}, {st: Done, off: 10, n: 10}}, "0 30 done; 30 70 untried"},
		{"all done", []mark{{st: Done, off: 50, n: 50}, {st: Done, off: 0, n: 50}}, "0 100 done"},
		{"zero length", []mark{{st: Done, off: 100, n: 0}}, "0 100 untried"},
		{"read failure", []mark{{st: Done, off: 0, n: 30}, {st: Failed, off: 10, n: 5}}, "0 10 done; 10 5 failed read; 15 15 done; 30 70 untried"},
		{"write failures differ", []mark{{st: Failed, off: 0, n: 10, dests: []int{1}}, {st: Failed, off: 10, n: 10, dests: []int{0}}}, "0 10 failed write=1; 10 10 failed write=0; 20 80 untried"},
		{"write failures same", []mark{{st: Failed, off: 0, n: 10, dests: []int{2, 0}}, {st: Failed, off: 10, n: 10, dests: []int{0, 2, 0}}}, "0 20 failed write=0,2; 20 80 untried"},
		{"failed overwritten by done", []mark{{st: Failed, off: 0, n: 50}, {st: Done, off: 10, n: 20}}, "0 10 failed read; 10 20 done; 30 20 failed read; 50 50 untried"},
		{"done overwritten by failed", []mark{{st: Done, off: 0, n: 100}, {st: Failed, off: 0, n: 100, dests: []int{1}}}, "0 100 failed write=1"},
		{"span several", []mark{{st: Done, off: 10, n: 10}, {st: Failed, off: 30, n: 10}, {st: Done, off: 50, n: 10}, {st: Untried, off: 5, n: 60}}, "0 100 untried"},
		{"bridge", []mark{{st: Done, off: 0, n: 10}, {st: Done, off: 20, n: 10}, {st: Done, off: 10, n: 10}}, "0 30 done; 30 70 untried"},
		{"retry failed", []mark{{st: Done, off: 0, n: 40}, {st: Failed, off: 10, n: 10}, {st: Failed, off: 40, n: 10, dests: []int{0}}, {retried: true}}, "0 10 done; 10 10 untried; 20 20 done; 40 60 untried"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustNew(t, copyJob(100, 3))
			for _, k := range tt.marks {
				switch {
				case k.retried:
					m.RetryFailed()
				case k.st == Done:
					m.MarkDone(k.off, k.n)
				case k.st == Untried:
					m.MarkUntried(k.off, k.n)
				default:
					m.MarkFailed(k.off, k.n, k.dests...)
				}
			}
			checkInvariants(t, m)
			if got := rangesString(m); got != tt.want {
				t.Errorf("ranges = %s; want %s", got, tt.want)
			}
		})
	}
}

func TestMapMisusePanics(t *testing.T) {
	m := mustNew(t, copyJob(100, 2))
	z := mustNew(t, Job{Kind: KindZero, Dests: []Location{{Name: "z", ID: "z", Size: 100}}, Regions: []Region{{Length: 100}}})
	for name, f := range map[string]func(){
		"past end":        func() { m.MarkDone(90, 11) },
		"negative offset": func() { m.MarkDone(-1, 2) },
		"huge length":     func() { m.MarkDone(1, 1<<62) },
		"dest index":      func() { m.MarkFailed(0, 1, 2) },
		"zero read fail":  func() { z.MarkFailed(0, 1) },
		"small bound":     func() { m.SetMaxRanges(2) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", name)
				}
			}()
			f()
		})
	}
	if got := rangesString(m); got != "0 100 untried" {
		t.Errorf("after refused marks: ranges = %s; want 0 100 untried", got)
	}
}

// TestMapModel compares the map with a byte-per-byte model under random
// marks, and the counts, Untried, Failed and Complete with the model's.
func TestMapModel(t *testing.T) {
	rng := seededRand(t, 0)
	for round := range 200 {
		n := 1 + rng.Int64N(300)
		m := mustNew(t, copyJob(n, 3))
		model := make([]Range, n) // one per byte: State and Dests
		for range rng.IntN(40) {
			off := rng.Int64N(n)
			l := rng.Int64N(n - off + 1)
			r := Range{State: State(rng.IntN(3))}
			var dests []int
			if r.State == Failed {
				for d := range 3 {
					if rng.IntN(3) == 0 {
						dests = append(dests, d)
						r.Dests |= 1 << d
					}
				}
			}
			switch {
			case rng.IntN(20) == 0:
				m.RetryFailed()
				for i := range model {
					if model[i].State == Failed {
						model[i] = Range{}
					}
				}
				continue
			case r.State == Done:
				m.MarkDone(off, l)
			case r.State == Untried:
				m.MarkUntried(off, l)
			default:
				m.MarkFailed(off, l, dests...)
			}
			for i := off; i < off+l; i++ {
				model[i] = r
			}
		}
		checkInvariants(t, m)
		var done, failed, untried int64
		for r := range m.Ranges() {
			for i := r.Off; i < r.End(); i++ {
				if model[i].State != r.State || model[i].Dests != r.Dests {
					t.Fatalf("round %d: byte %d is %v %v; the model says %v %v", round, i, r.State, r.Dests, model[i].State, model[i].Dests)
				}
			}
		}
		for _, b := range model {
			switch b.State {
			case Done:
				done++
			case Failed:
				failed++
			default:
				untried++
			}
		}
		d, f, u := m.Counts()
		if d != done || f != failed || u != untried {
			t.Fatalf("round %d: Counts() = %d, %d, %d; want %d, %d, %d", round, d, f, u, done, failed, untried)
		}
		if m.Complete() != (done == n) {
			t.Fatalf("round %d: Complete() = %v with %d of %d done", round, m.Complete(), done, n)
		}
		var sum int64
		for r := range m.Untried() {
			sum += r.Len
		}
		for r := range m.Failed() {
			sum += r.Len
		}
		if sum != failed+untried {
			t.Fatalf("round %d: Untried and Failed yield %d bytes; want %d", round, sum, failed+untried)
		}
	}
}

// TestMapIterateWhileMarking marks every untried range done from inside
// the Untried loop, as a resuming command does.
func TestMapIterateWhileMarking(t *testing.T) {
	m := mustNew(t, copyJob(1000, 1))
	for off := int64(0); off < 1000; off += 100 {
		m.MarkDone(off, 50)
	}
	var ranges int
	for r := range m.Untried() {
		m.MarkDone(r.Off, r.Len)
		ranges++
	}
	if ranges != 10 || !m.Complete() || m.Len() != 1 {
		t.Fatalf("after marking %d untried ranges done: Complete() = %v, Len() = %d; want 10, true, 1", ranges, m.Complete(), m.Len())
	}
}

// TestMapCoarsenNeverClaimsDone drives maps past a small bound with random
// marks and checks, byte by byte against a model, that coarsening only
// made the map more pessimistic: nothing done that the model does not
// call done, every untried byte still untried.
func TestMapCoarsenNeverClaimsDone(t *testing.T) {
	rng := seededRand(t, 1)
	for round := range 100 {
		n := 200 + rng.Int64N(2000)
		m := mustNew(t, copyJob(n, 3))
		maxRanges := 8 + rng.IntN(40)
		m.SetMaxRanges(maxRanges)
		model := make([]State, n)
		for range 300 {
			off := rng.Int64N(n)
			l := 1 + rng.Int64N(min(n-off, 20))
			st := State(1 + rng.IntN(2)) // done or failed: makes ranges
			if st == Done {
				m.MarkDone(off, l)
			} else {
				m.MarkFailed(off, l, rng.IntN(3))
			}
			for i := off; i < off+l; i++ {
				model[i] = st
			}
			if m.Len() > maxRanges {
				t.Fatalf("round %d: %d ranges; bound %d", round, m.Len(), maxRanges)
			}
		}
		checkInvariants(t, m)
		for r := range m.Ranges() {
			for i := r.Off; i < r.End(); i++ {
				if r.State == Done && model[i] != Done {
					t.Fatalf("round %d: byte %d is done in the map but %v in the model", round, i, model[i])
				}
				if model[i] == Untried && r.State != Untried {
					t.Fatalf("round %d: byte %d is %v in the map but untried in the model", round, i, r.State)
				}
			}
		}
	}
}

// TestMapManyFailures is the bound in the package documentation: a 1 TiB
// job with 100,000 failed ranges stays within DefaultMaxRanges, keeps every
// failed byte not done, and saves to a file of a few MiB.
func TestMapManyFailures(t *testing.T) {
	const tib = int64(1) << 40
	m := mustNew(t, copyJob(tib, 2))
	stride := tib / 100_000
	var failed []Range
	for i := range int64(100_000) {
		off := i*stride + 4096
		failed = append(failed, Range{Off: off, Len: 65536})
		m.MarkDone(i*stride, stride)
		m.MarkFailed(off, 65536, int(i%2))
	}
	checkInvariants(t, m)
	if m.Len() > DefaultMaxRanges {
		t.Fatalf("Len() = %d; bound %d", m.Len(), DefaultMaxRanges)
	}
	rs := slices.Collect(m.Ranges())
	for _, f := range failed {
		i := firstEndingAfter(rs, f.Off)
		for ; i < len(rs) && rs[i].Off < f.End(); i++ {
			if rs[i].State == Done {
				t.Fatalf("failed range [%d, +%d) is done in the map: %+v", f.Off, f.Len, rs[i])
			}
		}
	}
	path := filepath.Join(t.TempDir(), "map")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d ranges, file %d bytes", m.Len(), st.Size())
	if st.Size() > 8<<20 {
		t.Errorf("map file is %d bytes; want at most 8 MiB", st.Size())
	}
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := slices.Collect(back.Ranges()), rs; !slices.Equal(got, want) {
		t.Errorf("loaded map has %d ranges; saved %d", len(got), len(want))
	}
}
