package kcopyd_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
	"github.com/kcopyd/kcopyd/device/zoned"
)

// newZoned returns an emulated host-managed device of n bytes in zones of
// zone bytes, behind random write latency so that writes issued together
// would complete out of order, and a log of the writes it accepted.
func newZoned(t *testing.T, n, zone int64, seed uint64) (*zoned.Device, device.Device, *zoned.Log) {
	t.Helper()
	log := &zoned.Log{}
	z, err := zoned.New(device.NewMem(n), zone, zoned.OnWrite(log.Record))
	if err != nil {
		t.Fatal(err)
	}
	slow := faultdev.Wrap(z, faultdev.Writes(faultdev.RandomLatency(seed, 2*time.Millisecond)))
	return z, slow, log
}

// TestWriteSeqZoned copies to a host-managed zoned device, which rejects
// any write not at its write pointer: WriteSeq must be switched on by
// itself and must order completion, not only issue.
func TestWriteSeqZoned(t *testing.T) {
	const sub = 16 << 10
	const n = 4 << 20
	data := randomBytes(20, n)
	for _, zeroJob := range []bool{false, true} {
		t.Run(fmt.Sprintf("zero=%v", zeroJob), func(t *testing.T) {
			c := newClient(t, &kcopyd.Options{SubJobSize: sub, IOWorkers: 64})
			z, slow, log := newZoned(t, n, 1<<20, 1)
			if device.LimitsOf(slow).Zoned != device.ZoneHostManaged {
				t.Fatal("the wrapper hides the zone model")
			}
			var src *kcopyd.Region
			if !zeroJob {
				src = &kcopyd.Region{Dev: device.NewMemFrom(data), Len: n}
			}
			// IgnoreError must be cleared by WriteSeq (spec §4.2); it is
			// passed here to check that it does no harm.
			res := run(t, c, context.Background(), src, []kcopyd.Region{{Dev: slow, Len: n}}, kcopyd.IgnoreError)
			if res.err != nil {
				t.Fatalf("copy to a zoned device: %v", res.err)
			}
			want := data
			if zeroJob {
				want = make([]byte, n)
			}
			if k := firstDiff(contents(t, z, 0, n), want); k >= 0 {
				t.Fatalf("zoned destination differs at %d", k)
			}
			prev := int64(0)
			for _, w := range log.Writes() {
				if w.Off != prev {
					t.Fatalf("write at %d after write ending at %d: not in ascending order", w.Off, prev)
				}
				prev = w.Off + w.Len
			}
		})
	}
}

// TestWriteSeqErrors injects a read error, then a write error, at each
// chunk of a WriteSeq copy: the job must complete (the kernel can hang
// here, spec §4.5), report the failure and leave the zone written exactly
// up to the failed chunk.
func TestWriteSeqErrors(t *testing.T) {
	const sub = 16 << 10
	const chunks = 24
	const n = chunks * sub
	data := randomBytes(21, n)
	for _, kind := range []string{"read", "write"} {
		for k := int64(0); k < chunks; k += 5 {
			t.Run(fmt.Sprintf("%s-chunk-%d", kind, k), func(t *testing.T) {
				c := newClient(t, &kcopyd.Options{SubJobSize: sub, IOWorkers: 64})
				z, slow, _ := newZoned(t, n, n, uint64(k))
				var src device.Device = device.NewMemFrom(data)
				dst := slow
				fault := faultdev.Range(k*sub, 1, faultdev.Always(errors.New("EIO")))
				if kind == "read" {
					src = faultdev.Wrap(src, faultdev.Reads(faultdev.All(fault, faultdev.RandomLatency(uint64(k), time.Millisecond))))
				} else {
					dst = faultdev.Wrap(slow, faultdev.Writes(fault))
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				job, err := c.Copy(ctx, kcopyd.Region{Dev: src, Len: n}, []kcopyd.Region{{Dev: dst, Len: n}}, 0, nil)
				if err != nil {
					t.Fatal(err)
				}
				err = job.Wait(ctx)
				if errors.Is(err, context.DeadlineExceeded) {
					t.Fatal("WriteSeq job hung after an error")
				}
				var je *kcopyd.JobError
				if !errors.As(err, &je) {
					t.Fatalf("err = %v; want a *JobError", err)
				}
				if (kind == "read") != je.ReadFailed() || (kind == "write") != (je.WriteErrMask() == 1) {
					t.Fatalf("read %v mask %#b for a %s fault", je.ReadFailed(), je.WriteErrMask(), kind)
				}
				// No error inflation (spec §8.2): only the failed chunk is reported.
				if kind == "write" && fmt.Sprint(je.WriteRanges[0]) != fmt.Sprint([]kcopyd.Range{{Off: k * sub, Len: sub}}) {
					t.Fatalf("WriteRanges = %v; want only chunk %d", je.WriteRanges[0], k)
				}
				if je.Completed != k*sub {
					t.Fatalf("Completed = %d; want %d", je.Completed, k*sub)
				}
				if wp := z.Zones()[0].WP; wp != k*sub {
					t.Fatalf("write pointer at %d; want %d (written in order up to the failed chunk)", wp, k*sub)
				}
				if x := firstDiff(contents(t, z, 0, k*sub), data[:k*sub]); x >= 0 {
					t.Fatalf("zone differs at %d", x)
				}
			})
		}
	}
}
