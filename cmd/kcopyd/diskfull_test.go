package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
)

// mountExt4 makes an ext4 file system of size bytes on a loop device,
// mounts it on a new directory and returns the directory; it skips the
// test when that is not possible.
func mountExt4(t *testing.T, size int64) string {
	t.Helper()
	dev := looptest.New(t, size)
	if out, err := execCommand("mkfs.ext4", "-q", "-F", "-m", "0", dev); err != nil {
		t.Skipf("mkfs.ext4: %v %s", err, out)
	}
	mnt := t.TempDir()
	if err := unix.Mount(dev, mnt, "ext4", 0, ""); err != nil {
		t.Skipf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

// TestCopyDiskFull copies to a destination on a small ext4 that fills up
// and to one on a roomy disk, buffered and with --direct.
func TestCopyDiskFull(t *testing.T) {
	t.Parallel()
	small := mountExt4(t, 16<<20)
	t.Run("buffered", func(t *testing.T) { checkDiskFull(t, small, 32<<20, "--no-sparse") })
	t.Run("direct", func(t *testing.T) { checkDiskFull(t, small, 32<<20, "--no-sparse", "--direct") })
}

// checkDiskFull copies size random bytes to a new file in small, a file
// system too small for them, and to one on a roomy disk: exit 3, the full
// one named with ENOSPC and the range that failed, every byte below that
// range right, the other complete and identical to the source.
func checkDiskFull(t *testing.T, small string, size int64, flags ...string) {
	t.Helper()
	dir := t.TempDir()
	data := randomBytes(uint64(size), size)
	src := writeFile(t, dir, "src", data)
	good := filepath.Join(dir, "good")
	full := filepath.Join(small, "full")
	t.Cleanup(func() { os.Remove(full) })
	args := append([]string{"copy", "--create", "--json"}, flags...)
	r := runCLI(t, "", append(args, src, full, good)...)
	if r.code != exitWriteError {
		t.Fatalf("copy to a file system that fills up = %v; want exit 3", r)
	}
	if !strings.Contains(r.stderr, "write error on "+full) || !strings.Contains(r.stderr, "no space left on device") ||
		!strings.Contains(r.stderr, "failed on "+full) || !strings.Contains(r.stderr, "completed on "+good) {
		t.Errorf("stderr %q does not name the full destination, ENOSPC, and the completed one", r.stderr)
	}
	if !bytes.Equal(readFile(t, good), data) {
		t.Errorf("the destination on the roomy disk is not identical to the source")
	}
	var rep jsonReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	d := rep.Destinations
	if len(d) != 2 || d[0].Error == nil || len(d[0].FailedRanges) == 0 || d[1].Error != nil || len(d[1].FailedRanges) != 0 {
		t.Fatalf("report destinations = %+v; want the full one failed with ranges, the other fine", d)
	}
	// Chunks are dispatched in ascending order and the destination is
	// dropped at its first failed write, so every byte below the first
	// failed range is the source's (later bytes may never have been
	// written, as documented).
	first := size
	for _, fr := range d[0].FailedRanges {
		first = min(first, fr[0])
	}
	if got := readFile(t, full); int64(len(got)) != size || !bytes.Equal(got[:first], data[:first]) {
		t.Errorf("below the first failed range (%d) the full destination differs from the source", first)
	}
	t.Logf("failed_ranges on the full file system: %v", d[0].FailedRanges)
}
