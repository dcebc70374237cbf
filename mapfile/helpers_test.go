package mapfile

import (
	"fmt"
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
