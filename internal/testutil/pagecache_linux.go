package testutil

import (
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// CachedPages returns how many pages of the first n bytes of the file at
// path are in the page cache (mincore); n < 0 means the whole file.
func CachedPages(t testing.TB, path string, n int) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n < 0 {
		fi, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		n = int(fi.Size())
	}
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

// Uncache writes back the file at path and drops its pages from the page
// cache (POSIX_FADV_DONTNEED), failing the test if any stay.
func Uncache(t testing.TB, path string) {
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
	if n := CachedPages(t, path, -1); n != 0 {
		t.Fatalf("%d pages of %s still cached after FADV_DONTNEED", n, path)
	}
}

// SkipUnlessPageCache skips the test when the page cache of the file at
// path cannot be probed and dropped as the page-cache tests need: on
// tmpfs, or where reads with RWF_DONTCACHE are refused (Linux before
// 6.14, a file system without it). It leaves the file uncached.
func SkipUnlessPageCache(t testing.TB, path string) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil || st.Type == unix.TMPFS_MAGIC {
		t.Skipf("%s is on tmpfs (or statfs failed: %v): its pages cannot be dropped", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = unix.Preadv2(int(f.Fd()), [][]byte{make([]byte, 4096)}, 0, unix.RWF_DONTCACHE)
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	if err != nil {
		t.Skipf("preadv2(RWF_DONTCACHE) on %s = %v: the kernel or file system cannot drop pages behind reads", path, err)
	}
}
