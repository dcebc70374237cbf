//go:build linux

// Package looptest makes Linux loop devices for tests.
//
// New attaches a loop device to a sparse file in t.TempDir and detaches it
// in t.Cleanup. Where loop devices cannot be made (not root, no losetup, no
// /dev/loop-control, or losetup failing, as in unprivileged containers) it
// skips the test with a message saying why, so that tests using it pass on
// developer machines and run fully in CI as root.
//
//	func TestCopy(t *testing.T) {
//		path := looptest.New(t, 64<<20, looptest.SectorSize(4096))
//		d, err := blockdev.Open(path, blockdev.Options{Direct: true})
//		...
//	}
package looptest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Option changes how a loop device is set up.
type Option func(*config)

type config struct {
	sectorSize int
	directIO   bool
	readOnly   bool
	partScan   bool
	offset     int64
	sizeLimit  int64
}

// SectorSize sets the loop device's logical block size in bytes (losetup
// --sector-size): 512 (the default), 1024, 2048 or 4096. SectorSize(4096)
// makes a 4Kn device on which O_DIRECT needs 4096-byte alignment.
func SectorSize(n int) Option { return func(c *config) { c.sectorSize = n } }

// DirectIO makes the loop driver access its backing file with direct I/O
// (losetup --direct-io=on) instead of through the page cache.
func DirectIO() Option { return func(c *config) { c.directIO = true } }

// ReadOnly attaches the device read-only (losetup --read-only).
func ReadOnly() Option { return func(c *config) { c.readOnly = true } }

// PartScan allows partitions on the device (losetup --partscan): the kernel
// scans the backing file for a partition table it knows, and AddPartition
// can create partitions without one. Partitions appear as <path>p1, ...
func PartScan() Option { return func(c *config) { c.partScan = true } }

// Offset makes the device start n bytes into its backing file (losetup
// --offset).
func Offset(n int64) Option { return func(c *config) { c.offset = n } }

// SizeLimit makes the device at most n bytes long (losetup --sizelimit).
func SizeLimit(n int64) Option { return func(c *config) { c.sizeLimit = n } }

// Available returns nil when this process can attach loop devices, else an
// error saying what is missing. It does not try to attach one.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("loop devices need root")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		return fmt.Errorf("loop devices need losetup (util-linux): %w", err)
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return fmt.Errorf("loop devices need /dev/loop-control (modprobe loop): %w", err)
	}
	return nil
}

// New creates a sparse backing file of size bytes in t.TempDir, attaches a
// loop device to it and returns the device's path, such as /dev/loop3. The
// device reads as zeroes and is detached in t.Cleanup; close every handle
// on it before the test's cleanups run (cleanups registered later run
// first). New skips the test when loop devices cannot be made.
func New(t testing.TB, size int64, opts ...Option) string {
	t.Helper()
	path, _ := NewWithFile(t, size, opts...)
	return path
}

// NewWithFile is New that also returns the backing file's path, so that a
// test can check what reached it.
func NewWithFile(t testing.TB, size int64, opts ...Option) (dev, file string) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("looptest: %v", err)
	}
	file = filepath.Join(t.TempDir(), "loop.img")
	f, err := os.Create(file)
	if err != nil {
		t.Fatalf("looptest: %v", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("looptest: sizing backing file: %v", err)
	}
	return Attach(t, file, opts...), file
}

// Attach attaches a loop device to the existing file and returns the
// device's path; it is detached in t.Cleanup. The file's size should be a
// multiple of the sector size. Attach skips the test when loop devices
// cannot be made.
func Attach(t testing.TB, file string, opts ...Option) string {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("looptest: %v", err)
	}
	var c config
	for _, o := range opts {
		o(&c)
	}
	if n := c.sectorSize; n != 0 && (n < 512 || n > 4096 || n&(n-1) != 0) {
		t.Fatalf("looptest: SectorSize(%d): want 512, 1024, 2048 or 4096", n)
	}
	args := []string{"--find", "--show"}
	if c.sectorSize != 0 {
		args = append(args, "--sector-size", strconv.Itoa(c.sectorSize))
	}
	if c.directIO {
		args = append(args, "--direct-io=on")
	}
	if c.readOnly {
		args = append(args, "--read-only")
	}
	if c.partScan {
		args = append(args, "--partscan")
	}
	if c.offset != 0 {
		args = append(args, "--offset", strconv.FormatInt(c.offset, 10))
	}
	if c.sizeLimit != 0 {
		args = append(args, "--sizelimit", strconv.FormatInt(c.sizeLimit, 10))
	}
	args = append(args, file)
	var stdout, stderr strings.Builder
	cmd := exec.Command("losetup", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Skipf("looptest: cannot attach a loop device: losetup %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	dev := strings.TrimSpace(stdout.String())
	if !strings.HasPrefix(dev, "/dev/") || strings.ContainsAny(dev, " \n") {
		t.Fatalf("looptest: losetup %s printed %q, not a device path (stderr: %s)", strings.Join(args, " "), dev, stderr.String())
	}
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("looptest: losetup --detach %s: %v: %s", dev, err, strings.TrimSpace(string(out)))
		}
	})
	if c.directIO {
		// util-linux only warns when the backing file system refuses
		// direct I/O; make the test see it.
		if b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "dio")); err == nil && strings.TrimSpace(string(b)) != "1" {
			t.Skipf("looptest: %s: the backing file's file system refuses direct I/O (loop/dio = %s)", dev, strings.TrimSpace(string(b)))
		}
	}
	return dev
}

// AddPartition creates partition n (from 1) of off and length bytes on the
// loop device dev, which must have been attached with PartScan, with the
// BLKPG ioctl (no partition table is needed or written), waits up to ten
// seconds for its device node, and returns its path (<dev>p<n>). The
// partition is deleted in t.Cleanup. off and length must be multiples of
// the logical block size.
func AddPartition(t testing.TB, dev string, n int, off, length int64) string {
	t.Helper()
	if err := blkpg(dev, unix.BLKPG_ADD_PARTITION, n, off, length); err != nil {
		t.Fatalf("looptest: adding partition %d [%d, +%d) to %s: %v", n, off, length, dev, err)
	}
	t.Cleanup(func() {
		if err := blkpg(dev, unix.BLKPG_DEL_PARTITION, n, 0, 0); err != nil {
			t.Errorf("looptest: deleting partition %d of %s: %v", n, dev, err)
		}
	})
	path := fmt.Sprintf("%sp%d", dev, n)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := os.Stat(path)
		if err == nil {
			return path
		}
		if time.Now().After(deadline) {
			t.Fatalf("looptest: node of partition %d of %s did not appear: %v", n, dev, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// blkpg adds or deletes partition n of the block device dev.
func blkpg(dev string, op int32, n int, off, length int64) error {
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dev, Err: err}
	}
	defer unix.Close(fd)
	part := unix.BlkpgPartition{Start: off, Length: length, Pno: int32(n)}
	arg := unix.BlkpgIoctlArg{
		Op:      op,
		Datalen: int32(unsafe.Sizeof(part)),
		Data:    (*byte)(unsafe.Pointer(&part)),
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKPG, uintptr(unsafe.Pointer(&arg)))
	runtime.KeepAlive(&part)
	if errno != 0 {
		return fmt.Errorf("BLKPG: %w", errno)
	}
	return nil
}
