package clone_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kcopyd/kcopyd/clone"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/blockdev"
	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

// TestLoopDest clones a file onto a loop device opened with O_DIRECT (and
// larger than the file): aligned partial and whole-region writes, a
// discard passed down to the device, background hydration, a restart, and
// the device's backing file holds SOURCE with the writes at the end.
func TestLoopDest(t *testing.T) {
	const size, rs = 8 << 20, 64 << 10
	loop, backing := looptest.NewWithFile(t, size+1<<20)
	dir := t.TempDir()
	want := testutil.RandomDevice(t, size, 11).Bytes()
	writeFile(t, filepath.Join(dir, "src"), want)
	src, err := device.OpenFile(filepath.Join(dir, "src"), device.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := blockdev.Open(loop, blockdev.Options{Direct: true, Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	testutil.WritePattern(t, dst, 12, 0, size) // DEST starts with other data
	md, created, err := clone.OpenMetadataFile(filepath.Join(dir, "meta"), size, rs)
	if err != nil || !created {
		t.Fatalf("OpenMetadataFile = %v, %v; want a new file", created, err)
	}
	defer md.Close()
	c, err := clone.Open(src, dst, md, &clone.Options{RegionSize: rs, NoHydration: true})
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Limits().OffsetAlign; a < 512 {
		t.Fatalf("OffsetAlign = %d; want DEST's O_DIRECT alignment", a)
	}
	for _, w := range []struct{ off, n int64 }{{4096, 8192}, {3 * rs, 2 * rs}, {10*rs - 4096, 8192}} {
		p := device.AlignedBuf(int(w.n), 4096)
		testutil.FillPattern(p, uint64(w.off), w.off)
		if _, err := c.WriteAt(p, w.off); err != nil {
			t.Fatalf("WriteAt(%d, %d): %v", w.off, w.n, err)
		}
		copy(want[w.off:], p)
	}
	if err := c.Discard(20*rs, 2*rs); err != nil {
		t.Fatal(err)
	}
	if !testutil.CheckZero(t, dst, 20*rs, 2*rs) {
		t.Error("the discard did not reach the loop device")
	}
	clear(want[20*rs : 22*rs])
	if got := testutil.ReadRange(t, c, 0, size); !bytes.Equal(got, want) {
		t.Fatalf("clone differs at byte %d", testutil.FirstDiff(got, want))
	}
	closeClone(t, c)

	c, err = clone.Open(src, dst, md, nil) // region size from the metadata
	if err != nil {
		t.Fatal(err)
	}
	waitHydrated(t, c)
	closeClone(t, c)
	got, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:size], want) {
		t.Fatalf("the loop device's backing file differs at byte %d", testutil.FirstDiff(got[:size], want))
	}
}

// TestLoopDestIdentity checks that the metadata knows a loop device DEST
// by its backing file, not by its device number, which the kernel hands
// out again: the same loop device detached and attached to another file
// of the same size is refused, with nothing written; attached to the first
// file again, or that file opened directly, it is accepted.
func TestLoopDestIdentity(t *testing.T) {
	if err := looptest.Available(); err != nil {
		t.Skipf("looptest: %v", err)
	}
	const size, rs = 4 << 20, 64 << 10
	dir := t.TempDir()
	fileA, fileB := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	writeFile(t, fileA, make([]byte, size))
	other := testutil.RandomDevice(t, size, 14).Bytes()
	writeFile(t, fileB, other)
	writeFile(t, filepath.Join(dir, "src"), testutil.RandomDevice(t, size, 13).Bytes())
	src, err := device.OpenFile(filepath.Join(dir, "src"), device.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	md, _, err := clone.OpenMetadataFile(filepath.Join(dir, "meta"), size, rs)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	loop := attachLoop(t, "", fileA)
	// use opens DEST at dest (a loop device, or fileA directly), opens the
	// clone on it, calls f with the result and closes everything.
	use := func(dest string, f func(*clone.Clone, error)) {
		t.Helper()
		var dst device.Device
		var err error
		if dest == fileA {
			dst, err = device.OpenFile(dest, device.FileOptions{})
		} else {
			dst, err = blockdev.Open(dest, blockdev.Options{Direct: true})
		}
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		c, err := clone.Open(src, dst, md, &clone.Options{RegionSize: rs, NoHydration: true})
		if c != nil {
			defer closeClone(t, c)
		}
		f(c, err)
	}
	use(loop, func(c *clone.Clone, err error) {
		if err != nil {
			t.Fatal(err)
		}
		p := device.AlignedBuf(int(rs), 4096)
		testutil.FillPattern(p, 15, 0)
		if _, err := c.WriteAt(p, 0); err != nil {
			t.Fatal(err)
		}
	})
	mdBefore := readFile(t, md.String())

	detachLoop(t, loop)
	attachLoop(t, loop, fileB) // the same device number, another file
	use(loop, func(_ *clone.Clone, err error) {
		if !errors.Is(err, clone.ErrMetadataMismatch) {
			t.Errorf("Open with the loop device attached to another file: %v; want ErrMetadataMismatch", err)
		}
	})
	if !bytes.Equal(readFile(t, md.String()), mdBefore) {
		t.Error("the refused Open wrote the metadata")
	}
	if !bytes.Equal(readFile(t, fileB), other) {
		t.Error("the refused Open wrote the other file")
	}

	detachLoop(t, loop)
	attachLoop(t, loop, fileA)
	for _, dest := range []string{loop, fileA} {
		use(dest, func(_ *clone.Clone, err error) {
			if err != nil {
				t.Errorf("Open with DEST %s, the first file: %v", dest, err)
			}
		})
	}
}

// attachLoop attaches file to the loop device dev ("": a free one, chosen
// by losetup --find) and returns the device; it is detached in t.Cleanup
// unless detachLoop detached it first. When dev is given and another
// process took it meanwhile, the test is skipped.
func attachLoop(t *testing.T, dev, file string) string {
	t.Helper()
	args := []string{"--show", dev, file}
	if dev == "" {
		args = []string{"--find", "--show", file}
	}
	out, err := exec.Command("losetup", args...).CombinedOutput()
	if err != nil {
		if dev != "" {
			t.Skipf("cannot attach %s again (taken by another process?): %v: %s", dev, err, out)
		}
		t.Skipf("cannot attach a loop device: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() { detachLoopIf(dev, file) })
	return dev
}

// detachLoop detaches dev.
func detachLoop(t *testing.T, dev string) {
	t.Helper()
	if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
		t.Fatalf("losetup --detach %s: %v: %s", dev, err, out)
	}
}

// detachLoopIf detaches dev if it is still attached to file, so that a
// cleanup never detaches a device another process attached meanwhile.
func detachLoopIf(dev, file string) {
	out, err := exec.Command("losetup", "--noheadings", "--output", "BACK-FILE", dev).Output()
	if err == nil && strings.TrimSpace(string(out)) == file {
		exec.Command("losetup", "--detach", dev).Run()
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	p, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
