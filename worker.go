package kcopyd

// The worker's state machine, in one file. A chunk moves through the
// client's four lists (spec §2.1):
//
//	submit ─► nextChunk ─► pages ─(buffer)─► io ─(read)─► ioDone ─► io ─(write)─► ioDone ─► complete ─► runComplete
//	                         ▲                                                                            │
//	                         └───────────────────── nextChunk (the sub-job's next chunk) ◄────────────────┘
//
// Zeroings skip pages (they need no buffer); prepared callbacks enter at
// callbacks and join complete once per pass. Only the worker goroutine runs
// pass, runPages, runIO and runComplete; I/O goroutines run ioDone, which
// only records, requeues and wakes. nextChunk runs on the submitter for a
// job's first chunks and on the worker after that, under the job's lock.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"time"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/internal/dmio"
	"github.com/kcopyd/kcopyd/internal/invariants"
)

// wake asks the worker for a pass. It never blocks; wakes coalesce, and a
// wake during a pass yields one more pass.
func (c *Client) wake() {
	select {
	case c.wakec <- struct{}{}:
	default:
	}
}

// push appends j to l and wakes the worker.
func (c *Client) push(l *jobList, j *job) {
	c.mu.Lock()
	l.pushBack(j)
	c.mu.Unlock()
	c.wake()
}

func (c *Client) worker() {
	defer close(c.exited)
	for {
		select {
		case <-c.wakec:
			c.pass()
		case <-c.stopc:
			return
		}
	}
}

// pass runs the lists in the kernel's order (spec §2.2): callbacks join the
// complete list once per pass; completions free buffers, so jobs waiting
// for buffers are served next, in order; then I/O is issued.
func (c *Client) pass() {
	c.mu.Lock()
	c.mu.passStarted++
	c.mu.complete.spliceBack(&c.mu.callbacks)
	c.mu.Unlock()

	for {
		c.mu.Lock()
		j := c.mu.complete.popFront()
		c.mu.Unlock()
		if j == nil {
			break
		}
		c.runComplete(j)
	}
	for {
		c.mu.Lock()
		j := c.mu.pages.popFront()
		c.mu.Unlock()
		if j == nil {
			break
		}
		if !c.runPages(j) {
			// No buffers: back to the head, and no overtaking (§2.5).
			c.mu.Lock()
			c.mu.pages.pushFront(j)
			c.mu.Unlock()
			break
		}
	}
	c.releaseDelayed()
	for {
		c.mu.Lock()
		j := c.popIO()
		c.mu.Unlock()
		if j == nil {
			break
		}
		c.runIO(j)
	}

	c.mu.Lock()
	c.mu.passDone++
	c.mu.passCond.Broadcast()
	c.mu.Unlock()
}

// delay charges j's bytes to the Throttle's byte rate and, when they are
// over it, queues j on the delayed list until they are due and returns
// true; the worker goes on meanwhile. A chunk charged while others wait
// queues behind them even if it is due, so that chunks keep the order in
// which they were charged (a job's chunks are issued in ascending order).
func (c *Client) delay(th *Throttle, j *job) bool {
	due, cost, ok := th.reserveBytes(j.n)
	j.charged, j.cost = true, cost
	c.mu.Lock()
	defer c.mu.Unlock()
	switch tail := c.mu.delayed.tail; {
	case tail == nil && (!ok || due <= th.now()):
		return false
	case tail != nil && !ok:
		// The rate was turned off while chunks wait: they are
		// released at once (releaseDelayed); keep behind them.
		due = tail.due
	case tail != nil:
		due = max(due, tail.due)
	}
	j.due = due
	c.mu.delayed.pushBack(j)
	if c.mu.delayStop == nil {
		c.armDelayLocked(th)
	}
	return true
}

// armDelayLocked arms the timer that wakes the worker when the head of the
// delayed list is due. Called with c.mu held and no timer armed.
func (c *Client) armDelayLocked(th *Throttle) {
	if h := c.mu.delayed.head; h != nil {
		c.mu.delayStop = th.afterFunc(h.due-th.now(), func() {
			c.mu.Lock()
			c.mu.delayStop = nil
			c.mu.Unlock()
			c.wake()
		})
	}
}

// releaseDelayed moves the delayed chunks that are due to the front of the
// io list, in order, and drops those whose context is done (giving their
// bytes back to the rate); then it arms the timer for the next one.
func (c *Client) releaseDelayed() {
	th := c.throttle
	if th == nil {
		return
	}
	var due, dropped jobList
	c.mu.Lock()
	head := c.mu.delayed.head
	now := th.now()
	if th.Rate() == 0 {
		now = math.MaxInt64 // the rate was turned off: all are due
	}
	var prev *job
	for j := c.mu.delayed.head; j != nil; {
		next := j.next
		switch {
		case j.top.ctx.Err() != nil:
			c.mu.delayed.remove(prev, j)
			th.refund(j.cost)
			dropped.pushBack(j)
		case j.due <= now && prev == nil:
			c.mu.delayed.remove(nil, j)
			due.pushBack(j)
		default:
			prev = j
		}
		j = next
	}
	due.spliceBack(&c.mu.io)
	c.mu.io = due
	// Re-arm only for a new head: the timer armed for the head still
	// there is right.
	if c.mu.delayed.head != head && c.mu.delayStop != nil && c.mu.delayStop() {
		c.mu.delayStop = nil
	}
	if c.mu.delayStop == nil {
		c.armDelayLocked(th)
	}
	c.mu.Unlock()
	for j := dropped.popFront(); j != nil; j = dropped.popFront() {
		c.drop(j) // nothing issued yet for this chunk
	}
}

// popIO takes the first job of the io list that may be issued now: any
// read, any write of a job without WriteSeq, and a WriteSeq write only when
// it is the next in order for its job, or when a chunk before it will never
// be written (then runIO drops it rather than let it wait forever: the
// kernel hazard of spec §4.5). Called with c.mu held.
func (c *Client) popIO() *job {
	var prev *job
	for j := c.mu.io.head; j != nil; prev, j = j, j.next {
		if j.op == opRead || j.top.flags&WriteSeq == 0 ||
			j.rel == j.top.nextWrite.Load() || j.rel > j.top.seqStop.Load() {
			c.mu.io.remove(prev, j)
			return j
		}
	}
	return nil
}

// call runs a callback on the worker. A callback that panics is a bug in
// the caller's code, but it must not take the engine down with it half way
// through a pass (buffers out, jobs unfinished, Close hanging): the panic
// is recovered, the job still counts as done, and the first panic is
// returned by Close as a *CallbackPanicError with its stack.
func (c *Client) call(fn func()) {
	defer func() {
		if v := recover(); v != nil {
			err := &CallbackPanicError{Value: v, Stack: debug.Stack()}
			c.mu.Lock()
			if c.mu.panicked == nil {
				c.mu.panicked = err
			}
			c.mu.Unlock()
		}
	}()
	fn()
}

// jobList is an intrusive FIFO of jobs.
type jobList struct{ head, tail *job }

func (l *jobList) pushBack(j *job) {
	j.next = nil
	if l.tail == nil {
		l.head = j
	} else {
		l.tail.next = j
	}
	l.tail = j
}

func (l *jobList) pushFront(j *job) {
	j.next = l.head
	l.head = j
	if l.tail == nil {
		l.tail = j
	}
}

func (l *jobList) popFront() *job {
	j := l.head
	if j != nil {
		l.remove(nil, j)
	}
	return j
}

// remove unlinks j, whose predecessor is prev (nil for the head).
func (l *jobList) remove(prev, j *job) {
	if prev == nil {
		l.head = j.next
	} else {
		prev.next = j.next
	}
	if l.tail == j {
		l.tail = prev
	}
	j.next = nil
}

// spliceBack moves all of o to the end of l.
func (l *jobList) spliceBack(o *jobList) {
	if o.head == nil {
		return
	}
	if l.tail == nil {
		l.head = o.head
	} else {
		l.tail.next = o.head
	}
	l.tail = o.tail
	o.head, o.tail = nil, nil
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
	opRead    op = iota // read the source chunk
	opWrite             // write the chunk to every destination
	opZero              // zero the chunk on every destination
	opCheck             // Verify: read destination k and compare
	opOffload           // copy the chunk to every destination with device.RangeCopier
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
	differ   [MaxRegions]Range // Verify: differing bytes, relative to the chunk
	k        int               // Verify: the destination being checked
	redo     bool              // an offloaded chunk copied again through a buffer

	// Byte rate: charged is set once the chunk's bytes were taken from
	// the Throttle, cost is what they cost and due when they may go.
	charged   bool
	cost, due time.Duration

	req dmio.Request

	// Prepared callbacks.
	cb     Callback
	cbRead bool
	cbMask uint64
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
	j.differ, j.k, j.redo = [MaxRegions]Range{}, 0, false
	j.charged = false
	switch {
	case t.verify && t.zero:
		j.op = opCheck
	case t.zero:
		j.op = opZero
	case t.offload.Load():
		j.op = opOffload
	default:
		j.op = opRead
	}
	if j.req.Notify == nil {
		j.req.Notify = j.ioDone
	}
}

// dispatch queues a chunk: zeroings and offloaded copies need no buffers
// (§2.4).
func (c *Client) dispatch(j *job) {
	if j.op == opZero || j.op == opOffload {
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
	b, ok := c.pool.Get(int(j.top.bufLen(j.n)))
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
		if j.first() && !j.charged && c.delay(th, j) {
			return
		}
		th.onIssue()
	}
	r := &j.req
	switch j.op {
	case opRead:
		r.Op, r.N, r.Buf, r.Salvage = dmio.OpRead, 1, j.buf, t.flags&IgnoreError != 0
		r.Regions[0] = dmio.Region{Dev: t.src.Dev, Off: t.src.Off + j.rel, Len: j.n}
	case opOffload:
		r.Op, r.N, r.Buf = dmio.OpCopyRange, t.ndest, nil
		r.Src = dmio.Region{Dev: t.src.Dev, Off: t.src.Off + j.rel, Len: j.n}
		for i := range t.ndest {
			d := t.dests[i]
			r.Regions[i] = dmio.Region{Dev: d.Dev, Off: d.Off + j.rel, Len: j.n}
		}
	case opCheck:
		r.Op, r.N, r.Salvage = dmio.OpRead, 1, false
		r.Buf = j.buf[t.bufLen(j.n)-j.n:][:j.n]
		d := t.dests[j.k]
		r.Regions[0] = dmio.Region{Dev: d.Dev, Off: d.Off + j.rel, Len: j.n}
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

// first reports whether j's next I/O is its chunk's first: the source
// read or offloaded copy, or the first and only step of a Zero or
// VerifyZero chunk. The byte rate is charged there, once per chunk.
func (j *job) first() bool {
	t := j.top
	if j.redo {
		return false
	}
	return j.op == opRead || j.op == opOffload || (t.zero && (j.op == opZero || (j.op == opCheck && j.k == 0)))
}

// checkIssue panics, when built with the invariants tag, if a chunk's
// first I/O (its read, or a Zero job's zeroing) is issued below one issued
// before it, or a WriteSeq write out of turn. Called on the worker.
func (t *Job) checkIssue(j *job) {
	switch {
	case j.first():
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
		} else if t.verify {
			j.op = opCheck
			c.push(&c.mu.io, j)
			return
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
	if j.op == opCheck {
		j.checked(r)
		return
	}
	if j.op == opOffload {
		j.offloaded(r)
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

// offloaded completes a chunk copied with device.RangeCopier. When a
// destination refused, the job stops offloading; when any destination
// failed, the chunk is copied again through a buffer, which tells read
// errors from write errors (and salvages, with IgnoreError) exactly as
// for any chunk. Rewriting the destinations that did succeed is harmless.
// It runs on an I/O goroutine.
func (j *job) offloaded(r *dmio.Request) {
	t := j.top
	for i := range t.ndest {
		if err := r.Errs[i]; err != nil {
			if errors.Is(err, device.ErrNotSupported) {
				t.offload.Store(false)
			}
			j.op, j.redo = opRead, true
			t.c.push(&t.c.mu.pages, j)
			return
		}
	}
	if t.flags&WriteSeq != 0 {
		t.nextWrite.Store(j.rel + j.n)
	}
	t.c.push(&t.c.mu.complete, j)
}

// checked records the comparison of destination j.k with the source (or
// zeroes) and moves on to the next destination, or completes the chunk.
// It runs on an I/O goroutine.
func (j *job) checked(r *dmio.Request) {
	t := j.top
	if err := r.Errs[0]; err != nil {
		j.writeErr[j.k] = err
		if t.flags&IgnoreError == 0 {
			t.stopped.Store(true)
		}
	} else {
		var want []byte // nil: zeroes
		if !t.zero {
			want = j.buf[:j.n]
		}
		j.differ[j.k] = diffRange(want, r.Buf)
	}
	j.k++
	if j.k < t.ndest && (j.writeErr[j.k-1] == nil || t.flags&IgnoreError != 0) {
		t.c.push(&t.c.mu.io, j)
		return
	}
	t.c.push(&t.c.mu.complete, j)
}

// diffRange returns the range from the first to the last byte in which got
// differs from want (nil: zeroes), or an empty Range when they are equal.
func diffRange(want, got []byte) Range {
	at := func(i int) byte {
		if want == nil {
			return 0
		}
		return want[i]
	}
	first := -1
	for off := 0; off < len(got) && first < 0; {
		n := min(len(got)-off, 1<<20)
		w := dmio.Zeroes(n)
		if want != nil {
			w = want[off : off+n]
		}
		if !bytes.Equal(w, got[off:off+n]) {
			for i := off; first < 0; i++ {
				if got[i] != at(i) {
					first = i
				}
			}
		}
		off += n
	}
	if first < 0 {
		return Range{}
	}
	last := len(got) - 1
	for got[last] == at(last) {
		last--
	}
	return Range{Off: int64(first), Len: int64(last - first + 1)}
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
		if d := j.differ[i]; d.Len > 0 {
			off := t.dests[i].Off + j.rel + d.Off
			if t.mu.writes[i] == nil {
				t.mu.writes[i] = fmt.Errorf("%w: destination %d (%s)", ErrMismatch, i, device.Name(t.dests[i].Dev))
			}
			if t.mu.firstDiff[i] < 0 || off < t.mu.firstDiff[i] {
				t.mu.firstDiff[i] = off
			}
			t.mu.mask |= 1 << i
			t.mu.wranges[i].add(Range{Off: off, Len: d.Len})
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
		if t.verify {
			err.FirstDiff = append([]int64(nil), t.mu.firstDiff[:t.ndest]...)
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
