package main

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
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
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type == unix.TMPFS_MAGIC {
		t.Skipf("%s is on tmpfs (or statfs failed: %v): its pages cannot be dropped", dir, err)
	}
	src := writeFile(t, dir, "src", randomBytes(1, size))
	old := writeFile(t, dir, "old", randomBytes(2, size))
	for _, p := range []string{src, old} {
		uncachePages(t, p)
	}
	if !dontcacheWorks(t, src) {
		t.Skip("preadv2(RWF_DONTCACHE) is refused here (Linux before 6.14, or the file system): reads cannot drop their pages")
	}
	dst := filepath.Join(dir, "dst")
	const limit = size / 4096 / 16
	if r := runCLI(t, "", "copy", "-q", "--sub-job-size", "32M", "--create", src, dst, old); r.code != 0 {
		t.Fatalf("copy = %v; want exit 0", r)
	}
	if n := cachedPages(t, src); n > limit {
		t.Errorf("after copy: %d pages of the source cached; want at most %d", n, limit)
	}
	for _, p := range []string{src, dst, old} {
		uncachePages(t, p)
	}
	if r := runCLI(t, "", "verify", "-q", "--sub-job-size", "32M", src, dst, old); r.code != 0 {
		t.Fatalf("verify = %v; want exit 0", r)
	}
	for _, p := range []string{src, dst, old} {
		if n := cachedPages(t, p); n > limit {
			t.Errorf("after verify: %d pages of %s cached; want at most %d", n, filepath.Base(p), limit)
		}
	}
}

// uncachePages syncs the file at path and drops its pages from the page
// cache.
func uncachePages(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if n := cachedPages(t, path); n != 0 {
		t.Fatalf("%d pages of %s still cached after FADV_DONTNEED", n, path)
	}
}

// dontcacheWorks reports whether a read with RWF_DONTCACHE of the
// uncached file at path succeeds and leaves it uncached.
func dontcacheWorks(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = unix.Preadv2(int(f.Fd()), [][]byte{make([]byte, 4096)}, 0, unix.RWF_DONTCACHE)
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	return err == nil
}

// cachedPages returns how many pages of the file at path are in the page
// cache (mincore).
func cachedPages(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	n := int(fi.Size())
	if n == 0 {
		return 0
	}
	m, err := unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap %s: %v", path, err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (n+4095)/4096)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(n), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatalf("mincore %s: %v", path, errno)
	}
	count := 0
	for _, v := range vec {
		count += int(v & 1)
	}
	return count
}
