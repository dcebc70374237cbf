package clone

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/kcopyd/kcopyd"
)

// hydrator copies unhydrated regions in ascending order, a batch of
// contiguous regions per engine job, through the throttled client. It
// skips regions that client requests hold (they hydrate them) and regions
// whose copy failed until RetryInterval has passed, then starts over from
// region 0 until every region is hydrated.
func (c *Clone) hydrator(ctx context.Context) {
	defer c.wg.Done()
	for cursor := int64(0); ctx.Err() == nil; {
		c.yield(ctx)
		r, n, l := c.nextBatch(cursor, time.Now())
		if l == nil {
			if cursor > 0 {
				cursor = 0 // a new pass
				continue
			}
			if c.allHydrated() {
				c.commit() // an error is kept in lastErr; Close commits again
				return
			}
			c.waitWork(ctx)
			continue
		}
		cursor = c.runBatch(ctx, r, n, l)
	}
}

// runBatch copies regions [r, r+n), locked by l, and returns where the
// scan goes on.
func (c *Clone) runBatch(ctx context.Context, r, n int64, l *rangeLock) int64 {
	defer c.unlock(l)
	job, err := c.copyRegions(ctx, c.bg, r, n)
	if err == nil {
		err = job.Wait(context.Background())
	}
	done := n
	if err != nil {
		done = 0
		var je *kcopyd.JobError
		if errors.As(err, &je) {
			done = min(je.Completed/c.rs, n)
		}
	}
	if done > 0 {
		c.copied(r, done, nil)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.busy -= n
	switch {
	case done == n:
		return r + n
	case ctx.Err() != nil:
		return r + done + 1
	case n-done > 1:
		// The failure may lie in any region after the copied prefix (an
		// engine chunk spans many regions, and its error all of them):
		// count it, mark no region failed, and copy the regions up to
		// the last failed byte one at a time, so that only a region
		// that fails alone waits for a retry.
		c.mu.failures++
		c.mu.lastErr = err
		c.mu.single = max(c.mu.single, min(r+n, failedEnd(err, c.shift)))
		return r + done
	}
	c.failLocked(r+done, err)
	return r + done + 1
}

// failedEnd returns the region after the last byte that err, a
// *kcopyd.JobError of a batch copied to the same offsets, reports failed;
// the largest int64 when it reports no range.
func failedEnd(err error, shift uint) int64 {
	var je *kcopyd.JobError
	if !errors.As(err, &je) {
		return math.MaxInt64
	}
	end := int64(-1)
	rs := je.ReadRanges
	for _, w := range je.WriteRanges {
		rs = append(rs[:len(rs):len(rs)], w...)
	}
	for _, x := range rs {
		end = max(end, x.Off+x.Len)
	}
	if end <= 0 {
		return math.MaxInt64
	}
	return (end-1)>>shift + 1
}

// nextBatch finds the first region at or after from that is unhydrated,
// unlocked and not waiting for a retry, extends it with the contiguous
// regions in the same state up to the batch size (a region being retried,
// or one below the single mark, is copied alone), and locks the batch. It returns a nil lock when there
// is none.
func (c *Clone) nextBatch(from int64, now time.Time) (r, n int64, l *rangeLock) {
	c.mu.Lock()
	defer c.mu.Unlock()
	retry := !now.Before(c.mu.retryAt)
	for r = c.mu.bits.nextClear(from, c.regions); r < c.regions; r = c.mu.bits.nextClear(r, c.regions) {
		if x := c.overlapLocked(r, r+1); x != nil {
			r = x.hi
			continue
		}
		if c.mu.failed.test(r) && !retry {
			r++
			continue
		}
		break
	}
	if r >= c.regions {
		return 0, 0, nil
	}
	n = 1
	if !c.mu.failed.test(r) && r >= c.mu.single {
		for limit := c.batchLimit(); n < limit && r+n < c.regions; n++ {
			x := r + n
			if c.mu.bits.test(x) || c.mu.failed.test(x) || c.overlapLocked(x, x+1) != nil {
				break
			}
		}
	}
	c.mu.busy += n
	return r, n, c.addLockLocked(r, r+n)
}

// batchLimit returns the most regions the next batch may hold: the batch
// size, and, under a byte rate, what the rate copies in a tenth of a
// second (at least one region), so that a client request waiting for a
// region of a throttled batch waits about that long, not for the whole
// batch at the throttled rate.
func (c *Clone) batchLimit() int64 {
	limit := c.batch.Load()
	if rate := c.opts.Throttle.Rate(); rate > 0 {
		limit = min(limit, max(1, rate/10/c.rs))
	}
	return limit
}

// failLocked records a failed copy of region r. mu is held.
func (c *Clone) failLocked(r int64, err error) {
	c.mu.failures++
	c.mu.lastErr = err
	c.mu.retryAt = time.Now().Add(c.opts.RetryInterval)
	if c.mu.failed.set(r) {
		c.mu.nfailed++
	}
}

func (c *Clone) allHydrated() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.count == c.regions
}

// waitWork waits until a region lock is released, failed regions are due
// for a retry, or ctx is done.
func (c *Clone) waitWork(ctx context.Context) {
	c.mu.Lock()
	d := time.Until(c.mu.retryAt)
	failed := c.mu.nfailed > 0
	c.mu.Unlock()
	var timer <-chan time.Time
	if failed {
		t := time.NewTimer(max(d, 0))
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ctx.Done():
	case <-c.wake:
	case <-timer:
	}
}

// yield waits, at most YieldTimeout, until no client request is in
// flight, as dm-clone pauses hydration while user I/O is in flight.
func (c *Clone) yield(ctx context.Context) {
	if c.opts.YieldTimeout < 0 {
		return
	}
	c.mu.Lock()
	idle, busy := c.mu.idle, c.mu.inflight > 0
	c.mu.Unlock()
	if !busy {
		return
	}
	t := time.NewTimer(c.opts.YieldTimeout)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	case <-ctx.Done():
	}
}
