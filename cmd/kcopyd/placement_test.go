package main

import (
	"os"
	"strings"
	"testing"

	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
)

// TestRegionsPartitionOverlap copies --regions from a partition to its
// own disk. A line whose ranges overlap on the disk (within one line, as
// the engine would find, or between lines, which no single job shows) is
// refused before anything is written, with status 1.
func TestRegionsPartitionOverlap(t *testing.T) {
	t.Parallel()
	disk := looptest.New(t, 8<<20, looptest.PartScan())
	part := looptest.AddPartition(t, disk, 1, 1<<20, 4<<20) // disk bytes [1M, 5M)
	if err := os.WriteFile(disk, randomBytes(62, 8<<20), 0); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, regions, want string
	}{
		// The last line reads disk [1M, 1M+64K) and writes disk
		// [1M+32K, +64K).
		{"within a line", "0 64K 6M\n0 64K 1056K\n", "regions line 2"},
		// Line 1 writes disk [1280K, +64K), which line 2 reads as
		// partition bytes [256K, +64K).
		{"between lines", "0 64K 1280K\n256K 64K 7M\n", "regions line 1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			snap := takeSnapshot(t, disk)
			r := runCLI(t, tt.regions, "copy", "--regions", "-", part, disk)
			if r.code != exitUsage || !strings.Contains(r.stderr, "overlap") || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("copy --regions from %s to %s = %v; want exit 1 naming the overlap and %s", part, disk, r, tt.want)
			}
			snap.unchanged(t)
		})
	}
	// Without overlap the same placement copies.
	r := runCLI(t, "0 64K 6M\n64K 64K 7M\n", "copy", "--regions", "-", part, disk)
	if r.code != 0 {
		t.Errorf("copy --regions without overlap = %v; want exit 0", r)
	}
}

// TestZeroRegionsPartitionOverlap zeroes a disk and its partition with
// --regions; the engine refuses a line whose two ranges overlap on the
// disk, and the command must find that before zeroing anything.
func TestZeroRegionsPartitionOverlap(t *testing.T) {
	t.Parallel()
	disk := looptest.New(t, 8<<20, looptest.PartScan())
	part := looptest.AddPartition(t, disk, 1, 1<<20, 4<<20) // disk bytes [1M, 5M)
	if err := os.WriteFile(disk, randomBytes(63, 8<<20), 0); err != nil {
		t.Fatal(err)
	}
	snap := takeSnapshot(t, disk)
	// Line 2 zeroes disk [0, 2M) and partition [0, 2M) = disk [1M, 3M).
	r := runCLI(t, "3M 64K\n0 2M\n", "zero", "--force", "--regions", "-", disk, part)
	if r.code != exitUsage || !strings.Contains(r.stderr, "regions line 2") || !strings.Contains(r.stderr, "overlap") {
		t.Errorf("zero --regions of %s and %s = %v; want exit 1 naming line 2", disk, part, r)
	}
	snap.unchanged(t)
}
