package kcopyd_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
)

// TestStress mixes copies, zeroings and prepared callbacks from several
// goroutines, with random faults, flags, sizes and cancellations. Every
// job must complete exactly once, without a hang, and every job that
// reports success must have written exactly the source. Each job writes
// its own slot of the destinations, so results can be checked afterwards.
func TestStress(t *testing.T) {
	if testing.Short() {
		t.Skip("stress test skipped with -short")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)

	const slot = 256 << 10
	const slots = 64
	const size = slots * slot
	data := randomBytes(seed, size)
	srcMem := device.NewMemFrom(append([]byte(nil), data...))
	fault := faultdev.Random(seed, 0.002, faultdev.Always(errors.New("EIO")))
	src := faultdev.Wrap(srcMem, faultdev.Any(fault, faultdev.RandomLatency(seed, 200*time.Microsecond)))
	var dstMems [3]*device.Mem
	var dsts [3]device.Device
	for i := range dsts {
		dstMems[i] = device.NewMem(size)
		dsts[i] = faultdev.Wrap(dstMems[i], faultdev.Random(seed+uint64(i), 0.002, faultdev.Always(errors.New("EIO"))))
	}
	c := newClient(t, &kcopyd.Options{SubJobSize: 16 << 10, MaxMemory: 128 << 10})

	type outcome struct {
		zero  bool
		slot  int64
		n     int64
		ndest int
		err   error
		calls atomic.Int32
	}
	outcomes := make([]*outcome, slots)
	var wg sync.WaitGroup
	var prepared atomic.Int32
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(g)))
			for s := g; s < slots; s += 4 {
				o := &outcome{slot: int64(s), zero: r.IntN(4) == 0, n: 1 + r.Int64N(slot), ndest: 1 + r.IntN(3)}
				outcomes[s] = o
				ctx, cancel := context.WithCancel(context.Background())
				if r.IntN(5) == 0 {
					time.AfterFunc(time.Duration(r.IntN(3000))*time.Microsecond, cancel)
				} else {
					defer cancel()
				}
				var regs []kcopyd.Region
				for i := range o.ndest {
					regs = append(regs, kcopyd.Region{Dev: dsts[i], Off: o.slot * slot, Len: o.n})
				}
				flags := []kcopyd.Flags{0, kcopyd.IgnoreError, kcopyd.DetectZeroes, kcopyd.WriteSeq}[r.IntN(4)]
				fn := func(_ bool, _ uint64, err error) {
					o.err = err
					o.calls.Add(1)
				}
				var err error
				if o.zero {
					_, err = c.Zero(ctx, regs, flags, fn)
				} else {
					_, err = c.Copy(ctx, kcopyd.Region{Dev: src, Off: o.slot * slot, Len: o.n}, regs, flags, fn)
				}
				if err != nil {
					t.Errorf("slot %d: %v", s, err)
				}
				if r.IntN(3) == 0 {
					h, err := c.PrepareCallback(func(bool, uint64, error) { prepared.Add(1) })
					if err != nil {
						t.Error(err)
						continue
					}
					go c.DoCallback(h, r.IntN(2) == 0, 0)
					prepared.Add(-1)
				}
			}
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Drain(ctx); err != nil {
		t.Fatalf("jobs did not all complete: %v (seed %d)", err, seed)
	}
	if prepared.Load() != 0 {
		t.Fatalf("prepared callbacks: %d ran more or fewer than fired", prepared.Load())
	}
	for _, o := range outcomes {
		if n := o.calls.Load(); n != 1 {
			t.Fatalf("slot %d: callback ran %d times (seed %d)", o.slot, n, seed)
		}
		if o.err != nil {
			continue
		}
		want := data[o.slot*slot : o.slot*slot+o.n]
		if o.zero {
			want = make([]byte, o.n)
		}
		for i := range o.ndest {
			got := make([]byte, o.n)
			dstMems[i].ReadAt(got, o.slot*slot)
			if !bytes.Equal(got, want) {
				t.Fatalf("slot %d destination %d: job reported success but data differs (seed %d)", o.slot, i, seed)
			}
		}
	}
}
