package kcopyd

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/internal/dmio"
	"github.com/kcopyd/kcopyd/internal/invariants"
)

// Region is a byte range of a device: Len bytes starting at byte Off.
// (The kernel's dm_io_region counts 512-byte sectors; see Sectors.)
type Region struct {
	Dev device.Device
	Off int64 // bytes
	Len int64 // bytes
}

// SectorSize is the kernel's sector: 512 bytes.
const SectorSize = 512

// Sectors returns the region of count 512-byte sectors starting at sector,
// the kernel's units.
func Sectors(dev device.Device, sector, count int64) Region {
	return Region{Dev: dev, Off: sector * SectorSize, Len: count * SectorSize}
}

// Flags change how a job runs. Unlike the kernel's, which are bit numbers,
// they are masks to be ORed together.
type Flags uint

const (
	// IgnoreError keeps a job going after errors: every chunk is tried,
	// and a source range that cannot be read is written to the
	// destinations as zeroes (the kernel's behaviour) and reported in
	// JobError.ReadRanges, to the block (4 KiB or the device's block):
	// a chunk whose read fails is re-read block by block, and a block is
	// unreadable when it fails twice.
	// Dangerous: the destinations then differ from the source.
	IgnoreError Flags = 1 << iota

	// WriteSeq makes the writes of a job reach each destination in
	// ascending order: a chunk's write is issued only after the previous
	// chunk's write has completed. Required by host-managed zoned
	// destinations, for which it is switched on automatically. It clears
	// IgnoreError. After an error, chunks not yet written are dropped (the
	// kernel would wait for them forever).
	WriteSeq

	// DetectZeroes makes a chunk that reads as all zeroes be written with
	// the destinations' native write-zeroes (punching holes in files)
	// when every destination has one; otherwise it is written as data.
	DetectZeroes

	// SkipZeroes makes a chunk that reads as all zeroes not be written at
	// all: for destinations known to read as zeroes already. Ignored with
	// WriteSeq, where skipping a chunk would break the write order.
	SkipZeroes

	flagMask = IgnoreError | WriteSeq | DetectZeroes | SkipZeroes
)

// Callback is told how a job ended. It runs exactly once per accepted job,
// on the client's worker goroutine, one callback at a time per client,
// never inside Copy or Zero and never on an I/O goroutine. It may submit
// new jobs; it must not call Close, Drain or Flush, and while it runs the
// client issues no new I/O, so it should be quick.
//
// readErr is the kernel's read_err: some source read failed. Bit i of
// writeErr is set when a write to destination i failed; all ones means the
// job failed with no real write result (only DoCallback reports that). err
// is nil on success and otherwise a *JobError with the details, also when
// the job was stopped by its context (then both bits may be clear).
type Callback func(readErr bool, writeErr uint64, err error)

// Job is a submitted job. Its methods are safe for concurrent use.
type Job struct {
	c      *Client
	ctx    context.Context
	flags  Flags
	fn     Callback
	zero   bool // a Zero job
	native bool // Zero job (or DetectZeroes): every destination has native write-zeroes
	length int64
	chunk  int64 // bytes per chunk: the sub-job size, or nativeZeroChunk
	src    Region
	ndest  int
	dests  [MaxRegions]Region

	root job   // the unsplit job, or the master's own list entry
	subs []job // SplitCount sub-jobs when split

	nextWrite atomic.Int64 // WriteSeq: offset of the next chunk allowed to write
	seqStop   atomic.Int64 // WriteSeq: lowest chunk that will never be written; chunks above it are dropped
	stopped   atomic.Bool  // dispatch stopped by an error or the context
	progress  atomic.Int64 // bytes of chunks written to every destination
	issuedTo  int64        // invariants: end of the last chunk whose first I/O was issued; worker only
	stopCtx   func() bool  // unregisters the context wake

	// mu guards the dispatch cursor and the job's outcome. Chunks are
	// assigned and queued under it, so a job's chunks enter the client's
	// lists in ascending order whichever goroutine assigns them. Its size
	// does not grow with the job: the complete prefix is derived from the
	// cursor and the lowest chunk that failed, and failed ranges are
	// merged on insert and bounded (MaxRanges).
	mu struct {
		sync.Mutex
		next       int64 // offset of the next chunk to dispatch
		lastQueued int64 // invariants: offset of the last chunk queued; -1 before the first
		slots      int   // sub-jobs still running
		failedAt   int64 // offset of the lowest chunk that did not complete; -1 if none
		readErr    error
		readBad    rangeSet
		writes     [MaxRegions]error
		wranges    [MaxRegions]rangeSet
		mask       uint64
		canceled   error
	}

	done chan struct{}
	err  error // set before done is closed
}

type jobKind uint8

const (
	kindUnsplit jobKind = iota
	kindSub
	kindMaster
	kindCallback
)

type op uint8

const (
	opRead op = iota
	opWrite
	opZero
)

// job is one entry of the client's lists: an unsplit job, a sub-job (one
// chunk at a time), a master waiting for completion, or a prepared
// callback.
type job struct {
	next *job
	top  *Job
	kind jobKind
	op   op
	rel  int64 // chunk offset relative to the start of the job
	n    int64 // chunk length
	buf  []byte

	// Chunk outcome.
	skipped  bool // read all zeroes and SkipZeroes: not written
	canceled bool // stopped before its I/O was issued
	readErr  error
	readBad  []dmio.Range
	writeErr [MaxRegions]error

	req dmio.Request

	// Prepared callbacks.
	cb     Callback
	cbRead bool
	cbMask uint64
}

// Copy copies src to every region of dests (1 to MaxRegions, each as long
// as src), reading each chunk of the source once and writing it to all
// destinations in parallel. Regions longer than the sub-job size are split
// into chunks processed SplitCount at a time, issued in ascending order;
// they may complete in any order.
//
// Copy checks its arguments before accepting the job; if it returns an
// error nothing was queued and fn will not be called. Otherwise fn (which
// may be nil) is called exactly once when the job ends, and the returned
// Job can be waited on. Copy does not block on I/O.
//
// When ctx is done, the job stops dispatching chunks: chunks in flight
// finish, the rest are not touched, and the job ends with a *JobError
// whose Canceled is ctx.Err() and whose Completed says how far it got.
func (c *Client) Copy(ctx context.Context, src Region, dests []Region, flags Flags, fn Callback) (*Job, error) {
	if err := c.validate(&src, dests, flags); err != nil {
		return nil, err
	}
	return c.submit(ctx, &src, dests, flags, fn)
}

// Zero makes every region of dests (1 to MaxRegions, all of one length)
// read as zeroes. It uses the destinations' native write-zeroes
// (BLKZEROOUT, fallocate, NBD_CMD_WRITE_ZEROES) when every destination has
// one, and writes from a shared zero buffer otherwise; it allocates no
// buffers. Otherwise it behaves as Copy.
func (c *Client) Zero(ctx context.Context, dests []Region, flags Flags, fn Callback) (*Job, error) {
	if err := c.validate(nil, dests, flags); err != nil {
		return nil, err
	}
	return c.submit(ctx, nil, dests, flags, fn)
}

// validate checks a job's regions and flags. src is nil for Zero.
func (c *Client) validate(src *Region, dests []Region, flags Flags) error {
	if flags&^flagMask != 0 {
		return fmt.Errorf("%w: %#x", ErrBadFlags, uint(flags&^flagMask))
	}
	if len(dests) == 0 {
		return ErrNoDests
	}
	if len(dests) > MaxRegions {
		return fmt.Errorf("%w: %d given", ErrTooManyDests, len(dests))
	}
	all := make([]Region, 0, len(dests)+1)
	if src != nil {
		all = append(all, *src)
	}
	all = append(all, dests...)
	length := all[0].Len
	what := func(i int) string {
		if src == nil {
			return fmt.Sprintf("destination %d", i)
		}
		if i == 0 {
			return "source"
		}
		return fmt.Sprintf("destination %d", i-1)
	}
	for i, r := range all {
		if r.Dev == nil {
			return fmt.Errorf("%w: %s", ErrNilDevice, what(i))
		}
		if r.Len != length {
			return fmt.Errorf("%w: %s is %d bytes, want %d", ErrLengthMismatch, what(i), r.Len, length)
		}
		if size := r.Dev.Size(); r.Off < 0 || r.Len < 0 || r.Off > size || r.Len > size-r.Off {
			return fmt.Errorf("%w: %s [%d, +%d) on %s of %d bytes", ErrOutOfRange, what(i), r.Off, r.Len, device.Name(r.Dev), size)
		}
		if err := dmio.CheckLimits(r.Dev); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrBadLimits, what(i), err)
		}
		if a := int64(device.LimitsOf(r.Dev).OffsetAlign); a > 1 {
			// An unaligned length is allowed when it ends at the end of
			// the device (device.Device's contract).
			if r.Off%a != 0 || (r.Len%a != 0 && r.Off+r.Len != r.Dev.Size()) || c.subJob%a != 0 {
				return fmt.Errorf("%w: %s [%d, +%d) on %s needs multiples of %d bytes", ErrAlignment, what(i), r.Off, r.Len, device.Name(r.Dev), a)
			}
		}
	}
	// Overlap is judged on the underlying store: two opens of one file, or
	// a partition and its disk, are the same store.
	var ids [MaxRegions + 1]string
	var bases [MaxRegions + 1]int64
	for i, r := range all {
		ids[i], bases[i] = device.PlacementOf(r.Dev)
	}
	for i := range all {
		for j := i + 1; j < len(all); j++ {
			a, b := all[i].Off+bases[i], all[j].Off+bases[j]
			if length > 0 && ids[i] == ids[j] && a < b+length && b < a+length {
				return fmt.Errorf("%w: %s [%d, +%d) and %s [%d, +%d)", ErrOverlap,
					device.Name(all[i].Dev), all[i].Off, length, device.Name(all[j].Dev), all[j].Off, length)
			}
		}
	}
	return nil
}

func (c *Client) submit(ctx context.Context, src *Region, dests []Region, flags Flags, fn Callback) (*Job, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if err := c.accept(); err != nil {
		return nil, err
	}
	t := &Job{c: c, ctx: ctx, fn: fn, ndest: len(dests), done: make(chan struct{})}
	copy(t.dests[:], dests)
	t.length = dests[0].Len
	t.native = true
	for _, d := range dests {
		l := device.LimitsOf(d.Dev)
		if l.Zoned == device.ZoneHostManaged {
			flags |= WriteSeq
		}
		t.native = t.native && dmio.CanWriteZeroes(d.Dev)
	}
	if flags&WriteSeq != 0 {
		flags &^= IgnoreError
	}
	t.flags = flags
	if src != nil {
		t.src = *src
	} else {
		t.zero = true
	}
	t.mu.failedAt, t.mu.lastQueued = -1, -1
	t.seqStop.Store(math.MaxInt64)
	if ctx.Done() != nil {
		t.stopCtx = context.AfterFunc(ctx, c.wake)
	}

	t.chunk = c.subJob
	if t.zero && t.native && c.throttle == nil && flags&WriteSeq == 0 {
		// Native zeroing needs no buffer: large requests, as
		// fallocate(1) and blkdiscard(8) make, instead of thousands.
		// (Not with WriteSeq: a zoned device's request must not cross a
		// zone, and sub-jobs are a zone's divisor where it matters.)
		t.chunk = max(c.subJob, nativeZeroChunk)
	}
	t.root.top = t
	switch {
	case t.length == 0:
		// Completes through the callback list, never inline (§8.1).
		t.root.kind = kindMaster
		c.push(&c.mu.callbacks, &t.root)
	case t.length <= t.chunk:
		t.root.kind = kindUnsplit
		t.root.init(0, t.length)
		c.dispatch(&t.root)
	default:
		t.root.kind = kindMaster
		t.subs = make([]job, SplitCount)
		t.mu.slots = SplitCount
		for i := range t.subs {
			t.subs[i].top, t.subs[i].kind = t, kindSub
		}
		for i := range t.subs {
			c.nextChunk(&t.subs[i])
		}
	}
	return t, nil
}

// nativeZeroChunk is the chunk size of a Zero job whose destinations all
// have a native write-zeroes, on a client without a Throttle (which paces
// chunks, and so keeps them at the sub-job size) and without WriteSeq. It bounds how long one
// request holds a job's cancellation and progress; dmio splits it further
// at each device's MaxWriteZeroes.
const nativeZeroChunk = 128 << 20

// init readies j to move the chunk [rel, rel+n) of its job.
func (j *job) init(rel, n int64) {
	t := j.top
	j.rel, j.n = rel, n
	j.skipped, j.canceled, j.readErr = false, false, nil
	j.readBad = j.readBad[:0]
	j.writeErr = [MaxRegions]error{}
	if t.zero {
		j.op = opZero
	} else {
		j.op = opRead
	}
	if j.req.Notify == nil {
		j.req.Notify = j.ioDone
	}
}

// dispatch queues a chunk: zeroings need no buffers (§2.4).
func (c *Client) dispatch(j *job) {
	if j.op == opZero {
		c.push(&c.mu.io, j)
	} else {
		c.push(&c.mu.pages, j)
	}
}

// nextChunk gives sub-job s the next chunk of its job, or retires it; the
// last sub-job to retire queues the master for completion (§2.7, §2.8).
// It runs in the submitter's goroutine for the first chunks and on the
// worker after that, concurrently; taking the chunk and queueing it under
// one hold of the job's lock keeps the job's chunks in ascending order on
// the client's lists. (Taking it under the lock and queueing it after, as
// the kernel does, let the worker queue chunk k+1 before the submitter
// queued chunk k; with WriteSeq and one buffer, k+1 then held the buffer
// waiting for k's write, and k waited for the buffer.)
func (c *Client) nextChunk(s *job) {
	t := s.top
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.next < t.length && !t.stopped.Load() && t.ctx.Err() != nil {
		t.noteCanceledLocked()
	}
	if t.mu.next >= t.length || t.stopped.Load() {
		t.mu.slots--
		if t.mu.slots == 0 {
			c.push(&c.mu.complete, &t.root)
		}
		return
	}
	rel, n := t.mu.next, min(t.chunk, t.length-t.mu.next)
	t.mu.next += n
	s.init(rel, n)
	t.queuedLocked(rel)
	c.dispatch(s)
}

// queuedLocked checks, when built with the invariants tag, that a job's
// chunks are queued in ascending order. Called with t.mu held.
func (t *Job) queuedLocked(rel int64) {
	if !invariants.Enabled {
		return
	}
	if rel <= t.mu.lastQueued {
		panic(fmt.Sprintf("kcopyd: invariant: chunk at %d queued after chunk at %d", rel, t.mu.lastQueued))
	}
	t.mu.lastQueued = rel
}

// runPages gets buffers for a chunk; false means none now (§6.2).
func (c *Client) runPages(j *job) bool {
	if j.top.ctx.Err() != nil {
		c.drop(j)
		return true
	}
	b, ok := c.pool.Get(int(j.n))
	if !ok {
		return false
	}
	j.buf = b
	c.mu.Lock()
	c.mu.io.pushBack(j)
	c.mu.Unlock()
	return true
}

// runIO issues a chunk's read or write on the worker.
func (c *Client) runIO(j *job) {
	t := j.top
	if j.op != opWrite && t.ctx.Err() != nil {
		c.drop(j) // nothing issued yet for this chunk
		return
	}
	if j.op != opRead && t.flags&WriteSeq != 0 && j.rel > t.seqStop.Load() {
		c.drop(j) // an earlier chunk will never be written
		return
	}
	if th := c.throttle; th != nil {
		// Data moves once per chunk: count it at the read, or at the
		// zeroing of a Zero job (a DetectZeroes chunk turned into a
		// zeroing was counted at its read).
		if j.op == opRead || (j.op == opZero && t.zero) {
			if err := th.waitBytes(t.ctx, j.n); err != nil {
				c.drop(j)
				return
			}
		}
		th.onIssue()
	}
	r := &j.req
	switch j.op {
	case opRead:
		r.Op, r.N, r.Buf, r.Salvage = dmio.OpRead, 1, j.buf, t.flags&IgnoreError != 0
		r.Regions[0] = dmio.Region{Dev: t.src.Dev, Off: t.src.Off + j.rel, Len: j.n}
	case opWrite, opZero:
		r.Op, r.N, r.Buf = dmio.OpWrite, t.ndest, j.buf
		if j.op == opZero {
			r.Op, r.Native = dmio.OpWriteZeroes, t.native
		}
		for i := range t.ndest {
			d := t.dests[i]
			r.Regions[i] = dmio.Region{Dev: d.Dev, Off: d.Off + j.rel, Len: j.n}
		}
	}
	if invariants.Enabled {
		t.checkIssue(j)
	}
	c.io.Submit(r)
}

// checkIssue panics, when built with the invariants tag, if a chunk's
// first I/O (its read, or a Zero job's zeroing) is issued below one issued
// before it, or a WriteSeq write out of turn. Called on the worker.
func (t *Job) checkIssue(j *job) {
	switch {
	case j.op == opRead || (j.op == opZero && t.zero):
		if j.rel < t.issuedTo {
			panic(fmt.Sprintf("kcopyd: invariant: chunk at %d issued after the chunk ending at %d", j.rel, t.issuedTo))
		}
		t.issuedTo = j.rel + j.n
	case t.flags&WriteSeq != 0:
		if next := t.nextWrite.Load(); j.rel != next {
			panic(fmt.Sprintf("kcopyd: invariant: WriteSeq write at %d issued while the next in order is %d", j.rel, next))
		}
	}
}

// drop completes a chunk without (further) I/O: its context is done, or
// under WriteSeq an earlier chunk failed.
func (c *Client) drop(j *job) {
	j.canceled = true
	j.top.neverWritten(j.rel)
	c.push(&c.mu.complete, j)
}

// ioDone runs on an I/O goroutine when a chunk's request completes. It only
// records, requeues and wakes; callbacks run on the worker (§7.5).
func (j *job) ioDone(r *dmio.Request) {
	t := j.top
	c := t.c
	if th := c.throttle; th != nil {
		th.onComplete()
	}
	if j.op == opRead {
		if err := r.Errs[0]; err != nil {
			j.readErr = err
			j.readBad = append(j.readBad, r.Bad...)
			if t.flags&IgnoreError == 0 {
				t.stopped.Store(true)
				t.neverWritten(j.rel)
				c.push(&c.mu.complete, j)
				return
			}
		} else if t.flags&(DetectZeroes|SkipZeroes) != 0 && isZero(j.buf) {
			if t.flags&SkipZeroes != 0 && t.flags&WriteSeq == 0 {
				j.skipped = true
				c.push(&c.mu.complete, j)
				return
			}
			if t.flags&DetectZeroes != 0 && t.native {
				j.op = opZero
				c.push(&c.mu.io, j)
				return
			}
		}
		j.op = opWrite
		c.push(&c.mu.io, j)
		return
	}
	failed := false
	for i := range t.ndest {
		if r.Errs[i] != nil {
			j.writeErr[i] = r.Errs[i]
			failed = true
		}
	}
	if failed && t.flags&IgnoreError == 0 {
		t.stopped.Store(true)
		t.neverWritten(j.rel)
	}
	if t.flags&WriteSeq != 0 {
		t.nextWrite.Store(j.rel + j.n)
	}
	c.push(&c.mu.complete, j)
}

// neverWritten records, for WriteSeq, that chunk rel will not be written,
// so chunks after it can no longer be written in order and are dropped
// instead of waiting for it.
func (t *Job) neverWritten(rel int64) {
	for {
		cur := t.seqStop.Load()
		if rel >= cur || t.seqStop.CompareAndSwap(cur, rel) {
			return
		}
	}
}

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), 1<<20)
		if !bytes.Equal(b[:n], dmio.Zeroes(n)) {
			return false
		}
		b = b[n:]
	}
	return true
}

// runComplete runs on the worker for each entry of the complete list
// (§2.2 step 2): it returns buffers first, then either moves a sub-job on
// to its next chunk or ends a job.
func (c *Client) runComplete(j *job) {
	if j.buf != nil {
		c.pool.Put(j.buf)
		j.buf = nil
	}
	switch j.kind {
	case kindCallback:
		c.call(func() { j.cb(j.cbRead, j.cbMask, callbackErr(j.cbRead, j.cbMask)) })
		c.release()
	case kindSub:
		j.top.merge(j)
		c.nextChunk(j)
	case kindUnsplit:
		j.top.merge(j)
		c.finish(j.top)
	case kindMaster:
		c.finish(j.top)
	}
}

// merge folds a finished chunk's outcome into its job. Called on the worker.
func (t *Job) merge(j *job) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ok := !j.canceled
	if j.canceled {
		t.stopped.Store(true)
		if err := t.ctx.Err(); err != nil {
			t.noteCanceledLocked()
		}
	}
	if j.readErr != nil {
		if t.mu.readErr == nil {
			t.mu.readErr = j.readErr
		}
		for _, b := range j.readBad {
			t.mu.readBad.add(Range(b))
		}
		if t.flags&IgnoreError == 0 {
			ok = false
		}
	}
	for i := range t.ndest {
		if err := j.writeErr[i]; err != nil {
			ok = false
			if t.mu.writes[i] == nil {
				t.mu.writes[i] = err
			}
			t.mu.mask |= 1 << i
			t.mu.wranges[i].add(Range{Off: t.dests[i].Off + j.rel, Len: j.n})
		}
	}
	if !ok {
		if t.mu.failedAt < 0 || j.rel < t.mu.failedAt {
			t.mu.failedAt = j.rel
		}
		return
	}
	t.progress.Add(j.n)
}

// noteCanceledLocked records the context's error. Called with t.mu held.
func (t *Job) noteCanceledLocked() {
	if t.mu.canceled == nil {
		t.mu.canceled = context.Cause(t.ctx)
	}
	t.stopped.Store(true)
}

// completedLocked returns the bytes from the start of the job known to be
// on every destination, once every chunk has been merged. Chunks are
// dispatched in ascending order and each one dispatched is merged before
// the job ends, so every chunk below the cursor completed unless it failed:
// the prefix ends at the lowest failed chunk, or at the cursor. (No record
// of the chunks that complete past a slow one is needed, so a job's state
// does not grow with its length.) Called with t.mu held.
func (t *Job) completedLocked() int64 {
	if t.mu.failedAt >= 0 {
		return min(t.mu.failedAt, t.mu.next)
	}
	return t.mu.next
}

// finish ends a job on the worker: it builds the result, runs the callback,
// and then marks the job done and no longer outstanding.
func (c *Client) finish(t *Job) {
	if t.stopCtx != nil {
		t.stopCtx()
	}
	t.mu.Lock()
	if invariants.Enabled {
		for i := range t.subs {
			if t.subs[i].buf != nil {
				panic("kcopyd: invariant: a job ended with a sub-job still holding a buffer")
			}
		}
	}
	var err *JobError
	if t.mu.readErr != nil || t.mu.mask != 0 || t.mu.canceled != nil {
		err = &JobError{
			Read:       t.mu.readErr,
			ReadRanges: t.mu.readBad.list(),
			Writes:     append([]error(nil), t.mu.writes[:t.ndest]...),
			Canceled:   t.mu.canceled,
			Completed:  t.completedLocked(),
			writeMask:  t.mu.mask,
		}
		err.WriteRanges = make([][]Range, t.ndest)
		for i := range t.ndest {
			err.WriteRanges[i] = t.mu.wranges[i].list()
		}
	}
	t.mu.Unlock()
	readErr, mask := false, uint64(0)
	if err != nil {
		readErr, mask = err.Read != nil, err.writeMask
		t.err = err
	}
	if t.fn != nil {
		c.call(func() { t.fn(readErr, mask, t.err) })
	}
	close(t.done)
	c.release()
}

// Done returns a channel that is closed after the job's callback returned.
func (t *Job) Done() <-chan struct{} { return t.done }

// Wait blocks until the job is done and returns its error (nil or a
// *JobError), or returns ctx.Err() if ctx is done first; the job goes on.
// It must not be called from a callback of the same client.
func (t *Job) Wait(ctx context.Context) error {
	select {
	case <-t.done:
		return t.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Err returns the job's error once it is done (nil or a *JobError), and
// nil before.
func (t *Job) Err() error {
	select {
	case <-t.done:
		return t.err
	default:
		return nil
	}
}

// Progress returns how many bytes of the job have been written to every
// destination so far (chunks complete in any order, so these need not be
// a prefix; see JobError.Completed).
func (t *Job) Progress() int64 { return t.progress.Load() }

// Len returns the job's length in bytes.
func (t *Job) Len() int64 { return t.length }

// CallbackHandle is a callback prepared with PrepareCallback, to be fired
// once with DoCallback.
type CallbackHandle struct {
	j     job
	c     *Client
	fired atomic.Bool
}

// PrepareCallback returns a handle that runs fn on the client's worker when
// DoCallback fires it, like the kernel's dm_kcopyd_prepare_callback: it
// lets code that did its own I/O report completion through the same serial
// callback path as copies. The handle counts as outstanding until fn has
// run, so Close waits for it: a handle that is never fired blocks Close.
// It fails only with ErrClosed.
func (c *Client) PrepareCallback(fn Callback) (*CallbackHandle, error) {
	if fn == nil {
		panic("kcopyd: PrepareCallback with a nil callback")
	}
	if err := c.accept(); err != nil {
		return nil, err
	}
	h := &CallbackHandle{c: c}
	h.j.kind, h.j.cb = kindCallback, fn
	return h, nil
}

// DoCallback fires a prepared handle: its callback runs on the worker with
// these results (err is a *JobError when readErr or writeErr is set). It
// never blocks and may be called from any goroutine. Firing a handle twice,
// or a handle of another client, panics.
func (c *Client) DoCallback(h *CallbackHandle, readErr bool, writeErr uint64) {
	if h.c != c {
		panic("kcopyd: DoCallback with another client's handle")
	}
	if h.fired.Swap(true) {
		panic("kcopyd: DoCallback fired the same handle twice")
	}
	h.j.cbRead, h.j.cbMask = readErr, writeErr
	c.push(&c.mu.callbacks, &h.j)
}

func callbackErr(readErr bool, mask uint64) error {
	if !readErr && mask == 0 {
		return nil
	}
	e := &JobError{writeMask: mask}
	if readErr {
		e.Read = ErrReported
	}
	return e
}
