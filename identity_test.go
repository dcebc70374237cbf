package kcopyd_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/blockdev"
	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
)

// TestOverlapThroughLoopDevice checks that the engine refuses a copy from a
// file to a loop device over that file when the ranges overlap in the
// file, judged by placement (the loop's backing file and offset), and
// accepts one that does not overlap.
func TestOverlapThroughLoopDevice(t *testing.T) {
	file := filepath.Join(t.TempDir(), "back")
	if err := os.WriteFile(file, randomBytes(5, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	loopPath := looptest.Attach(t, file, looptest.Offset(1<<20))
	loop, err := blockdev.Open(loopPath, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Close()
	src, err := device.OpenFile(file, device.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	c := newClient(t, nil)
	for _, tc := range []struct {
		srcOff, dstOff, n int64
		overlap           bool
	}{
		{0, 0, 1 << 20, false},            // file [0, 1M) to file [1M, 2M)
		{0, 0, 1<<20 + 4096, true},        // file [0, 1M+4K) to file [1M, ...)
		{2 << 20, 512 << 10, 4096, false}, // file [2M, +4K) to [1.5M, +4K)
		{2 << 20, 1 << 20, 4096, true},    // the same bytes
	} {
		job, err := c.Copy(t.Context(), kcopyd.Region{Dev: src, Off: tc.srcOff, Len: tc.n},
			[]kcopyd.Region{{Dev: loop, Off: tc.dstOff, Len: tc.n}}, 0, nil)
		if got := errors.Is(err, kcopyd.ErrOverlap); got != tc.overlap {
			t.Errorf("Copy(file [%d, +%d) to loop-at-1MiB [%d, +%d)) = %v; want ErrOverlap %v", tc.srcOff, tc.n, tc.dstOff, tc.n, err, tc.overlap)
		}
		if err == nil {
			if err := job.Wait(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
	}
}
