package kcopyd_test

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
)

// heapAfterGC returns the live heap in bytes.
func heapAfterGC() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestJobStateBounded holds a job's first chunk in its read while the other
// sub-jobs run through the rest of a 128 MiB job, then checks that the
// heap did not grow with the chunks that completed past the held one.
// Before the fix the job kept one map entry per such chunk (32,767 here,
// over a megabyte; millions behind a hung request in a 1 TiB job).
func TestJobStateBounded(t *testing.T) {
	const sub = 4096
	const n = 32768 * sub
	src := newGate(discard{n}, func(off int64) bool { return off == 0 })
	src.noRecord = true
	c := newClient(t, &kcopyd.Options{SubJobSize: sub})
	before := heapAfterGC()
	j, err := c.Copy(context.Background(), kcopyd.Region{Dev: src, Len: n}, []kcopyd.Region{{Dev: discard{n}, Len: n}}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	src.await(t)
	deadline := time.Now().Add(5 * time.Minute)
	for j.Progress() < n-sub {
		if time.Now().After(deadline) {
			t.Fatalf("progress stuck at %d of %d", j.Progress(), n-sub)
		}
		runtime.Gosched()
	}
	grew := heapAfterGC() - before
	src.release <- struct{}{}
	if err := j.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if grew > 256<<10 {
		t.Fatalf("the heap grew by %d bytes while 32,767 chunks completed past a held one; want a bounded job", grew)
	}
}

// failWrites fails writes whose offset is an even multiple of every.
type failWrites struct {
	device.Device
	every int64
}

func (f failWrites) WriteAt(p []byte, off int64) (int, error) {
	if (off/f.every)%2 == 0 {
		return 0, &device.IOError{Op: device.OpWrite, Off: off, Len: int64(len(p)), Err: errors.New("bad block")}
	}
	return f.Device.WriteAt(p, off)
}

// TestFailedRangesBounded fails every other chunk's write under
// IgnoreError: 2,048 separate failed ranges. The job reports at most
// MaxRanges, sorted and disjoint, and every failed byte lies inside one.
func TestFailedRangesBounded(t *testing.T) {
	const sub = 4096
	const chunks = 2 * 2048
	const n = chunks * sub
	const base = 1 << 20 // destination offset: ranges are in destination bytes
	c := newClient(t, &kcopyd.Options{SubJobSize: sub})
	dst := failWrites{device.NewMem(base + n), sub}
	res := run(t, c, context.Background(), &kcopyd.Region{Dev: device.NewMem(n), Len: n},
		[]kcopyd.Region{{Dev: dst, Off: base, Len: n}}, kcopyd.IgnoreError)
	var je *kcopyd.JobError
	if !errors.As(res.err, &je) {
		t.Fatalf("err = %v; want a *JobError", res.err)
	}
	rs := je.WriteRanges[0]
	if len(rs) == 0 || len(rs) > kcopyd.MaxRanges {
		t.Fatalf("%d write ranges reported; want 1..%d", len(rs), kcopyd.MaxRanges)
	}
	for i := 1; i < len(rs); i++ {
		if rs[i].Off <= rs[i-1].Off+rs[i-1].Len {
			t.Fatalf("ranges %v and %v are not sorted and disjoint", rs[i-1], rs[i])
		}
	}
	for k := int64(0); k < chunks; k += 2 {
		off := base + k*sub
		i := sort.Search(len(rs), func(i int) bool { return rs[i].Off+rs[i].Len > off })
		if i == len(rs) || rs[i].Off > off || rs[i].Off+rs[i].Len < off+sub {
			t.Fatalf("failed chunk at %d is not inside a reported range", off)
		}
	}
	if je.Completed != 0 {
		t.Fatalf("Completed = %d; want 0 (chunk 0 failed)", je.Completed)
	}
}

// TestDetectZeroesChargedOnce copies 8 MiB of zeroes with DetectZeroes under
// a 1 MiB/s byte rate on a fake clock. Each chunk must be charged once, at
// its read: about 8 s of waiting. Before the
// fix a chunk turned into a zeroing was charged again, and the copy took
// twice as long as the rate allows.
func TestDetectZeroesChargedOnce(t *testing.T) {
	var now time.Duration
	var mu = make(chan struct{}, 1)
	clock := func() time.Duration { mu <- struct{}{}; defer func() { <-mu }(); return now }
	sleep := func(d time.Duration) { mu <- struct{}{}; now += d; <-mu }
	th := kcopyd.NewThrottleWithClock(100, clock, sleep)
	th.SetRate(1 << 20)
	c := newClient(t, &kcopyd.Options{SubJobSize: 64 << 10, Throttle: th, IOWorkers: 1})
	const n = 8 << 20
	res := run(t, c, context.Background(), &kcopyd.Region{Dev: device.NewMem(n), Len: n},
		[]kcopyd.Region{{Dev: device.NewMem(n), Len: n}}, kcopyd.DetectZeroes)
	if res.err != nil {
		t.Fatal(res.err)
	}
	if got := clock(); got < 7500*time.Millisecond || got > 8250*time.Millisecond {
		t.Fatalf("8 MiB at 1 MiB/s waited %v of fake time; want about 8 s", got)
	}
}

// TestCallbackPanic decides finding 7: a panicking callback is recovered
// on the worker; the job counts as done, later jobs run, and Close reports
// the panic.
func TestCallbackPanic(t *testing.T) {
	c, err := kcopyd.NewClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	j, err := c.Copy(context.Background(), kcopyd.Region{Dev: device.NewMem(8192), Len: 8192},
		[]kcopyd.Region{{Dev: device.NewMem(8192), Len: 8192}}, 0, func(bool, uint64, error) { panic(boom) })
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Wait(context.Background()); err != nil {
		t.Fatalf("Wait = %v; the job itself succeeded", err)
	}
	h, _ := c.PrepareCallback(func(bool, uint64, error) { panic("second") })
	c.DoCallback(h, false, 0)
	res := run(t, c, context.Background(), &kcopyd.Region{Dev: device.NewMem(4096), Len: 4096},
		[]kcopyd.Region{{Dev: device.NewMem(4096), Len: 4096}}, 0)
	if res.err != nil {
		t.Fatalf("a job after the panic: %v", res.err)
	}
	err = c.Close()
	var pe *kcopyd.CallbackPanicError
	if !errors.As(err, &pe) || !errors.Is(err, boom) || len(pe.Stack) == 0 {
		t.Fatalf("Close = %v; want a *CallbackPanicError wrapping the first panic", err)
	}
	if err2 := c.Close(); err2 != err {
		t.Fatalf("second Close = %v; want %v", err2, err)
	}
}

// badLimits has a MaxTransfer smaller than its offset alignment.
type badLimits struct{ *device.Mem }

func (badLimits) Limits() device.Limits { return device.Limits{OffsetAlign: 4096, MaxTransfer: 512} }

// TestBadLimitsRefused checks finding 5: a device whose limits allow no
// request is refused up front, not looped on.
func TestBadLimitsRefused(t *testing.T) {
	c := newClient(t, nil)
	dev := badLimits{device.NewMem(1 << 20)}
	_, err := c.Copy(context.Background(), kcopyd.Region{Dev: device.NewMem(8192), Len: 8192}, []kcopyd.Region{{Dev: dev, Len: 8192}}, 0, nil)
	if !errors.Is(err, kcopyd.ErrBadLimits) {
		t.Fatalf("Copy to a device with MaxTransfer < OffsetAlign = %v; want ErrBadLimits", err)
	}
}

// TestRateDelayCancel copies under a byte rate on a clock that does not
// move until the test ends: every chunk waits on the client's delayed list,
// none is issued. Meanwhile the worker still runs callbacks (it never
// sleeps for the rate: with the old code, which slept there, Flush below
// hung), and cancelling the job's context ends it at once with nothing
// written.
func TestRateDelayCancel(t *testing.T) {
	var now atomic.Int64
	stop := make(chan struct{})
	clock := func() time.Duration { return time.Duration(now.Load()) }
	sleep := func(d time.Duration) {
		<-stop
		now.Add(int64(d))
	}
	th := kcopyd.NewThrottleWithClock(100, clock, sleep)
	th.SetRate(4096)
	c := newClient(t, &kcopyd.Options{SubJobSize: 64 << 10, Throttle: th})
	defer close(stop) // before newClient's cleanup closes c: the sleeps return
	const n = 1 << 20
	data := bytes.Repeat([]byte{7}, n)
	dst := device.NewMem(n)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	if _, err := c.Copy(ctx, kcopyd.Region{Dev: device.NewMemFrom(data), Len: n}, []kcopyd.Region{{Dev: dst, Len: n}}, 0,
		func(_ bool, _ uint64, err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	// The worker is free: a prepared callback runs while the copy waits.
	h, err := c.PrepareCallback(func(bool, uint64, error) {})
	if err != nil {
		t.Fatal(err)
	}
	c.DoCallback(h, false, 0)
	c.Flush()
	select {
	case err := <-done:
		t.Fatalf("the copy ended (%v) although the rate's clock never moved", err)
	default:
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("callback error %v; want context.Canceled", err)
	}
	got := make([]byte, n)
	dst.ReadAt(got, 0)
	if !bytes.Equal(got, make([]byte, n)) {
		t.Fatal("bytes were written although no chunk was due")
	}
}
