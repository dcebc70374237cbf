package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/batch"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/plan"
)

// cmpResult is the comparison of one destination: FirstDiff (-1 for
// none), the differing --sub-job-size chunks, and the first read error.
type cmpResult = batch.DestVerify

// verifyChunkHook, when not nil, is called after each chunk of a
// destination is read for a comparison, one call at a time. Tests set it
// to interrupt a comparison at a known point.
var verifyChunkHook func()

// hookMu makes the calls of verifyChunkHook, from the engine's I/O
// goroutines, one at a time.
var hookMu sync.Mutex

// hookDev calls verifyChunkHook after each read.
type hookDev struct{ device.Device }

func (d hookDev) ReadAt(p []byte, off int64) (int, error) {
	n, err := d.Device.ReadAt(p, off)
	hookMu.Lock()
	defer hookMu.Unlock()
	verifyChunkHook()
	return n, err
}

// Limits implements device.Limiter.
func (d hookDev) Limits() device.Limits { return device.LimitsOf(d.Device) }

// Unwrap returns the device compared.
func (d hookDev) Unwrap() device.Device { return d.Device }

// compare compares the regions of src (nil: zeroes) with the devices of
// devs (nil entries are left out), at most w.o.jobs regions at a time, in
// chunks of --sub-job-size counted from each region's start, on an
// engine client of its own with throttle th (may be nil). Bytes compared
// go to prog. Once ctx is done, the reads in flight are waited for at
// most --interrupt-wait; then w is abandoned.
func (w *writeRun) compare(ctx context.Context, th *kcopyd.Throttle, src device.Device, devs []device.Device, prog func(int64), msgs io.Writer) (*batch.VerifyResult, error) {
	cs := w.chunkSize()
	client, err := kcopyd.NewClient(&kcopyd.Options{SubJobSize: batch.VerifySubJobSize(cs), Throttle: th})
	if err != nil {
		return nil, err
	}
	opts := &batch.VerifyOptions{Src: src, MaxJobs: w.o.jobs, ChunkSize: cs, InterruptWait: w.o.waitOption(), Progress: prog,
		Notify: func(s string) { fmt.Fprintf(msgs, "kcopyd: %s (--interrupt-wait)\n", s) }}
	for _, d := range devs {
		if d != nil && verifyChunkHook != nil {
			d = hookDev{d}
		}
		opts.Dests = append(opts.Dests, d)
	}
	for _, rg := range w.regions {
		var ds []int
		for i, d := range devs {
			if d != nil && rg.has(i) {
				ds = append(ds, i)
			}
		}
		if ds != nil {
			opts.Regions = append(opts.Regions, plan.Region{Src: rg.src, Dest: rg.dest, Len: rg.len, Dests: ds})
		}
	}
	res := batch.Verify(ctx, client, opts)
	if res.Abandoned {
		w.abandoned = true // closing the client would wait for the reads
	} else {
		client.Close()
	}
	return res, nil
}

// waitOption returns --interrupt-wait as batch takes it: 0 is no wait.
func (o *options) waitOption() time.Duration {
	if o.interruptWait == 0 {
		return -1
	}
	return o.interruptWait
}

// chunksText says how many chunks of size bytes differ; partial says the
// comparison was interrupted, so that n is a lower bound.
func chunksText(n, size int64, partial bool) string {
	s := fmt.Sprintf("%d chunks of %s differ", n, formatSize(size))
	if n == 1 {
		s = fmt.Sprintf("1 chunk of %s differs", formatSize(size))
	}
	if partial {
		s = "at least " + s + " (the comparison was interrupted)"
	}
	return s
}
