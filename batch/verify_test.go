package batch_test

import (
	"context"
	"errors"
	"testing"

	"github.com/kcopyd/kcopyd/batch"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
	"github.com/kcopyd/kcopyd/plan"
)

// copyOf returns a Mem holding what src holds.
func copyOf(t *testing.T, src *device.Mem) *device.Mem {
	t.Helper()
	m := device.NewMem(src.Size())
	if _, err := m.WriteAt(src.Bytes(), 0); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestVerify compares three destinations over two regions: one identical,
// one with differences in two chunks of the second region, one that
// cannot be read in the first region. The unreadable one is compared no
// further; the others are compared to the end.
func TestVerify(t *testing.T) {
	src := patterned(t, 2<<20)
	same, differs := copyOf(t, src), copyOf(t, src)
	differs.WriteAt([]byte{0, 0}, 1<<20+5)            // chunk 0 of region 1 (at 1 MiB)
	differs.WriteAt([]byte{0}, 1<<20+3*chunk+chunk-1) // its last byte of chunk 3
	bad := faultdev.Wrap(copyOf(t, src), faultdev.Reads(faultdev.Range(4096, 1, faultdev.Always(nil))))
	c := newClient(t)
	regions := []plan.Region{{Src: 0, Dest: 0, Len: 1 << 20}, {Src: 1 << 20, Dest: 1 << 20, Len: 1 << 20}}
	var last int64
	res := batch.Verify(context.Background(), c, &batch.VerifyOptions{Src: src, Dests: []device.Device{same, differs, bad}, Regions: regions,
		ChunkSize: chunk / 2, Progress: func(n int64) { last = n }})
	if res.ReadErr != nil || res.Canceled || res.Abandoned {
		t.Fatalf("result %+v; want no source error, not canceled", res)
	}
	if d := res.Dests[0]; d.FirstDiff != -1 || d.Chunks != 0 || d.Err != nil {
		t.Errorf("identical destination: %+v", d)
	}
	if d := res.Dests[1]; d.FirstDiff != 1<<20+5 || d.Chunks != 2 || d.Err != nil {
		t.Errorf("differing destination: %+v; want the first difference at %d in 2 chunks", d, 1<<20+5)
	}
	if d := res.Dests[2]; d.Err == nil || !errors.Is(d.Err, faultdev.ErrInjected) {
		t.Errorf("unreadable destination: %+v; want its read error", d)
	}
	if res.Compared != 2<<20 || last != res.Compared {
		t.Errorf("Compared = %d, last progress %d; want %d", res.Compared, last, 2<<20)
	}
}

// TestVerifyZeroAndCancel checks VerifyZero, and that a canceled context
// proves nothing.
func TestVerifyZeroAndCancel(t *testing.T) {
	c := newClient(t)
	z, nz := device.NewMem(1<<20), device.NewMem(1<<20)
	nz.WriteAt([]byte{1}, 3*chunk)
	regions := []plan.Region{{Dest: 0, Len: 1 << 20}}
	res := batch.Verify(context.Background(), c, &batch.VerifyOptions{Dests: []device.Device{z, nz}, Regions: regions})
	if res.Dests[0].FirstDiff != -1 || res.Dests[1].FirstDiff != 3*chunk || res.Dests[1].Chunks != 1 {
		t.Errorf("VerifyZero: %+v; want the second destination to differ at %d in 1 chunk", res.Dests, 3*chunk)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res = batch.Verify(ctx, c, &batch.VerifyOptions{Dests: []device.Device{z}, Regions: regions})
	if !res.Canceled || res.Compared == 1<<20 {
		t.Errorf("canceled Verify = %+v; want Canceled, not everything compared", res)
	}
}
