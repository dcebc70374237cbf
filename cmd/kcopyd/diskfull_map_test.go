package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestCopyDiskFullMapRerun is part 3 of the trust issue with --map: a copy
// to a file system that fills up and to the roomy disk exits 3 and records
// the full destination's failure in the map; once space is freed, the same
// command with --retry-failed completes it, both destinations end
// identical to the source, and the map says complete.
func TestCopyDiskFullMapRerun(t *testing.T) {
	t.Parallel()
	small := mountExt4(t, 32<<20)
	filler := filepath.Join(small, "filler")
	if err := os.WriteFile(filler, bytes.Repeat([]byte{0x5a}, 22<<20), 0o644); err != nil {
		t.Skipf("cannot fill the small file system: %v", err)
	}
	const size = 16 << 20
	dir := t.TempDir()
	data := randomBytes(91, size)
	src := writeFile(t, dir, "src", data)
	good := filepath.Join(dir, "good")
	full := filepath.Join(small, "full")
	mapPath := filepath.Join(dir, "copy.map")
	args := []string{"copy", "--create", "--no-sparse", "--json", "--map", mapPath, src, full, good}

	r := runCLI(t, "", args...)
	if r.code != exitWriteError {
		t.Fatalf("copy to a file system that fills up = %v; want exit 3", r)
	}
	var rep jsonReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Map == nil || rep.Map.Complete || rep.Map.Failed == 0 {
		t.Fatalf("map after the failed run = %+v; want failed bytes recorded, not complete", rep.Map)
	}
	if !bytes.Equal(readFile(t, good), data) {
		t.Fatal("the destination on the roomy disk is not identical to the source")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, "", append([]string{args[0], "--retry-failed"}, args[1:]...)...)
	if r.code != exitOK {
		t.Fatalf("rerun with --retry-failed after freeing space = %v; want exit 0", r)
	}
	rep = jsonReport{}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Map == nil || !rep.Map.Complete || rep.Map.Failed != 0 || rep.Map.Untried != 0 {
		t.Fatalf("map after the rerun = %+v; want complete", rep.Map)
	}
	for _, p := range []string{full, good} {
		if !bytes.Equal(readFile(t, p), data) {
			t.Errorf("%s differs from the source after the rerun", p)
		}
	}
}
