//go:build linux

package blockdev_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/blockdev"
	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
)

// TestLoopPlacement checks that a loop device is placed in its backing
// file at the loop's offset, so that it, a second loop over the same file,
// and the file opened by any name (hard link, symlink, /proc/self/fd) are
// one store.
func TestLoopPlacement(t *testing.T) {
	whole, file := looptest.NewWithFile(t, 32*MiB)
	window := looptest.Attach(t, file, looptest.Offset(1*MiB), looptest.SizeLimit(8*MiB))
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Link(file, link); err != nil {
		t.Fatal(err)
	}
	sym := filepath.Join(t.TempDir(), "sym")
	if err := os.Symlink(file, sym); err != nil {
		t.Fatal(err)
	}
	held, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	procFD := "/proc/self/fd/" + strconv.Itoa(int(held.Fd()))

	w := open(t, whole, blockdev.Options{})
	win := open(t, window, blockdev.Options{})
	store, off := w.Placement()
	if off != 0 {
		t.Errorf("loop over the whole file: Placement() offset = %d; want 0", off)
	}
	for _, name := range []string{file, link, sym, procFD} {
		f, err := device.OpenFile(name, device.FileOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if id, base := device.PlacementOf(f); id != store || base != 0 {
			t.Errorf("PlacementOf(OpenFile(%s)) = %q, %d; want the loop device's store %q, 0", name, id, base, store)
		}
		f.Close()
	}
	if id, base := win.Placement(); id != store || base != 1*MiB {
		t.Errorf("loop at offset 1MiB: Placement() = %q, %d; want %q, %d", id, base, store, 1*MiB)
	}
	if win.Size() != 8*MiB {
		t.Errorf("loop with sizelimit 8MiB: Size() = %d", win.Size())
	}
	if w.Identity() == win.Identity() {
		t.Errorf("two loop devices have one Identity %q", w.Identity())
	}

	// The placement is the truth: a write through the window lands 1 MiB
	// into the whole device.
	want := pattern(64*KiB, 0, 3)
	writeAll(t, win, want, 0)
	if err := win.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, w, 1*MiB, 64*KiB); !bytes.Equal(got, want) {
		t.Errorf("data written at 0 of the offset loop is not at 1MiB of the whole loop")
	}
}

// TestLoopOverBlockDevice checks that a loop device whose backing file is
// a block device node is placed in that device (not further down: a loop
// over a loop is placed in the lower loop device, not in its file).
func TestLoopOverBlockDevice(t *testing.T) {
	lower := looptest.New(t, 8*MiB)
	upper := looptest.Attach(t, lower, looptest.Offset(64*KiB))
	l := open(t, lower, blockdev.Options{})
	u := open(t, upper, blockdev.Options{})
	if id, off := u.Placement(); id != l.Identity() || off != 64*KiB {
		t.Errorf("loop over %s at 64KiB: Placement() = %q, %d; want %q, %d", lower, id, off, l.Identity(), 64*KiB)
	}
}
