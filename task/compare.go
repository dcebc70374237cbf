package task

import (
	"context"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/batch"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/plan"
)

// CompareOptions configure Compare.
type CompareOptions struct {
	// Src is the source; nil: the destinations must read zeroes.
	Src device.Device
	// Dests are compared; a nil entry is left out.
	Dests   []device.Device
	Regions []Region
	// ChunkSize is the unit of batch.DestVerify.Chunks, counted from each
	// region's start. Default SubJobSize, as "kcopyd verify".
	ChunkSize int64
	// MaxJobs bounds the regions compared at once. Default 1.
	MaxJobs int
	// Throttle paces the reads; nil: no limit.
	Throttle *kcopyd.Throttle
	// InterruptWait bounds the wait for the reads in flight once ctx is
	// done (see Options.InterruptWait); WaitName names it in notes.
	InterruptWait time.Duration
	WaitName      string
	// Start is told that the client is ready and the first jobs are
	// about to be submitted. Progress is told the bytes compared; Note
	// that the wait for the reads in flight was given up.
	Start    func()
	Progress func(done int64)
	Note     func(msg string)
	// Wrap, when not nil, wraps each destination's device before it is
	// read (see Options.WrapVerify). The wrapper's ReadAt is called from
	// several goroutines at once.
	Wrap func(device.Device) device.Device
}

// Compare compares the regions of the source with every destination with
// engine Verify jobs (batch.Verify) on a client of its own, in chunks of
// ChunkSize. It returns an error only when the client cannot be made.
// After VerifyResult.Abandoned the devices must not be closed: reads may
// still be in flight.
func Compare(ctx context.Context, o *CompareOptions) (*batch.VerifyResult, error) {
	cs := o.ChunkSize
	if cs <= 0 {
		cs = SubJobSize
	}
	client, err := kcopyd.NewClient(&kcopyd.Options{SubJobSize: batch.VerifySubJobSize(cs), Throttle: o.Throttle})
	if err != nil {
		return nil, err
	}
	opts := &batch.VerifyOptions{Src: o.Src, MaxJobs: o.MaxJobs, ChunkSize: cs, InterruptWait: o.InterruptWait, Progress: o.Progress}
	if o.Note != nil {
		opts.Notify = func(s string) {
			if o.WaitName != "" {
				s += " (" + o.WaitName + ")"
			}
			o.Note(s)
		}
	}
	for _, d := range o.Dests {
		if d != nil && o.Wrap != nil {
			d = o.Wrap(d)
		}
		opts.Dests = append(opts.Dests, d)
	}
	for _, rg := range o.Regions {
		var ds []int
		for i, d := range o.Dests {
			if d != nil && rg.Has(i) {
				ds = append(ds, i)
			}
		}
		if ds != nil {
			opts.Regions = append(opts.Regions, plan.Region{Src: rg.Src, Dest: rg.Dest, Len: rg.Len, Dests: ds})
		}
	}
	if o.Start != nil {
		o.Start()
	}
	res := batch.Verify(ctx, client, opts)
	if !res.Abandoned {
		client.Close() // else it would wait for the reads
	}
	return res, nil
}
