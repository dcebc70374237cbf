package main

import (
	"bytes"
	"testing"

	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
)

// TestBlockDirectDefault: block devices are opened with O_DIRECT by
// default, but a region O_DIRECT cannot serve (here 512-byte aligned on a
// 4096-byte-sector device) still copies, through the page cache, as it
// did before O_DIRECT became the default; only --direct refuses it
// (TestCopyBlockDevices). --direct and --buffered together are refused.
func TestBlockDirectDefault(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := randomBytes(17, 1<<20)
	src := writeFile(t, dir, "src", data)
	dev4k := looptest.New(t, 2<<20, looptest.SectorSize(4096))
	for _, args := range [][]string{
		{"copy", "--length", "4K", "--dest-offset", "512", src, dev4k},
		{"copy", "--buffered", "--length", "4K", "--dest-offset", "512", src, dev4k},
	} {
		if r := runCLI(t, "", args...); r.code != 0 {
			t.Fatalf("%v = %v; want exit 0", args, r)
		}
		if got := readFile(t, dev4k)[512 : 512+4096]; !bytes.Equal(got, data[:4096]) {
			t.Fatalf("%v: the device does not hold the copied bytes", args)
		}
	}
	// Aligned, whole device to a file and back: O_DIRECT both ways.
	out := dir + "/out"
	if r := runCLI(t, "", "copy", "--create", "--length", "1M", src, dev4k); r.code != 0 {
		t.Fatalf("copy to the device = %v", r)
	}
	if r := runCLI(t, "", "copy", "--create", "--length", "1M", dev4k, out); r.code != 0 {
		t.Fatalf("copy from the device = %v", r)
	}
	if !bytes.Equal(readFile(t, out), data) {
		t.Fatal("round trip through the device changed the bytes")
	}
	snap := takeSnapshot(t, dev4k)
	if r := runCLI(t, "", "copy", "--direct", "--buffered", src, dev4k); r.code != exitUsage {
		t.Fatalf("--direct --buffered = %v; want exit %d", r, exitUsage)
	}
	snap.unchanged(t)
}
