package kcopyd_test

import (
	"context"
	"testing"

	"github.com/kcopyd/kcopyd"
)

// flat is a minimal device over a byte slice that allocates nothing, so
// that allocation counts measure the engine alone.
type flat []byte

func (f flat) ReadAt(p []byte, off int64) (int, error)  { return copy(p, f[off:]), nil }
func (f flat) WriteAt(p []byte, off int64) (int, error) { return copy(f[off:], p), nil }
func (f flat) Size() int64                              { return int64(len(f)) }
func (f flat) Close() error                             { return nil }

// TestNoAllocationPerSubJob checks that a job's allocations do not grow
// with its number of sub-jobs: buffers come from the pool, requests are
// embedded in the job, and I/O goroutines are reused.
func TestNoAllocationPerSubJob(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counting copies 96 MiB; skipped with -short")
	}
	const sub = 64 << 10
	src, dst := make(flat, 32<<20), make(flat, 32<<20)
	c := newClient(t, &kcopyd.Options{SubJobSize: sub})
	allocs := func(n int64) float64 {
		return testing.AllocsPerRun(3, func() {
			job, err := c.Copy(context.Background(), kcopyd.Region{Dev: src, Len: n}, []kcopyd.Region{{Dev: dst, Len: n}, {Dev: dst, Off: n, Len: n}}, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			job.Wait(context.Background())
		})
	}
	small, large := allocs(16*sub), allocs(256*sub) // 16 and 256 sub-jobs
	if perSub := (large - small) / 240; perSub >= 0.5 {
		t.Fatalf("%.0f allocations for 16 sub-jobs, %.0f for 256: %.2f per sub-job; want none", small, large, perSub)
	}
	t.Logf("allocations per job: %.0f (16 sub-jobs), %.0f (256 sub-jobs)", small, large)
}
