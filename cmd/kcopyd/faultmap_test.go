package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/kcopyd/kcopyd/mapfile"
)

// The --map checks of the fault matrix (faultmatrix_test.go).

// loadMap loads the map of rig and checks what any map of the matrix
// must satisfy: its counts are the report's, it covers the matrix's one
// region, and every range it calls done holds the source's bytes on every
// destination. It returns the map.
func (rig *fmRig) loadMap(t *testing.T, rep jsonReport) *mapfile.Map {
	t.Helper()
	m, err := mapfile.Load(rig.mapPath)
	if err != nil {
		t.Fatalf("--map %s after the run: %v", rig.mapPath, err)
	}
	done, failed, untried := m.Counts()
	if rep.Map == nil || rep.Map.Path != rig.mapPath || rep.Map.Done != done || rep.Map.Failed != failed || rep.Map.Untried != untried || rep.Map.Complete != m.Complete() {
		t.Errorf("map in the report = %+v; the file says done %d, failed %d, untried %d, complete %v", rep.Map, done, failed, untried, m.Complete())
	}
	want := []mapfile.Region{{SrcOffset: fmSrcOff, Length: fmLen, DestOffset: fmDstOff}}
	if job := m.Job(); !slices.Equal(job.Regions, want) || len(job.Dests) != len(rig.dests) || done+failed+untried != fmLen {
		t.Fatalf("map job %+v, counts %d+%d+%d; want regions %v, %d destinations, %d bytes", job, done, failed, untried, want, len(rig.dests), fmLen)
	}
	for i, d := range rig.dests {
		got := readFile(t, d.path)
		for r := range m.Ranges() {
			if r.State == mapfile.Done {
				same(t, fmt.Sprintf("%s (destination %d): job bytes [%d, +%d), done in the map", d.loc, i, r.Off, r.Len),
					got[fmDstOff+r.Off:fmDstOff+r.End()], rig.data[fmSrcOff+r.Off:fmSrcOff+r.End()])
			}
		}
	}
	return m
}

// checkMap checks the map after a run of case c with report rep: loadMap,
// and the failed ranges are where the fault is: inside the faulty chunk,
// together covering the faulty bytes, failed for the source (a read
// fault) or for the faulty destination alone (a write fault), and equal
// to the report's failed_ranges where it gives them (--ignore-errors, or
// a write fault). The prefix of the region the report says is complete
// on every destination is done, and under --ignore-errors nothing is
// untried. It returns the failed ranges and the bytes done.
func (rig *fmRig) checkMap(t *testing.T, c fmCase, rep jsonReport) (fails []mapfile.Range, done int64) {
	t.Helper()
	m := rig.loadMap(t, rep)
	prefix := rig.completedPrefix(rep)
	for r := range m.Ranges() {
		if r.State != mapfile.Done && r.Off < prefix {
			t.Errorf("map: job bytes [%d, +%d) are %v; the report says the first %d bytes are complete everywhere", r.Off, r.Len, r.State, prefix)
		}
		if r.State == mapfile.Untried && c.mode == "ignore" {
			t.Errorf("map: job bytes [%d, +%d) untried after a run with --ignore-errors", r.Off, r.Len)
		}
	}
	fails = slices.Collect(m.Failed())
	rig.checkMapFailed(t, c, rep, fails)
	done, _, _ = m.Counts()
	return fails, done
}

// completedPrefix returns how many bytes from the start of the region the
// report says are complete on every destination.
func (rig *fmRig) completedPrefix(rep jsonReport) int64 {
	if rep.Completed != nil {
		return *rep.Completed
	}
	prefix := int64(fmLen)
	for _, d := range rep.Destinations {
		if d.Completed == nil {
			return 0
		}
		prefix = min(prefix, *d.Completed)
	}
	return prefix
}

// checkMapFailed checks the failed ranges of the map of case c.
func (rig *fmRig) checkMapFailed(t *testing.T, c fmCase, rep jsonReport, fails []mapfile.Range) {
	t.Helper()
	chunk := mapfile.Range{Off: int64(c.chunk) * fmChunk, Len: fmChunk}
	at := faultAt(c.chunk)
	wantDests := mapfile.DestSet(0) // a read failure
	if !c.readFault() {
		wantDests = 1 << rig.bad
	}
	var covered int64
	for _, f := range fails {
		if f.Off < chunk.Off || f.End() > chunk.End() || f.Dests != wantDests {
			t.Errorf("map: failed range %+v; want one inside the faulty chunk [%d, +%d) failed for %q", f, chunk.Off, chunk.Len, wantDests)
		}
		covered += max(0, min(f.End(), at+fmFaultLen)-max(f.Off, at))
	}
	if covered != fmFaultLen {
		t.Errorf("map: failed ranges %+v cover %d of the %d faulty bytes at %d", fails, covered, fmFaultLen, at)
	}
	var reported [][2]int64 // the report's failed_ranges, in job bytes
	switch {
	case !c.readFault():
		reported = rep.Destinations[rig.bad].FailedRanges
	case c.mode == "ignore":
		reported = rep.Destinations[0].FailedRanges
	default:
		return // the report has no failed_ranges for a read that ended the run
	}
	var inMap [][2]int64
	for _, f := range fails {
		inMap = append(inMap, [2]int64{fmDstOff + f.Off, f.Len})
	}
	if fmt.Sprint(inMap) != fmt.Sprint(reported) {
		t.Errorf("map: failed ranges at destination offsets %v; the report's failed_ranges are %v", inMap, reported)
	}
}

// checkMapRerunOnce ends the fault and reruns the same command with the
// same map and --retry-failed: it must succeed, leave the map complete
// and every destination identical to the source in the region. A further
// rerun must do nothing and say so.
func (rig *fmRig) checkMapRerunOnce(t *testing.T, c fmCase) {
	t.Helper()
	if c.readFault() {
		rig.src = rig.srcCure()
	} else {
		bad := rig.dests[rig.bad]
		bad.loc = bad.cure()
	}
	args := rig.args(c, "", rig.src, rig.dests, "--map", rig.mapPath, "--retry-failed")
	r := runBinary(t, rig.bin, args...)
	if r.code != exitOK {
		t.Fatalf("rerun with the map after the fault is gone: kcopyd %v = %v; want exit 0", args, r)
	}
	m := rig.loadMap(t, parseReport(t, r))
	if done, _, _ := m.Counts(); !m.Complete() || done != fmLen {
		t.Errorf("map after the rerun: %d bytes done, complete %v; want %d, complete", done, m.Complete(), fmLen)
	}
	for _, d := range rig.dests {
		same(t, d.loc+" after the rerun", readFile(t, d.path), rig.want(d))
	}
	args = rig.args(c, "", rig.src, rig.dests, "--map", rig.mapPath)
	if r := runBinary(t, rig.bin, args...); r.code != exitOK || !strings.Contains(r.stderr, "complete already") {
		t.Errorf("rerun with a complete map: kcopyd %v = %v; want exit 0 saying it is complete already", args, r)
	}
}

// checkMapRerunPermanent reruns the same command with the same map and
// --retry-failed while the fault is still there: it must fail with the
// same exit status, and leave a map that passes checkMap with the same
// failed ranges as before and at least as many bytes done.
func (rig *fmRig) checkMapRerunPermanent(t *testing.T, c fmCase, fails []mapfile.Range, done int64) {
	t.Helper()
	code := exitWriteError
	if c.readFault() {
		code = exitReadError
	}
	args := rig.args(c, "", rig.src, rig.dests, "--map", rig.mapPath, "--retry-failed")
	r := runBinary(t, rig.bin, args...)
	if r.code != code {
		t.Fatalf("rerun with the map and the fault still there: kcopyd %v = %v; want exit %d", args, r, code)
	}
	fails2, done2 := rig.checkMap(t, c, parseReport(t, r))
	if !slices.Equal(fails2, fails) || done2 < done {
		t.Errorf("map after the rerun: failed %+v, %d bytes done; before it: failed %+v, %d bytes done", fails2, done2, fails, done)
	}
}

// checkLostMap checks the map after a run that lost a destination
// (TestFaultMatrixServerLost): loadMap, every failed range failed for the
// lost destination alone, and the chunk held when it was lost among them.
func (rig *fmRig) checkLostMap(t *testing.T, rep jsonReport, chunk [2]int64) {
	t.Helper()
	m := rig.loadMap(t, rep)
	held := false
	for f := range m.Failed() {
		if f.Dests != 1<<rig.bad {
			t.Errorf("map: failed range %+v; want it failed for the lost destination %d alone", f, rig.bad)
		}
		held = held || f.Off <= chunk[0]-fmDstOff && chunk[0]+chunk[1]-fmDstOff <= f.End()
	}
	if !held {
		t.Errorf("map: the chunk [%d, +%d) held when the destination was lost is not failed: %+v", chunk[0]-fmDstOff, chunk[1], slices.Collect(m.Ranges()))
	}
}
