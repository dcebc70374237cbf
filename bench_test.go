package kcopyd_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
)

// BenchmarkCopyMem measures a large copy memory to memory, to 1 and 4
// destinations (bytes/s counts the source once).
func BenchmarkCopyMem(b *testing.B) {
	const n = 256 << 20
	src := device.NewMemFrom(randomBytes(1, n))
	for _, nd := range []int{1, 4} {
		b.Run(fmt.Sprintf("dests=%d", nd), func(b *testing.B) {
			var dests []kcopyd.Region
			for range nd {
				dests = append(dests, kcopyd.Region{Dev: device.NewMem(n), Len: n})
			}
			benchCopy(b, kcopyd.Region{Dev: src, Len: n}, dests)
		})
	}
}

// BenchmarkCopyFile measures a large copy between files on the disk that
// holds the test's temporary directory, through the page cache.
func BenchmarkCopyFile(b *testing.B) {
	const n = 256 << 20
	dir := b.TempDir()
	src, err := device.CreateFile(filepath.Join(dir, "src"), n, device.FileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	chunk := randomBytes(2, 1<<20)
	for off := int64(0); off < n; off += 1 << 20 {
		src.WriteAt(chunk, off)
	}
	for _, nd := range []int{1, 4} {
		b.Run(fmt.Sprintf("dests=%d", nd), func(b *testing.B) {
			var dests []kcopyd.Region
			for i := range nd {
				f, err := device.CreateFile(filepath.Join(dir, fmt.Sprintf("dst%d-%d", nd, i)), n, device.FileOptions{})
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				dests = append(dests, kcopyd.Region{Dev: f, Len: n})
			}
			benchCopy(b, kcopyd.Region{Dev: src, Len: n}, dests)
		})
	}
}

func benchCopy(b *testing.B, src kcopyd.Region, dests []kcopyd.Region) {
	c := newClient(b, nil)
	b.SetBytes(src.Len)
	b.ReportAllocs()
	for b.Loop() {
		job, err := c.Copy(context.Background(), src, dests, 0, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := job.Wait(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(c.Stats().BufferBytes)/(1<<20), "MiB-buffers")
}

// BenchmarkSmallJobs measures jobs per second for many small copies in
// flight at once, as a snapshot's copy-on-write or a clone's hydration
// issues them.
func BenchmarkSmallJobs(b *testing.B) {
	for _, size := range []int64{4 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("size=%dKiB", size>>10), func(b *testing.B) {
			const span = 64 << 20
			src, dst := device.NewMemFrom(randomBytes(3, span)), device.NewMem(span)
			c := newClient(b, nil)
			inflight := make(chan struct{}, 256)
			b.ReportAllocs()
			i := int64(0)
			for b.Loop() {
				off := (i * size) % span
				i++
				inflight <- struct{}{}
				if _, err := c.Copy(context.Background(), kcopyd.Region{Dev: src, Off: off, Len: size},
					[]kcopyd.Region{{Dev: dst, Off: off, Len: size}}, 0,
					func(bool, uint64, error) { <-inflight }); err != nil {
					b.Fatal(err)
				}
			}
			c.Drain(context.Background())
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
		})
	}
}

// BenchmarkAllocsPerSubJob reports heap allocations per sub-job in steady
// state (the goal is none: allocations are per job), copying 64 MiB jobs of
// 128 sub-jobs between devices that allocate nothing themselves.
func BenchmarkAllocsPerSubJob(b *testing.B) {
	const n = 64 << 20
	src, dst := make(flat, n), make(flat, n)
	c := newClient(b, nil)
	copyOnce := func() {
		job, err := c.Copy(context.Background(), kcopyd.Region{Dev: src, Len: n}, []kcopyd.Region{{Dev: dst, Len: n}}, 0, nil)
		if err != nil {
			b.Fatal(err)
		}
		job.Wait(context.Background())
	}
	copyOnce() // fill the buffer pool
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	jobs := 0
	b.SetBytes(n)
	for b.Loop() {
		copyOnce()
		jobs++
	}
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(jobs*n/kcopyd.DefaultSubJobSize), "allocs/subjob")
}

// BenchmarkByteRate copies 64 MiB memory to memory under a byte rate of
// 32 MiB/s (2 s of rate) and reports the achieved rate over the one set
// (rate-ratio, 1 is exact), at the library's and the command's sub-job
// sizes. Timing is measured here, never asserted: the machines are shared.
func BenchmarkByteRate(b *testing.B) {
	const n, rate = 64 << 20, 32 << 20
	for _, sub := range []int64{512 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("sub=%dKiB", sub>>10), func(b *testing.B) {
			src, dst := device.NewMem(n), device.NewMem(n)
			var ratio float64
			for range b.N {
				th := kcopyd.NewThrottle(100)
				th.SetRate(rate)
				c, err := kcopyd.NewClient(&kcopyd.Options{SubJobSize: sub, Throttle: th})
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				j, err := c.Copy(context.Background(), kcopyd.Region{Dev: src, Len: n}, []kcopyd.Region{{Dev: dst, Len: n}}, 0, func(bool, uint64, error) {})
				if err != nil {
					b.Fatal(err)
				}
				if err := j.Wait(context.Background()); err != nil {
					b.Fatal(err)
				}
				ratio = float64(n) / time.Since(start).Seconds() / rate
				c.Close()
			}
			b.ReportMetric(ratio, "rate-ratio")
		})
	}
}
