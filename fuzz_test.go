package kcopyd_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
)

// FuzzCopy copies random regions with random sub-job sizes and destination
// counts between memory devices and checks every destination byte for
// byte, and that nothing outside the regions changed. It exercises
// splitting at every boundary: lengths just under, at and over multiples
// of the sub-job size, zero-length jobs, zero chunks.
func FuzzCopy(f *testing.F) {
	f.Add(uint16(1), uint32(0), uint32(0), uint8(1), uint8(0), uint8(0))
	f.Add(uint16(4096), uint32(100), uint32(7), uint8(3), uint8(1), uint8(1))
	f.Add(uint16(8*4096+1), uint32(4095), uint32(4097), uint8(8), uint8(2), uint8(2))
	f.Add(uint16(65535), uint32(1), uint32(65536), uint8(2), uint8(0), uint8(3))
	f.Fuzz(func(t *testing.T, length uint16, srcOff, dstOff uint32, ndest, subSel, flagSel uint8) {
		n := int64(length)*4 + int64(length%7) // up to ~256 KiB
		so, do := int64(srcOff%100000), int64(dstOff%100000)
		nd := int(ndest%kcopyd.MaxRegions) + 1
		sub := []int64{4096, 8192, 12288, 65536}[subSel%4]
		flags := []kcopyd.Flags{0, kcopyd.IgnoreError, kcopyd.DetectZeroes, kcopyd.SkipZeroes}[flagSel%4]

		data := randomBytes(uint64(length)^uint64(srcOff), int(so+n))
		clear(data[so+n/3 : so+n/2]) // a run of zeroes for the zero flags
		src := device.NewMemFrom(data)
		c, err := kcopyd.NewClient(&kcopyd.Options{SubJobSize: sub, IOWorkers: 4})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var dests []kcopyd.Region
		var mems []*device.Mem
		for i := range nd {
			m := device.NewMem(do + n + int64(i))
			mems = append(mems, m)
			dests = append(dests, kcopyd.Region{Dev: m, Off: do + int64(i), Len: n})
		}
		job, err := c.Copy(context.Background(), kcopyd.Region{Dev: src, Off: so, Len: n}, dests, flags, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := job.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		if job.Progress() != n {
			t.Fatalf("Progress = %d; want %d", job.Progress(), n)
		}
		for i, m := range mems {
			got := make([]byte, m.Size())
			m.ReadAt(got, 0)
			off := do + int64(i)
			if !bytes.Equal(got[off:off+n], data[so:so+n]) {
				t.Fatalf("destination %d differs (n=%d so=%d do=%d sub=%d flags=%d)", i, n, so, off, sub, flags)
			}
			if !bytes.Equal(got[:off], make([]byte, off)) {
				t.Fatalf("destination %d written before its region", i)
			}
		}
	})
}
