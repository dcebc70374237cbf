package mapfile

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// testTime stamps maps encoded by tests.
var testTime = time.Date(2026, 11, 29, 14, 30, 0, 0, time.UTC)

// copyJob returns a copy job of one region of n bytes to dests
// destinations.
func copyJob(n int64, dests int) Job {
	j := Job{
		Kind:      KindCopy,
		Source:    Location{Name: "disk.img", ID: "file:2049:1311", Size: n},
		Regions:   []Region{{SrcOffset: 0, Length: n, DestOffset: 0}},
		ChunkSize: 1 << 20,
	}
	for i := range dests {
		j.Dests = append(j.Dests, Location{Name: fmt.Sprintf("copy%d.img", i), ID: fmt.Sprintf("file:2049:%d", 2000+i), Size: n})
	}
	return j
}

// mustNew returns New(job) or fails the test.
func mustNew(tb testing.TB, job Job) *Map {
	tb.Helper()
	m, err := New(job)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return m
}

// rangesString returns the map's ranges as "OFF LEN STATE" lines joined
// by "; ".
func rangesString(m *Map) string {
	var s []string
	for r := range m.Ranges() {
		s = append(s, fmt.Sprintf("%d %d %s", r.Off, r.Len, stateString(r)))
	}
	return strings.Join(s, "; ")
}

// checkInvariants fails the test unless the map's ranges cover the job
// exactly, in order, non-empty and merged.
func checkInvariants(tb testing.TB, m *Map) {
	tb.Helper()
	rs := slices.Collect(m.Ranges())
	var next int64
	for i, r := range rs {
		if r.Off != next || r.Len <= 0 {
			tb.Fatalf("range %d [%d, +%d): want start %d and length > 0 (%s)", i, r.Off, r.Len, next, rangesString(m))
		}
		if i > 0 && rs[i-1].same(r) {
			tb.Fatalf("ranges %d and %d not merged (%s)", i-1, i, rangesString(m))
		}
		if r.State != Failed && r.Dests != 0 {
			tb.Fatalf("range %d is %v with destinations %v", i, r.State, r.Dests)
		}
		next = r.End()
	}
	if total := m.job.Length(); next != total {
		tb.Fatalf("ranges end at %d; the job is %d bytes", next, total)
	}
}

// seededRand returns a random source whose seed it logs, so that a failure
// can be replayed; stream tells tests apart.
func seededRand(tb testing.TB, stream uint64) *rand.Rand {
	seed := rand.Uint64()
	tb.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, stream))
}

// checkRoundTrip fails the test unless m encodes to a file that parses
// back to the same job and ranges and encodes to the same bytes again.
// It returns the parsed map.
func checkRoundTrip(tb testing.TB, m *Map) *Map {
	tb.Helper()
	data := m.encode(testTime)
	back, err := Parse(data)
	if err != nil {
		tb.Fatalf("Parse(encode()) = %v\n%s", err, data)
	}
	if err := back.Check(m.Job()); err != nil {
		tb.Fatalf("a round trip changed the job: %v", err)
	}
	if !slices.Equal(back.job.Dests, m.job.Dests) || back.job.ChunkSize != m.job.ChunkSize {
		tb.Fatalf("job after a round trip = %+v; want %+v", back.job, m.job)
	}
	if got, want := rangesString(back), rangesString(m); got != want {
		tb.Fatalf("ranges after a round trip = %s; want %s", got, want)
	}
	if again := back.encode(testTime); !bytes.Equal(again, data) {
		tb.Fatalf("encoding is not stable:\n%s\nthen\n%s", data, again)
	}
	return back
}
