package kcopyd_test

import (
	"context"
	"errors"
	"testing"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
)

// TestVerify compares a source with three destinations: one identical, one
// with two differing bytes in different chunks, one with a run of
// differing bytes across a chunk boundary. Only the differing ones fail,
// with the exact first byte and ranges covering every differing byte.
func TestVerify(t *testing.T) {
	const sub = 16 << 10 // chunks of 8 KiB
	const n = 100 << 10
	const base = 4096 // destination offset: ranges and FirstDiff are destination bytes
	data := randomBytes(60, n)
	mk := func(flip ...int64) *device.Mem {
		b := make([]byte, base+n)
		copy(b[base:], data)
		for _, o := range flip {
			b[base+o] ^= 0xff
		}
		return device.NewMemFrom(b)
	}
	same := mk()
	two := mk(5, 70000)
	var run []int64
	for o := int64(8190); o < 8200; o++ {
		run = append(run, o)
	}
	across := mk(run...)
	c := newClient(t, &kcopyd.Options{SubJobSize: sub, MaxMemory: sub})
	j, err := c.Verify(context.Background(), kcopyd.Region{Dev: device.NewMemFrom(data), Len: n},
		[]kcopyd.Region{{Dev: same, Off: base, Len: n}, {Dev: two, Off: base, Len: n}, {Dev: across, Off: base, Len: n}}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = j.Wait(context.Background())
	var je *kcopyd.JobError
	if !errors.As(err, &je) || !errors.Is(err, kcopyd.ErrMismatch) {
		t.Fatalf("Verify = %v; want a *JobError wrapping ErrMismatch", err)
	}
	if je.WriteErrMask() != 0b110 || je.Writes[0] != nil {
		t.Fatalf("mask %#b, Writes %v; want destinations 1 and 2 only", je.WriteErrMask(), je.Writes)
	}
	if je.FirstDiff[0] != -1 || je.FirstDiff[1] != base+5 || je.FirstDiff[2] != base+8190 {
		t.Fatalf("FirstDiff = %v; want [-1 %d %d]", je.FirstDiff, base+5, base+8190)
	}
	want1 := []kcopyd.Range{{Off: base + 5, Len: 1}, {Off: base + 70000, Len: 1}}
	if got := je.WriteRanges[1]; len(got) != 2 || got[0] != want1[0] || got[1] != want1[1] {
		t.Fatalf("WriteRanges[1] = %v; want %v", got, want1)
	}
	if got := je.WriteRanges[2]; len(got) != 1 || got[0] != (kcopyd.Range{Off: base + 8190, Len: 10}) {
		t.Fatalf("WriteRanges[2] = %v; want one range [%d, +10) merged across the chunk boundary", got, base+8190)
	}
	if je.Completed != n || je.Canceled != nil {
		t.Fatalf("Completed %d, Canceled %v; want everything compared", je.Completed, je.Canceled)
	}
	// The identical destination alone verifies clean.
	if res := runVerify(t, c, context.Background(), data, []device.Device{same}, base); res != nil {
		t.Fatalf("Verify of an identical copy = %v", res)
	}
}

func runVerify(t *testing.T, c *kcopyd.Client, ctx context.Context, data []byte, dests []device.Device, base int64) error {
	t.Helper()
	n := int64(len(data))
	var rs []kcopyd.Region
	for _, d := range dests {
		rs = append(rs, kcopyd.Region{Dev: d, Off: base, Len: n})
	}
	j, err := c.Verify(ctx, kcopyd.Region{Dev: device.NewMemFrom(data), Len: n}, rs, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return j.Wait(context.Background())
}

// TestVerifyZero checks destinations against zeroes.
func TestVerifyZero(t *testing.T) {
	c := newClient(t, &kcopyd.Options{SubJobSize: 8192})
	const n = 64 << 10
	dirty := device.NewMem(n)
	dirty.WriteAt([]byte{1}, 40000)
	j, err := c.VerifyZero(context.Background(), []kcopyd.Region{{Dev: device.NewMem(n), Len: n}, {Dev: dirty, Len: n}}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var je *kcopyd.JobError
	if err := j.Wait(context.Background()); !errors.As(err, &je) || je.WriteErrMask() != 0b10 || je.FirstDiff[1] != 40000 || je.FirstDiff[0] != -1 {
		t.Fatalf("VerifyZero = %v; want destination 1 differing at 40000", err)
	}
}

// TestVerifyInterrupted cancels a Verify while a chunk's source read is held:
// the job must end Canceled with Completed below the held chunk, never as a
// clean comparison (finding 1 of the wrong-answers issue, at the engine).
func TestVerifyInterrupted(t *testing.T) {
	const sub = 8192 // chunks of 4 KiB
	const n = 64 << 10
	data := randomBytes(61, n)
	src := newGate(device.NewMemFrom(data), func(off int64) bool { return off == 40960 })
	c := newClient(t, &kcopyd.Options{SubJobSize: sub})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	j, err := c.Verify(ctx, kcopyd.Region{Dev: src, Len: n}, []kcopyd.Region{{Dev: device.NewMemFrom(data), Len: n}}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	src.await(t)
	cancel()
	src.release <- struct{}{}
	err = j.Wait(context.Background())
	var je *kcopyd.JobError
	if !errors.As(err, &je) || !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Verify = %v; want a *JobError with Canceled", err)
	}
	if je.Completed > 40960 {
		t.Fatalf("Completed = %d past the held chunk at 40960", je.Completed)
	}
}

// TestVerifyReadErrors fails reads of a destination: without IgnoreError
// the job stops at the first; with it every chunk is tried and the
// unreadable range reported, and the healthy destination still compared.
func TestVerifyReadErrors(t *testing.T) {
	const n = 64 << 10
	data := randomBytes(62, n)
	c := newClient(t, &kcopyd.Options{SubJobSize: 8192})
	for _, flags := range []kcopyd.Flags{0, kcopyd.IgnoreError} {
		bad := &failAt{Device: device.NewMemFrom(data), off: 20000}
		j, err := c.Verify(context.Background(), kcopyd.Region{Dev: device.NewMemFrom(data), Len: n},
			[]kcopyd.Region{{Dev: device.NewMemFrom(data), Len: n}, {Dev: bad, Len: n}}, flags, nil)
		if err != nil {
			t.Fatal(err)
		}
		var je *kcopyd.JobError
		if err := j.Wait(context.Background()); !errors.As(err, &je) || je.WriteErrMask() != 0b10 || errors.Is(je.Writes[1], kcopyd.ErrMismatch) {
			t.Fatalf("flags %#x: Verify = %v; want a read error on destination 1", flags, err)
		}
		if r := je.WriteRanges[1]; len(r) != 1 || r[0].Off > 20000 || r[0].Off+r[0].Len <= 20000 {
			t.Fatalf("flags %#x: WriteRanges[1] = %v; want the unreadable chunk", flags, r)
		}
		if flags != 0 && je.Completed != 16384 {
			t.Fatalf("with IgnoreError: Completed = %d; want 16384 (the chunk before the unreadable one)", je.Completed)
		}
	}
	if _, err := c.Verify(context.Background(), kcopyd.Region{Dev: device.NewMem(8), Len: 8}, []kcopyd.Region{{Dev: device.NewMem(8), Len: 8}}, kcopyd.WriteSeq, nil); !errors.Is(err, kcopyd.ErrBadFlags) {
		t.Fatalf("Verify with WriteSeq = %v; want ErrBadFlags", err)
	}
}

// TestVerifyCompletedUnsplit: a Verify job that fits in one chunk and
// differs reports its whole length as compared (Completed), as a longer
// job does; before, the one chunk of an unsplit job was never counted
// and Completed was 0.
func TestVerifyCompletedUnsplit(t *testing.T) {
	for _, n := range []int64{64 << 10, 4 << 20} {
		c := newClient(t, nil)
		a, b := make([]byte, n), make([]byte, n)
		b[100] = 1
		res := runVerify(t, c, context.Background(), a, []device.Device{device.NewMemFrom(b)}, 0)
		var je *kcopyd.JobError
		if !errors.As(res, &je) || !errors.Is(res, kcopyd.ErrMismatch) || je.Completed != n {
			t.Fatalf("%d bytes differing at byte 100: %v; want ErrMismatch with Completed %d", n, res, n)
		}
	}
}
