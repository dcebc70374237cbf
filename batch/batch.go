// Package batch runs many regions on a kcopyd.Client: a copy (or zeroing)
// of a whole device or of a list of regions, with at most a bounded number
// of engine jobs in flight, and a destination whose write failed dropped
// so that the others complete.
//
// The regions are cut into segments by a plan (package plan): one engine
// job per segment, and contiguous copy segments, whose source and every
// destination follow on, coalesced into one job up to Options.MaxJobLen,
// as dm-clone batches contiguous regions (hydration_batch_size). Results
// are kept per region nonetheless: for each destination, the bytes from
// the start of every region known to hold the right data, the byte ranges
// known not to, and where nothing was written after it was dropped.
//
// # Failures
//
// A read error stops the batch (unless Options.Flags has IgnoreError: the
// unreadable ranges are written as zeroes and reported). A write error
// drops the destination: the job is resubmitted from the prefix it
// completed for the destinations still live, and later jobs leave it out.
// With IgnoreError every destination stays and every job runs to its end.
// A canceled context stops dispatch; the jobs in flight are waited for at
// most Options.InterruptWait, after which the Batch is abandoned: its
// client and devices must not be closed, for I/O may still be in flight.
//
// # Verify
//
// Verify compares many regions with engine Verify jobs, so a copy can be
// checked through the same buffers, throttle and cancellation; Check asks
// the engine about every region's job before a batch starts.
package batch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/plan"
)

// DefaultMaxJobLen is the default bound on a job of coalesced segments.
const DefaultMaxJobLen = 64 << 20

// DefaultInterruptWait is the default Options.InterruptWait.
const DefaultInterruptWait = 10 * time.Second

// Dest is one destination of a batch.
type Dest struct {
	Dev device.Device
	// Name names the destination in messages; default device.Name(Dev).
	Name string
	// ZeroFrom is the offset from which Dev is known to read zeroes
	// before the batch (plan.Unknown: nowhere). With Options.Sparse, a
	// job whose destinations all read zeroes from its start skips zero
	// chunks (kcopyd.SkipZeroes) instead of writing them as zeroes
	// (kcopyd.DetectZeroes).
	ZeroFrom int64
}

// Options configure a Batch. Only Dests and Regions are required.
type Options struct {
	// Src is the source; nil for a zeroing batch.
	Src   device.Device
	Dests []Dest // 1 to kcopyd.MaxRegions
	// Regions are the regions to process, each checked beforehand (the
	// engine refusing a job ends the batch with Result.InternalErr).
	Regions []plan.Region
	// Plan hands out the segments of Regions, in order (see
	// plan.Planner.Run, which it may filter). Default: each region whole,
	// a Copy segment (Zero without Src).
	Plan func(ctx context.Context, emit func(plan.Segment) bool) bool
	// MaxJobs bounds the engine jobs in flight. Default 1.
	MaxJobs int
	// Flags are passed to every job: IgnoreError, WriteSeq.
	Flags kcopyd.Flags
	// Sparse adds DetectZeroes or SkipZeroes to copy jobs (see Dest).
	Sparse bool
	// MaxJobLen bounds the length of a job of coalesced segments: a
	// segment longer than it is still one job, but nothing is joined to
	// it. Default DefaultMaxJobLen; negative: never coalesce.
	MaxJobLen int64
	// InterruptWait bounds the wait for the jobs in flight (and for a
	// Plan stuck in a call) once ctx is done. Zero means
	// DefaultInterruptWait; negative, no wait at all.
	InterruptWait time.Duration
	// WaitName, when not empty, names InterruptWait in messages (the
	// command says "--interrupt-wait").
	WaitName string

	// The hooks below run on the goroutine of Run; nil hooks are skipped.

	// Notify is told, a second after an interrupt, what is awaited, and
	// that the wait was given up.
	Notify func(string)
	// Progress is told the bytes done so far, about five times a second
	// and at the end.
	Progress func(done int64)
	// Dropped is told that destination i was dropped (a write or flush
	// failed).
	Dropped func(i int)
	// JobDone is told the outcome of every engine job, and of every Skip
	// segment that is complete (Dests nil, All true), before the batch
	// records it.
	JobDone func(*JobResult)
	// Tick is called after every job and about five times a second: a
	// place to checkpoint (see Batch.Flush).
	Tick func()
}

// A JobResult is the outcome of one engine job of a batch.
type JobResult struct {
	Region         int   // the region of the job's first segment
	Src, Dest, Len int64 // the job's source offset (copy), destination offset and length
	// Dests are the destinations written, by index; All says they are
	// every destination of the job's segments (none was dropped before).
	Dests []int
	All   bool
	// Err is nil when the job succeeded.
	Err *kcopyd.JobError
}

// DestReadRanges returns Err.ReadRanges (source offsets) moved to
// destination offsets: the ranges that, under IgnoreError, were written as
// zeroes on every destination of the job.
func (j *JobResult) DestReadRanges() []kcopyd.Range {
	if j.Err == nil {
		return nil
	}
	return destRanges(j.Err.ReadRanges, j.Src, j.Dest)
}

// destRanges moves source ranges rs of a job reading at src and writing at
// dest to destination offsets.
func destRanges(rs []kcopyd.Range, src, dest int64) []kcopyd.Range {
	out := make([]kcopyd.Range, len(rs))
	for i, r := range rs {
		out[i] = kcopyd.Range{Off: r.Off - src + dest, Len: r.Len}
	}
	return out
}

// DestResult is what a batch did to one destination.
type DestResult struct {
	// Errs are the write, zeroing and flush errors.
	Errs []error
	// Ranges are destination byte ranges that did not receive the right
	// data: failed writes and, under IgnoreError, unreadable source
	// ranges moved to destination offsets (written as zeroes).
	Ranges []kcopyd.Range
	// Dropped: a write or flush failed, and later jobs left it out (never
	// under IgnoreError, except after a failed flush).
	Dropped bool
	// FlushFailed: a Flush failed; it is not tried again.
	FlushFailed bool
	// Prefixes holds, per region, the bytes from its start known good on
	// the destination (the whole region when it is not for it).
	Prefixes []int64
	// Unwritten holds, per region, the offset from its start from which
	// nothing was written to the destination (the region's length when
	// everything was).
	Unwritten []int64
}

// Result is the outcome of a batch.
type Result struct {
	ReadErr     error          // the first source read error
	ReadRanges  []kcopyd.Range // unreadable source ranges (IgnoreError)
	InternalErr error          // the engine refused a job or failed it without cause
	Canceled    bool           // ctx stopped the batch before it was done
	Submitted   bool           // at least one job was submitted
	Abandoned   bool           // jobs were still in flight after InterruptWait
	// Completed is the bytes of the regions known complete on their live
	// destinations.
	Completed int64
	// Prefixes holds, per region, the bytes from its start known complete
	// on every destination of the region, dropped ones included: a rerun
	// of the rest finishes it.
	Prefixes []int64
	Dests    []DestResult // in the order of Options.Dests
}

// segment is a plan segment with the batch's state.
type segment struct {
	plan.Segment
	completed int64 // bytes from the segment's start known complete on its live destinations
	started   bool  // a task was submitted, or the segment needs none
	active    bool  // a task is in flight or queued for it
	live      []int // dests not dropped when the segment was first dispatched
	left      *int  // segments of its group not yet accounted
	// cut holds, for a destination that failed in the segment, the bytes
	// from the segment's start known good on it.
	cut map[int]int64
}

// cutAt records that destination i holds good data for at most n bytes
// from the segment's start.
func (s *segment) cutAt(i int, n int64) {
	if s.cut == nil {
		s.cut = map[int]int64{}
	}
	if c, ok := s.cut[i]; !ok || n < c {
		s.cut[i] = max(n, 0)
	}
}

// task is one submitted engine job: contiguous segments (one, or several
// coalesced) from off bytes into the first on.
type task struct {
	segs  []*segment
	off   int64
	dests []int
	job   *kcopyd.Job
	err   error
}

// span returns the source and destination offsets and the length of t's
// segments, from t.off on.
func (t *task) span() (src, dest, length int64) {
	for _, s := range t.segs {
		length += s.Len
	}
	return t.segs[0].Src + t.off, t.segs[0].Dest + t.off, length - t.off
}

// A Batch runs the segments of its regions on a client. Create it with
// New, call Run once; Flush may be called from the hooks and after Run,
// and Result after Run.
type Batch struct {
	client *kcopyd.Client
	o      Options
	ignore bool

	res   Result
	dests []DestResult

	// pending holds, per region, the segments received from the plan and
	// not yet accounted, in order; npending counts the groups (jobs) they
	// belong to, at most window.
	pending  [][]*segment
	npending int
	// stuck[i][reg]: the prefix of region reg on destination i can grow
	// no more. planned[reg] is the end of the segments taken.
	stuck   [][]bool
	planned []int64
}

// New returns a batch of opts' regions for client. opts is copied.
func New(client *kcopyd.Client, opts *Options) *Batch {
	o := *opts
	o.Dests = slices.Clone(o.Dests)
	o.MaxJobs = max(o.MaxJobs, 1)
	if o.MaxJobLen == 0 {
		o.MaxJobLen = DefaultMaxJobLen
	}
	if o.InterruptWait == 0 {
		o.InterruptWait = DefaultInterruptWait
	}
	for i := range o.Dests {
		if o.Dests[i].Name == "" {
			o.Dests[i].Name = device.Name(o.Dests[i].Dev)
		}
	}
	if o.Plan == nil {
		p := &plan.Planner{Kind: plan.Copy, Regions: o.Regions, ZeroFrom: make([]int64, len(o.Dests))}
		if o.Src == nil {
			p.Kind = plan.Zero
		}
		o.Plan = p.Run
	}
	b := &Batch{client: client, o: o, ignore: o.Flags&kcopyd.IgnoreError != 0}
	b.pending = make([][]*segment, len(o.Regions))
	b.planned = make([]int64, len(o.Regions))
	b.dests = make([]DestResult, len(o.Dests))
	b.stuck = make([][]bool, len(o.Dests))
	for i := range b.dests {
		d := &b.dests[i]
		d.Prefixes = make([]int64, len(o.Regions))
		d.Unwritten = make([]int64, len(o.Regions))
		b.stuck[i] = make([]bool, len(o.Regions))
		for reg, rg := range o.Regions {
			d.Unwritten[reg] = rg.Len
		}
	}
	return b
}

// window bounds the groups of segments planned ahead of the jobs.
func (b *Batch) window() int { return 2*b.o.MaxJobs + 16 }

// Run takes segments from the plan, submits them in order, at most
// MaxJobs at once, and waits until every submitted job finished. It
// returns when the work is done, ctx is done (after the jobs in flight
// finished, or InterruptWait), a read error stops the batch (not under
// IgnoreError) or every destination was dropped.
func (b *Batch) Run(ctx context.Context) {
	planCtx, stopPlan := context.WithCancel(ctx)
	groups := make(chan []*segment)
	planDone := make(chan struct{})
	go func() {
		defer close(planDone)
		b.plan(planCtx, groups)
	}()
	b.dispatch(ctx, groups)
	stopPlan()
	go func() {
		for range groups {
			// Drop what the plan sent before it saw stopPlan.
		}
	}()
	if !b.res.Abandoned {
		b.waitPlan(planDone)
	}
	if ctx.Err() != nil && b.res.Completed+b.pendingCompleted() < b.total() {
		b.res.Canceled = true
	}
	b.progress(nil)
	b.settleAll()
}

// waitPlan waits until the plan, told to stop, returns: at once, unless it
// is stuck in a call (an Extents call to a source that does not answer);
// then at most InterruptWait.
func (b *Batch) waitPlan(planDone <-chan struct{}) {
	t := time.NewTimer(b.o.InterruptWait)
	defer t.Stop()
	select {
	case <-planDone:
	case <-t.C:
		b.res.Abandoned = true
		b.notify(fmt.Sprintf("gave up waiting for the allocation map of %s after %v", device.Name(b.o.Src), max(b.o.InterruptWait, 0)))
	}
}

func (b *Batch) notify(s string) {
	if b.o.Notify != nil {
		b.o.Notify(s)
	}
}

func (b *Batch) tick() {
	if b.o.Tick != nil {
		b.o.Tick()
	}
}

// progress tells Options.Progress the bytes done: accounted segments,
// pending ones and the progress of the jobs in flight.
func (b *Batch) progress(inflight []*task) {
	if b.o.Progress == nil {
		return
	}
	n := b.res.Completed + b.pendingCompleted()
	for _, t := range inflight {
		n += t.job.Progress()
	}
	b.o.Progress(n)
}

// awaited names what the tasks in flight read and write.
func (b *Batch) awaited(inflight []*task) string {
	var reading bool
	var writing []string
	for _, t := range inflight {
		reading = reading || t.segs[0].Kind == plan.Copy
		for _, i := range t.dests {
			if s := b.o.Dests[i].Name; !slices.Contains(writing, s) {
				writing = append(writing, s)
			}
		}
	}
	var parts []string
	if reading && b.o.Src != nil {
		parts = append(parts, "reading "+device.Name(b.o.Src))
	}
	if len(writing) > 0 {
		parts = append(parts, "writing "+strings.Join(writing, ", "))
	}
	return strings.Join(parts, "; ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// Flush flushes every destination that has a volatile cache
// (device.Flusher), returning an error when a destination is not known
// durable: its flush failed, now or before (it is not tried again: after
// a failed fsync a later one may succeed without the lost writes). A
// failed flush is recorded on the destination, which is dropped. It must
// not be called while Run runs, except from a hook.
func (b *Batch) Flush() error {
	var errs []error
	for i, d := range b.o.Dests {
		r := &b.dests[i]
		if r.FlushFailed {
			errs = append(errs, fmt.Errorf("%s: an earlier flush failed", d.Name))
			continue
		}
		if f, ok := d.Dev.(device.Flusher); ok {
			if err := f.Flush(); err != nil {
				r.FlushFailed = true
				errs = append(errs, fmt.Errorf("%s: %w", d.Name, err))
				r.Errs = append(r.Errs, fmt.Errorf("flush: %w", err))
				b.drop(i)
			}
		}
	}
	return errors.Join(errs...)
}

// drop marks destination i dropped and tells Options.Dropped once.
func (b *Batch) drop(i int) {
	if b.dests[i].Dropped {
		return
	}
	b.dests[i].Dropped = true
	if b.o.Dropped != nil {
		b.o.Dropped(i)
	}
}

// Result returns the batch's outcome. Valid after Run; the slices are the
// batch's own.
func (b *Batch) Result() *Result {
	r := b.res
	r.Dests = b.dests
	r.Prefixes = make([]int64, len(b.o.Regions))
	for reg, rg := range b.o.Regions {
		r.Prefixes[reg] = rg.Len
		for i := range b.dests {
			if rg.Has(i) {
				r.Prefixes[reg] = min(r.Prefixes[reg], b.dests[i].Prefixes[reg])
			}
		}
	}
	for i := range r.Dests {
		d := &r.Dests[i]
		for reg, rg := range b.o.Regions {
			d.Unwritten[reg] = min(d.Unwritten[reg], b.planned[reg])
			if !rg.Has(i) {
				d.Unwritten[reg] = rg.Len
			}
		}
	}
	return &r
}

// A RegionError is the engine's refusal of a region's job, from Check.
type RegionError struct {
	Region int // index in Options.Regions
	Err    error
}

func (e *RegionError) Error() string { return fmt.Sprintf("region %d: %v", e.Region, e.Err) }

// Unwrap returns the engine's error.
func (e *RegionError) Unwrap() error { return e.Err }

// Check asks the engine whether it accepts the job of every non-empty
// region of opts (Src, Dests, Regions and Flags), without submitting
// anything, so that a batch the engine would refuse part of is refused
// whole before anything is written. It returns nil or a *RegionError for
// the first region refused.
func Check(client *kcopyd.Client, opts *Options) error {
	for reg, rg := range opts.Regions {
		if rg.Len == 0 {
			continue // nothing is submitted for it
		}
		var dests []kcopyd.Region
		for i, d := range opts.Dests {
			if rg.Has(i) {
				dests = append(dests, kcopyd.Region{Dev: d.Dev, Off: rg.Dest, Len: rg.Len})
			}
		}
		var err error
		if opts.Src == nil {
			err = client.CheckZero(dests, opts.Flags)
		} else {
			err = client.CheckCopy(kcopyd.Region{Dev: opts.Src, Off: rg.Src, Len: rg.Len}, dests, opts.Flags)
		}
		if err != nil {
			return &RegionError{Region: reg, Err: err}
		}
	}
	return nil
}
