package batch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/plan"
)

// VerifyOptions configure Verify. Only Dests and Regions are required.
type VerifyOptions struct {
	// Src is the source; nil: the destinations must read zeroes.
	Src   device.Device
	Dests []device.Device // 1 to kcopyd.MaxRegions
	// Regions are compared: Src at Region.Src with each destination of
	// the region at Region.Dest.
	Regions []plan.Region
	// MaxJobs bounds the engine jobs (one per region) in flight.
	// Default 1.
	MaxJobs int
	// ChunkSize is the unit DestVerify.Chunks counts, from each region's
	// start. Default: half the client's sub-job size for a source, the
	// sub-job size for zeroes: the engine's verify chunk, so that every
	// chunk counted holds a difference. A client whose sub-job size is
	// twice ChunkSize (see VerifySubJobSize) counts exactly.
	ChunkSize int64
	// InterruptWait bounds the wait for the jobs in flight once ctx is
	// done. Zero means DefaultInterruptWait; negative, no wait at all.
	InterruptWait time.Duration
	// Progress is told the bytes compared, about five times a second and
	// at the end. Notify is told that the wait for the jobs in flight was
	// given up. Both run on Verify's goroutine.
	Progress func(done int64)
	Notify   func(string)
}

// DestVerify is the comparison of one destination.
type DestVerify struct {
	FirstDiff int64 // destination offset of the first differing byte; -1 when none
	Chunks    int64 // chunks (VerifyOptions.ChunkSize) with a difference
	Err       error // the first read error on the destination: it was compared no further
}

// VerifyResult is the outcome of Verify.
type VerifyResult struct {
	Dests    []DestVerify // in the order of VerifyOptions.Dests
	ReadErr  error        // the first source read error: the comparison stopped
	Compared int64        // bytes of the regions compared
	// Canceled: ctx stopped the comparison; the regions not compared
	// count as neither equal nor different, so nothing is proven
	// identical. Abandoned: jobs were still in flight after
	// InterruptWait (the client and devices must not be closed).
	Canceled, Abandoned bool
}

// VerifySubJobSize returns the client sub-job size for which Verify's
// engine chunks are chunk bytes (or half of them, at the largest size), so
// that DestVerify.Chunks counts exactly.
func VerifySubJobSize(chunk int64) int64 { return min(2*chunk, 64<<20) }

// Verify compares the regions of src with every destination, with
// kcopyd.Client.Verify (VerifyZero without a source) jobs: the engine's
// buffers, throttle, cancellation and progress. A destination that cannot
// be read is compared no further; the others go on. A source read error
// stops the comparison. It returns when every region was compared, or
// after ctx is done and the jobs in flight finished (at most
// InterruptWait).
func Verify(ctx context.Context, client *kcopyd.Client, opts *VerifyOptions) *VerifyResult {
	v := &verifier{client: client, o: *opts, res: &VerifyResult{Dests: make([]DestVerify, len(opts.Dests))}}
	v.o.MaxJobs = max(v.o.MaxJobs, 1)
	if v.o.InterruptWait == 0 {
		v.o.InterruptWait = DefaultInterruptWait
	}
	if v.o.ChunkSize <= 0 {
		v.o.ChunkSize = client.SubJobSize()
		if opts.Src != nil {
			v.o.ChunkSize = max(client.SubJobSize()/2/4096*4096, 4096)
		}
	}
	for i := range v.res.Dests {
		v.res.Dests[i].FirstDiff = -1
	}
	v.counted = make(map[[2]int]int64)
	v.run(ctx)
	return v.res
}

// verifier is the state of Verify.
type verifier struct {
	client   *kcopyd.Client
	o        VerifyOptions
	res      *VerifyResult
	done     chan *vjob
	inflight []*vjob
	counted  map[[2]int]int64 // per (destination, region): chunks up to this index are counted
}

// vjob is one Verify job: region reg from off on, for dests.
type vjob struct {
	reg   int
	off   int64
	dests []int
	job   *kcopyd.Job
	err   error
}

func (v *verifier) run(ctx context.Context) {
	v.done = make(chan *vjob, v.o.MaxJobs)
	var queue []*vjob
	for reg, rg := range v.o.Regions {
		if rg.Len > 0 {
			queue = append(queue, &vjob{reg: reg, dests: v.regionDests(rg)})
		}
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var giveUp <-chan time.Time
	ctxDone := ctx.Done()
	for {
		for len(queue) > 0 && len(v.inflight) < v.o.MaxJobs && v.res.ReadErr == nil && !v.res.Canceled {
			j := queue[0]
			queue = queue[1:]
			if err := v.submit(ctx, j); err != nil {
				v.res.Canceled = ctx.Err() != nil
				if !v.res.Canceled && v.res.ReadErr == nil {
					v.res.ReadErr = err // the engine refused: checked before, so not expected
				}
			}
		}
		if len(v.inflight) == 0 {
			v.progress()
			return
		}
		select {
		case j := <-v.done:
			v.inflight = remove(v.inflight, j)
			if next := v.finish(j); next != nil {
				queue = append([]*vjob{next}, queue...)
			}
		case <-ctxDone:
			ctxDone, giveUp = nil, time.After(v.o.InterruptWait)
			v.res.Canceled = true
		case <-giveUp:
			v.res.Abandoned = true
			if v.o.Notify != nil {
				v.o.Notify(fmt.Sprintf("gave up waiting for the reads in flight after %v", max(v.o.InterruptWait, 0)))
			}
			return
		case <-tick.C:
			v.progress()
		}
	}
}

func remove(js []*vjob, j *vjob) []*vjob {
	for i, x := range js {
		if x == j {
			return append(js[:i], js[i+1:]...)
		}
	}
	return js
}

// regionDests returns the destinations of rg that can still be read.
func (v *verifier) regionDests(rg plan.Region) []int {
	var out []int
	for i := range v.o.Dests {
		if rg.Has(i) && v.res.Dests[i].Err == nil {
			out = append(out, i)
		}
	}
	return out
}

func (v *verifier) progress() {
	if v.o.Progress == nil {
		return
	}
	n := v.res.Compared
	for _, j := range v.inflight {
		n += j.job.Progress()
	}
	v.o.Progress(n)
}

// submit starts j's engine job.
func (v *verifier) submit(ctx context.Context, j *vjob) error {
	rg := v.o.Regions[j.reg]
	n := rg.Len - j.off
	regs := make([]kcopyd.Region, len(j.dests))
	for k, i := range j.dests {
		regs[k] = kcopyd.Region{Dev: v.o.Dests[i], Off: rg.Dest + j.off, Len: n}
	}
	cb := func(_ bool, _ uint64, err error) {
		j.err = err
		v.done <- j
	}
	var err error
	if v.o.Src == nil {
		j.job, err = v.client.VerifyZero(ctx, regs, 0, cb)
	} else {
		j.job, err = v.client.Verify(ctx, kcopyd.Region{Dev: v.o.Src, Off: rg.Src + j.off, Len: n}, regs, 0, cb)
	}
	if err == nil {
		v.inflight = append(v.inflight, j)
	}
	return err
}

// finish records the outcome of j. It returns the job that compares the
// rest of the region on the destinations still readable when a
// destination's read error stopped j.
func (v *verifier) finish(j *vjob) *vjob {
	rg := v.o.Regions[j.reg]
	n := rg.Len - j.off
	var je *kcopyd.JobError
	if j.err == nil {
		v.res.Compared += n
		return nil
	}
	if !errors.As(j.err, &je) {
		v.res.ReadErr = j.err
		return nil
	}
	// Every chunk compared counts in Progress, a differing one too; a
	// read error or the context stops the job short of n.
	compared := j.job.Progress()
	stopped := false
	for k, i := range j.dests {
		d := &v.res.Dests[i]
		if k < len(je.FirstDiff) && je.FirstDiff[k] >= 0 && (d.FirstDiff < 0 || je.FirstDiff[k] < d.FirstDiff) {
			d.FirstDiff = je.FirstDiff[k]
		}
		if k < len(je.Writes) && je.Writes[k] != nil && !errors.Is(je.Writes[k], kcopyd.ErrMismatch) {
			d.Err, stopped = je.Writes[k], true
			continue
		}
		if k < len(je.WriteRanges) {
			v.count(i, j.reg, je.WriteRanges[k])
		}
	}
	if !stopped && compared < n && je.Read == nil && je.Canceled == nil {
		// A read error after a difference on the same destination: the
		// job says which destinations failed, not which one could not
		// be read.
		for k, i := range j.dests {
			if k < len(je.Writes) && je.Writes[k] != nil {
				v.res.Dests[i].Err = fmt.Errorf("the comparison stopped at byte %d: %w", rg.Dest+j.off+je.Completed, je.Writes[k])
				stopped = true
			}
		}
	}
	switch {
	case je.Read != nil:
		v.res.ReadErr = je.Read
	case je.Canceled != nil:
		v.res.Canceled = true
	case stopped && compared < n:
		if next := v.regionDests(rg); len(next) > 0 {
			// Compared again from the prefix complete on every
			// destination.
			v.res.Compared += je.Completed
			return &vjob{reg: j.reg, off: j.off + je.Completed, dests: next}
		}
	}
	v.res.Compared += compared
	return nil
}

// count adds the chunks of region reg that the differing ranges rs of
// destination i touch, each once.
func (v *verifier) count(i, reg int, rs []kcopyd.Range) {
	rg, cs := v.o.Regions[reg], v.o.ChunkSize
	key := [2]int{i, reg}
	for _, r := range rs {
		first, last := (r.Off-rg.Dest)/cs, (r.Off-rg.Dest+r.Len-1)/cs
		if c, ok := v.counted[key]; ok {
			first = max(first, c+1)
		}
		if last >= first {
			v.res.Dests[i].Chunks += last - first + 1
			v.counted[key] = last
		}
	}
}
