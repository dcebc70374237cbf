package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
)

// TestDroppedDestinationReport drops a destination at a write error
// while another one completes: the report must say, for the dropped one,
// what is known good, what failed and what was never written, and the
// options that finish it, which must work once the fault is gone.
func TestDroppedDestinationReport(t *testing.T) {
	t.Parallel()
	const size = 8 << 20
	dir := t.TempDir()
	// A sparse source: the hole at 4 MiB splits the copy into three jobs
	// (data, hole, data), so that the last two are never written to the
	// destination dropped in the first.
	data := randomBytes(60, size)
	clear(data[4<<20 : 5<<20])
	src := writeFile(t, dir, "src", data[:4<<20])
	f, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data[5<<20:], 5<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	trigger := writeFile(t, dir, "fail-writes", nil)
	old := bytes.Repeat([]byte{0x77}, size)
	uri, backing := evalNBDWhile(t, old, nil, [][2]int64{{2<<20 + 4096, 4096}}, trigger)
	good := filepath.Join(dir, "good")
	r := runCLI(t, "", "copy", "--create", "--json", "--jobs", "1", "--sub-job-size", "256K", src, uri, good)
	if r.code != exitWriteError {
		t.Fatalf("copy = %v; want exit 3", r)
	}
	rep := parseReport(t, r)
	bad, ok := rep.Destinations[0], rep.Destinations[1]
	if rep.Completed == nil || *rep.Completed > 2<<20 {
		t.Errorf("completed = %s; want at most %d: the bytes complete on every destination", deref(rep.Completed), 2<<20)
	}
	if len(rep.Remaining) != 1 || rep.Remaining[0][1] < size-2<<20 {
		t.Errorf("remaining = %v; want the rest of the region from the dropped destination's failure", rep.Remaining)
	}
	if ok.Completed == nil || *ok.Completed != size || len(ok.Remaining) != 0 || len(ok.UnwrittenRanges) != 0 {
		t.Errorf("healthy destination %+v; want completed %d and nothing remaining", ok, size)
	}
	if bad.Completed == nil || *bad.Completed > 2<<20 || len(bad.Remaining) != 1 {
		t.Fatalf("dropped destination %+v; want completed at most %d and one remaining region", bad, 2<<20)
	}
	c := *bad.Completed
	sameBytes(t, "dropped destination's known-good prefix", readFile(t, backing)[:c], data[:c])
	if rem := bad.Remaining[0]; rem != [3]int64{c, size - c, c} {
		t.Errorf("dropped destination remaining = %v; want [%d %d %d]", rem, c, size-c, c)
	}
	if u := bad.UnwrittenRanges; len(u) != 1 || u[0] != [2]int64{4 << 20, 4 << 20} {
		t.Errorf("dropped destination unwritten_ranges = %v; want [[%d %d]]: the jobs after the one it failed in\n%s", u, 4<<20, 4<<20, r.stdout)
	}
	if got := readFile(t, backing)[4<<20:]; !bytes.Equal(got, old[4<<20:]) {
		t.Errorf("the dropped destination's unwritten range was written")
	}
	resume := fmt.Sprintf("--offset %d --dest-offset %d --length %d", c, c, size-c)
	if !strings.Contains(r.stderr, resume) || !strings.Contains(r.stderr, uri) {
		t.Errorf("stderr %q does not tell how to finish %s (%s)", r.stderr, uri, resume)
	}
	// The fault gone, the printed options finish the dropped destination.
	if err := os.Remove(trigger); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"copy"}, strings.Fields(resume)...)
	if r := runCLI(t, "", append(args, src, uri)...); r.code != 0 {
		t.Fatalf("finishing copy = %v", r)
	}
	sameBytes(t, "dropped destination after the finishing copy", readFile(t, backing), data)
}

// TestEveryDestinationFailedReport fails every write on both destinations
// under --ignore-errors: nothing is complete.
func TestEveryDestinationFailedReport(t *testing.T) {
	t.Parallel()
	const size = 2 << 20
	dir := t.TempDir()
	src := writeFile(t, dir, "src", randomBytes(61, size))
	var uris []string
	for range 2 {
		s := nbdtest.Nbdkit(t, "--filter=error", "memory", strconv.Itoa(size), "error-pwrite=EIO", "error-pwrite-rate=100%")
		uris = append(uris, s.URI)
	}
	r := runCLI(t, "", append([]string{"copy", "--ignore-errors", "--no-sparse", "--json", "--sub-job-size", "256K", src}, uris...)...)
	if r.code != exitWriteError {
		t.Fatalf("copy = %v; want exit 3", r)
	}
	rep := parseReport(t, r)
	if rep.Completed == nil || *rep.Completed != 0 || len(rep.Remaining) != 1 || rep.Remaining[0] != [3]int64{0, size, 0} {
		t.Errorf("completed = %s, remaining = %v; want 0 and the whole region", deref(rep.Completed), rep.Remaining)
	}
	for _, d := range rep.Destinations {
		if d.Completed == nil || *d.Completed != 0 {
			t.Errorf("destination %+v; want completed 0", d)
		}
	}
}

// deref formats an optional number.
func deref(p *int64) string {
	if p == nil {
		return "null"
	}
	return strconv.FormatInt(*p, 10)
}
