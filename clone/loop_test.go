package clone_test

import (
	"bytes"
	"os"
	"path/filepath"
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
