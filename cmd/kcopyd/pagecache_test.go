package main

import (
	"path/filepath"
	"testing"

	"github.com/kcopyd/kcopyd/internal/testutil"
)

// TestCopyLeavesPageCache copies a 32 MiB file whose pages are not cached
// into a new file and an existing one, then verifies the copies, and
// checks with mincore that the reads left (almost) nothing in the page
// cache (location.Options.DropBehind); without it every page read stays
// cached. Dropping is best effort: a page that another reader holds at
// that moment stays (large folios span chunks read in parallel: 1 GiB
// copies here left 3 to 12 MiB of the source cached, and under a CPU hog
// up to a quarter of a 32 MiB file stayed). So that the test checks the
// command's wiring and not that race, each run reads in one 32 MiB
// chunk. Destination writes are WriteBehind's, tested in package device.
func TestCopyLeavesPageCache(t *testing.T) {
	t.Parallel()
	const size = 32 << 20
	dir := t.TempDir()
	src := writeFile(t, dir, "src", randomBytes(1, size))
	old := writeFile(t, dir, "old", randomBytes(2, size))
	testutil.SkipUnlessPageCache(t, src)
	for _, p := range []string{src, old} {
		testutil.Uncache(t, p)
	}
	dst := filepath.Join(dir, "dst")
	const limit = size / 4096 / 16
	if r := runCLI(t, "", "copy", "-q", "--sub-job-size", "32M", "--create", src, dst, old); r.code != 0 {
		t.Fatalf("copy = %v; want exit 0", r)
	}
	if n := testutil.CachedPages(t, src, -1); n > limit {
		t.Errorf("after copy: %d pages of the source cached; want at most %d", n, limit)
	}
	for _, p := range []string{src, dst, old} {
		testutil.Uncache(t, p)
	}
	if r := runCLI(t, "", "verify", "-q", "--sub-job-size", "32M", src, dst, old); r.code != 0 {
		t.Fatalf("verify = %v; want exit 0", r)
	}
	for _, p := range []string{src, dst, old} {
		if n := testutil.CachedPages(t, p, -1); n > limit {
			t.Errorf("after verify: %d pages of %s cached; want at most %d", n, filepath.Base(p), limit)
		}
	}
}
