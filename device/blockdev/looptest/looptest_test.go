//go:build linux

package looptest_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
)

// ioctlInt opens dev read-only and returns the int an ioctl reports.
func ioctlInt(t *testing.T, dev string, req uint) int {
	t.Helper()
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	v, err := unix.IoctlGetInt(fd, req)
	if err != nil {
		t.Fatalf("ioctl %#x on %s: %v", req, dev, err)
	}
	return v
}

func TestNew(t *testing.T) {
	var dev, file string
	t.Run("attach", func(t *testing.T) {
		dev, file = looptest.NewWithFile(t, 8<<20, looptest.SectorSize(4096), looptest.ReadOnly())
		var st unix.Stat_t
		if err := unix.Stat(dev, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
			t.Fatalf("New returned %s: stat = %v, mode %#o; want a block device", dev, err, st.Mode)
		}
		fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		size, err := unix.IoctlGetInt(fd, unix.BLKGETSIZE64)
		unix.Close(fd)
		if err != nil || size != 8<<20 {
			t.Errorf("BLKGETSIZE64(%s) = %d, %v; want %d", dev, size, err, 8<<20)
		}
		if got := ioctlInt(t, dev, unix.BLKSSZGET); got != 4096 {
			t.Errorf("BLKSSZGET(%s) = %d; want 4096", dev, got)
		}
		if got := ioctlInt(t, dev, unix.BLKROGET); got != 1 {
			t.Errorf("BLKROGET(%s) = %d; want 1 (ReadOnly)", dev, got)
		}
		b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != file {
			t.Errorf("backing file of %s = %q; want %q", dev, got, file)
		}
	})
	if dev == "" {
		return // skipped
	}
	// The subtest's cleanup detached the device.
	if _, err := os.Stat(filepath.Join("/sys/block", filepath.Base(dev), "loop")); !os.IsNotExist(err) {
		t.Errorf("%s still attached after the test's cleanup (stat loop/: %v)", dev, err)
	}
}

func TestAddPartition(t *testing.T) {
	var part string
	t.Run("add", func(t *testing.T) {
		dev := looptest.New(t, 16<<20, looptest.PartScan())
		part = looptest.AddPartition(t, dev, 2, 1<<20, 4<<20)
		if want := dev + "p2"; part != want {
			t.Errorf("AddPartition(%s, 2) = %s; want %s", dev, part, want)
		}
		fd, err := unix.Open(part, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if size, err := unix.IoctlGetInt(fd, unix.BLKGETSIZE64); err != nil || size != 4<<20 {
			t.Errorf("BLKGETSIZE64(%s) = %d, %v; want %d", part, size, err, 4<<20)
		}
	})
	if part == "" {
		return // skipped
	}
	if _, err := os.Stat(filepath.Join("/sys/class/block", filepath.Base(part))); !os.IsNotExist(err) {
		t.Errorf("partition %s still exists after cleanup (%v)", part, err)
	}
}

func TestAvailable(t *testing.T) {
	err := looptest.Available()
	if os.Geteuid() != 0 && err == nil {
		t.Errorf("Available() = nil for a non-root user; want an error")
	}
	t.Logf("Available() = %v", err)
}
