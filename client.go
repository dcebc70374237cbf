package kcopyd

import (
	"context"
	"fmt"
	"sync"

	"github.com/kcopyd/kcopyd/internal/bufpool"
	"github.com/kcopyd/kcopyd/internal/dmio"
)

// MaxRegions is the most destinations one job may have, as in the kernel
// (DM_KCOPYD_MAX_REGIONS).
const MaxRegions = dmio.MaxRegions

// DefaultSubJobSize is the default sub-job size in bytes: the kernel's
// default since Linux 5.3 (kcopyd_subjob_size_kb = 512).
const DefaultSubJobSize = 512 << 10

// SplitCount is the number of sub-jobs a large job is split into, each
// taking the next chunk when it finishes one (the kernel's SPLIT_COUNT).
const SplitCount = 8

const (
	minSubJobSize = 4 << 10
	maxSubJobSize = 64 << 20
)

// Options configure a Client. The zero value is valid: every field has a
// default.
type Options struct {
	// SubJobSize is the size in bytes of the chunks a large job is split
	// into, and so the most one read or write moves. It must be a
	// multiple of 4096 between 4 KiB and 64 MiB. Default 512 KiB. Larger
	// chunks mean fewer, larger requests (better on fast disks and
	// high-latency networks) and more memory: a split job holds up to
	// SplitCount chunks of buffer at once.
	SubJobSize int64

	// MaxMemory bounds the bytes of buffer the client holds. Buffers are
	// allocated as needed up to this bound and then reused until Close;
	// jobs that find no buffer wait, in order. It must be at least
	// SubJobSize (the reserve, allocated by NewClient so that one job can
	// always proceed). Default 2*SplitCount*SubJobSize (8 MiB).
	MaxMemory int64

	// Throttle, when not nil, limits the client's I/O; several clients may
	// share one Throttle as a group. Its sleeps stall the client's worker,
	// callbacks included, as in the kernel.
	Throttle *Throttle

	// IOWorkers is the number of goroutines issuing I/O, and so the most
	// device requests in flight (each destination of a write is one
	// request). Default 64: enough for a split job's 8 chunks each
	// written to 8 destinations.
	IOWorkers int

	// NoCopyOffload, when true, makes every copy pass through the
	// client's buffers. By default a Copy job without DetectZeroes,
	// SkipZeroes or WriteSeq whose destinations all implement device.RangeCopier
	// (files) copies each chunk with it (reflink or copy_file_range: the
	// bytes never reach user space) and falls back to buffers, for the
	// chunk and the rest of the job, when a destination refuses. Offloaded
	// chunks are still throttled and counted like any other.
	NoCopyOffload bool
}

const defaultIOWorkers = 64

// clone returns a copy of o with defaults filled in, or an error.
func (o *Options) clone() (Options, error) {
	var c Options
	if o != nil {
		c = *o
	}
	if c.SubJobSize == 0 {
		c.SubJobSize = DefaultSubJobSize
	}
	if c.SubJobSize < minSubJobSize || c.SubJobSize > maxSubJobSize || c.SubJobSize%4096 != 0 {
		return c, fmt.Errorf("kcopyd: sub-job size %d must be a multiple of 4096 between %d and %d bytes", c.SubJobSize, minSubJobSize, maxSubJobSize)
	}
	if c.MaxMemory == 0 {
		c.MaxMemory = 2 * SplitCount * c.SubJobSize
	}
	if c.MaxMemory < c.SubJobSize {
		return c, fmt.Errorf("kcopyd: MaxMemory %d is smaller than one sub-job (%d bytes)", c.MaxMemory, c.SubJobSize)
	}
	if c.IOWorkers == 0 {
		c.IOWorkers = defaultIOWorkers
	}
	if c.IOWorkers < 1 {
		return c, fmt.Errorf("kcopyd: IOWorkers %d must be positive", c.IOWorkers)
	}
	return c, nil
}

// Client runs copy and zero jobs. It owns one worker goroutine that runs
// the job lists and every callback, and a fixed set of I/O goroutines.
// Its methods are safe for concurrent use.
type Client struct {
	opts     Options
	subJob   int64
	pool     *bufpool.Pool
	io       *dmio.Engine
	throttle *Throttle

	wakec  chan struct{} // 1-buffered: wakes coalesce
	stopc  chan struct{} // closed to stop the worker
	exited chan struct{} // closed when the worker returns

	closeOnce sync.Once

	// mu guards the job lists and the counters below it. It is held only
	// for list operations, never across I/O or callbacks.
	mu struct {
		sync.Mutex
		callbacks, complete, pages, io jobList
		// delayed holds chunks over the Throttle's byte rate until
		// their due time, in the order they were charged; delayStop
		// cancels the timer armed for its head (nil when none is).
		delayed               jobList
		delayStop             func() bool
		outstanding           int           // accepted jobs and prepared handles not yet completed
		idle                  chan struct{} // closed when outstanding drops to 0
		closed                bool
		passStarted, passDone uint64
		passCond              sync.Cond
		panicked              error // the first callback panic, for Close
	}
}

// NewClient starts a client. It allocates the buffer reserve (one sub-job)
// and starts the worker and the I/O goroutines; it fails only on invalid
// options. opts may be nil; it is not retained or modified.
func NewClient(opts *Options) (*Client, error) {
	o, err := opts.clone()
	if err != nil {
		return nil, err
	}
	pool, err := bufpool.New(int(o.SubJobSize), o.MaxMemory)
	if err != nil {
		return nil, fmt.Errorf("kcopyd: %w", err)
	}
	c := &Client{
		opts:     o,
		subJob:   o.SubJobSize,
		pool:     pool,
		io:       dmio.New(o.IOWorkers),
		throttle: o.Throttle,
		wakec:    make(chan struct{}, 1),
		stopc:    make(chan struct{}),
		exited:   make(chan struct{}),
	}
	c.mu.passCond.L = &c.mu.Mutex
	c.mu.idle = make(chan struct{})
	close(c.mu.idle)
	go c.worker()
	return c, nil
}

// SubJobSize returns the client's sub-job size in bytes.
func (c *Client) SubJobSize() int64 { return c.subJob }

// Stats are a client's counters.
type Stats struct {
	Outstanding     int   // accepted jobs and prepared callbacks not yet completed
	BufferBytes     int64 // buffer memory held by the client; at most Options.MaxMemory
	PeakBufferBytes int64 // the most buffer memory in use at once
}

// Stats returns the client's current counters.
func (c *Client) Stats() Stats {
	ps := c.pool.Stats()
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Outstanding: c.mu.outstanding, BufferBytes: ps.Allocated, PeakBufferBytes: ps.PeakInUse}
}

// accept counts a new job or handle as outstanding, or fails if the client
// is closed.
func (c *Client) accept() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return ErrClosed
	}
	if c.mu.outstanding == 0 {
		c.mu.idle = make(chan struct{})
	}
	c.mu.outstanding++
	return nil
}

// release counts a job or handle as done, after its callback returned.
func (c *Client) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.outstanding--
	if c.mu.outstanding == 0 {
		close(c.mu.idle)
	}
}

// Flush waits until the worker has finished a pass that started after the
// call, like the kernel's dm_kcopyd_client_flush: callbacks already queued
// have run when it returns. It does not wait for I/O in flight; use Drain
// for that. It must not be called from a callback (it would wait for
// itself).
func (c *Client) Flush() {
	c.mu.Lock()
	target := c.mu.passStarted + 1
	c.mu.Unlock()
	c.wake()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.mu.passDone < target {
		select {
		case <-c.exited:
			return
		default:
		}
		c.mu.passCond.Wait()
	}
}

// Drain waits until every job accepted so far, and every prepared callback,
// has completed and its callback has returned. Jobs submitted meanwhile
// (from callbacks, say) are waited for too. It returns ctx.Err() if ctx is
// done first; the jobs go on. It must not be called from a callback.
func (c *Client) Drain(ctx context.Context) error {
	c.mu.Lock()
	idle := c.mu.idle
	c.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops accepting jobs, waits for every accepted job and every
// prepared callback to complete (a prepared handle that is never fired
// makes it wait forever, as in the kernel), then stops the client's
// goroutines. It returns nil, or a *CallbackPanicError when a callback
// panicked during the client's life (the panic was recovered on the worker
// and the client went on). It is safe to call more than once; later calls
// wait for the first and return its result. Calling it from a callback
// deadlocks.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.mu.closed = true
		c.mu.Unlock()
		_ = c.Drain(context.Background())
		close(c.stopc)
		<-c.exited
		c.io.Close()
		c.mu.Lock()
		c.mu.passCond.Broadcast()
		c.mu.Unlock()
		if s := c.pool.Stats(); s.InUse != 0 {
			panic(fmt.Sprintf("kcopyd: %d bytes of buffer still in use at Close", s.InUse))
		}
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.panicked
}
