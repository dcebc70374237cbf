package kcopyd

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/internal/dmio"
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
	zero   bool // no source: a Zero or VerifyZero job
	verify bool // a Verify or VerifyZero job: reads and compares, writes nothing
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
	offload   atomic.Bool  // chunks are copied with device.RangeCopier until a refusal
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
		firstDiff  [MaxRegions]int64 // Verify: lowest differing byte per destination; -1 for none
	}

	done chan struct{}
	err  error // set before done is closed
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
	return c.submit(ctx, &src, dests, flags, fn, false)
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
	return c.submit(ctx, nil, dests, flags, fn, false)
}

// Verify compares src with every region of dests (1 to MaxRegions, each as
// long as src) and writes nothing. It runs as a copy does, through the same
// buffers, throttle, cancellation and progress: chunks of half the sub-job
// size (a chunk's buffer holds the source and one destination's data),
// SplitCount at a time, in ascending order; each chunk's source is read
// once and each destination read and compared in turn.
//
// The job fails when a destination differs: bit i of writeErr is set, and
// the *JobError's Writes[i] wraps ErrMismatch (or the read error of
// destination i), WriteRanges[i] holds the destination byte ranges that
// differ or could not be read (from the first to the last differing byte
// of each chunk, so a range may include equal bytes, never the reverse),
// and FirstDiff[i] the lowest differing byte. A difference never stops
// the job; a read error does, unless flags has IgnoreError (the only flag
// Verify takes). Completed is the prefix compared. A job stopped by its
// context has Canceled set: the regions past Completed were not compared,
// so such a job must never be taken to say the copies are identical.
func (c *Client) Verify(ctx context.Context, src Region, dests []Region, flags Flags, fn Callback) (*Job, error) {
	if err := c.validateVerify(&src, dests, flags); err != nil {
		return nil, err
	}
	return c.submit(ctx, &src, dests, flags, fn, true)
}

// VerifyZero checks that every region of dests reads as zeroes, as Verify
// does against a source of zeroes. Its chunks are the sub-job size.
func (c *Client) VerifyZero(ctx context.Context, dests []Region, flags Flags, fn Callback) (*Job, error) {
	if err := c.validateVerify(nil, dests, flags); err != nil {
		return nil, err
	}
	return c.submit(ctx, nil, dests, flags, fn, true)
}

// validateVerify checks a Verify or VerifyZero job: as a copy, with no flag
// but IgnoreError, and chunks aligned for every device.
func (c *Client) validateVerify(src *Region, dests []Region, flags Flags) error {
	if flags&^IgnoreError != 0 {
		return fmt.Errorf("%w: Verify takes only IgnoreError, got %#x", ErrBadFlags, uint(flags))
	}
	if err := c.validate(src, dests, flags); err != nil {
		return err
	}
	chunk := c.verifyChunk(src == nil)
	check := func(r Region) error {
		if a := int64(device.LimitsOf(r.Dev).OffsetAlign); a > 1 && chunk%a != 0 {
			return fmt.Errorf("%w: Verify compares in chunks of %d bytes (half the sub-job size), not a multiple of the %d bytes %s needs: use a larger SubJobSize",
				ErrAlignment, chunk, a, device.Name(r.Dev))
		}
		return nil
	}
	if src != nil {
		if err := check(*src); err != nil {
			return err
		}
	}
	for _, r := range dests {
		if err := check(r); err != nil {
			return err
		}
	}
	return nil
}

// verifyChunk returns a Verify job's chunk size: half the sub-job size, so
// that one buffer holds a chunk of the source and one of a destination, or
// the sub-job size for VerifyZero, which compares with zeroes.
func (c *Client) verifyChunk(zero bool) int64 {
	if zero {
		return c.subJob
	}
	return max(c.subJob/2/4096*4096, min(c.subJob/2, 4096))
}

// allCopiers reports whether every destination can copy ranges natively.
func allCopiers(dests []Region) bool {
	for _, d := range dests {
		if _, ok := d.Dev.(device.RangeCopier); !ok {
			return false
		}
	}
	return true
}

// bufLen returns the buffer a chunk of n bytes needs: twice n for Verify
// (source and destination), else n.
func (t *Job) bufLen(n int64) int64 {
	if t.verify && !t.zero {
		return 2 * n
	}
	return n
}

func (c *Client) submit(ctx context.Context, src *Region, dests []Region, flags Flags, fn Callback, verify bool) (*Job, error) {
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
		if l.Zoned == device.ZoneHostManaged && !verify {
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
	t.verify = verify
	// Offload is for jobs whose chunks are independent: a WriteSeq chunk
	// falling back to a buffer behind later ones could wait for a buffer
	// they hold while they wait for its write.
	t.offload.Store(src != nil && !verify && !c.opts.NoCopyOffload &&
		flags&(DetectZeroes|SkipZeroes|WriteSeq) == 0 && allCopiers(dests))
	t.mu.failedAt, t.mu.lastQueued = -1, -1
	for i := range t.mu.firstDiff {
		t.mu.firstDiff[i] = -1
	}
	t.seqStop.Store(math.MaxInt64)
	if ctx.Done() != nil {
		t.stopCtx = context.AfterFunc(ctx, c.wake)
	}

	t.chunk = c.subJob
	if verify {
		t.chunk = c.verifyChunk(t.zero)
	} else if t.zero && t.native && c.throttle == nil && flags&WriteSeq == 0 {
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
		// The cursor moves past the one chunk as nextChunk moves it
		// for a split job, so that Completed counts it unless it
		// failed (a Verify chunk that differs was compared whole).
		t.mu.next = t.length
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
