package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestMapRegionsOutOfOrder copies regions listed out of their offsets'
// order with --map: the map ends complete and a rerun has nothing to do
// (planned by offset, adjacent regions were joined into one job recorded
// at the first region's job offsets: the map was refused a range outside
// the job, and kcopyd panicked).
func TestMapRegionsOutOfOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := randomBytes(90, 2<<20)
	src := writeFile(t, dir, "src", data)
	dst := writeFile(t, dir, "dst", make([]byte, 2<<20))
	regions := writeFile(t, dir, "regions", []byte("1M 1M 1M\n0 1M 0\n"))
	m := filepath.Join(dir, "map")
	args := []string{"copy", "--map", m, "--regions", regions, "--sub-job-size", "256K", src, dst}
	if r := runCLI(t, "", args...); r.code != 0 {
		t.Fatalf("copy = %v", r)
	}
	sameBytes(t, "destination", readFile(t, dst), data)
	if r := runCLI(t, "", args...); r.code != 0 || !strings.Contains(r.stderr, "complete already") {
		t.Fatalf("rerun = %v; want nothing to do", r)
	}
}
