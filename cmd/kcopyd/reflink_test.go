package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
)

// TestCopyReflink copies a file on XFS with reflink to two new files on
// the same file system: the copies share the source's blocks (the engine's
// copy offload, which zero detection would have ruled out), and the bytes,
// holes and zeroes included, are the source's.
func TestCopyReflink(t *testing.T) {
	t.Parallel()
	mnt := looptest.XFSReflink(t)
	src, want := makeSparse(t, mnt)
	d1, d2 := filepath.Join(mnt, "d1"), filepath.Join(mnt, "d2")
	if r := runCLI(t, "", "copy", "--create", src, d1, d2); r.code != 0 {
		t.Fatalf("copy --create = %v", r)
	}
	for _, d := range []string{d1, d2} {
		if !bytes.Equal(readFile(t, d), want) {
			t.Fatalf("%s differs from the source", d)
		}
		if !looptest.Shared(t, d) {
			t.Fatalf("%s shares no block with the source: the copy was not offloaded", d)
		}
	}
	// --direct reads and writes through memory: nothing shared.
	d3 := filepath.Join(mnt, "d3")
	if r := runCLI(t, "", "copy", "--direct", "--create", src, d3); r.code != 0 {
		t.Fatalf("copy --direct --create = %v", r)
	}
	if !bytes.Equal(readFile(t, d3), want) || looptest.Shared(t, d3) {
		t.Fatalf("--direct copy: equal %v, shared %v; want equal, not shared", bytes.Equal(readFile(t, d3), want), looptest.Shared(t, d3))
	}
}
