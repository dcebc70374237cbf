package clone

import (
	"context"
	"time"

	"github.com/kcopyd/kcopyd/device"
)

// Crash safety rests on one ordering, kept by every path that marks a
// region hydrated and by every commit:
//
//  1. A region's bit is set in memory only after its data is on DEST:
//     after the engine's copy completed (hydration), or after the client's
//     write to the whole region completed. Until then reads of the region
//     still go to SOURCE, and the region is locked against other writers.
//  2. A commit first takes a snapshot of the in-memory bitmap (under mu),
//     then flushes DEST, then writes the snapshot to the metadata slot not
//     holding the newest generation and flushes the metadata device. Every
//     bit in the snapshot was set after its data write completed (1), and
//     that write completed before the DEST flush began, so the flush made
//     it durable before the bit can be durable. A crash before the
//     metadata flush completes leaves the other slot, the previous commit,
//     intact; the torn slot fails its CRC.
//  3. Flush commits (2) unless a commit that started after Flush was
//     called has succeeded. A client write that completed before Flush was
//     called either went to a hydrated region (the DEST flush covers it)
//     or set its region's bit before it returned (1), so the snapshot holds
//     the bit. Either way the write survives a crash once Flush returns.
//
// Bits set after a snapshot belong to the next commit, which happens at
// the next Flush or within CommitInterval. A region whose bit is lost in a
// crash reads from SOURCE again and is hydrated again: only writes that no
// Flush covered are lost, as on a disk with a volatile write cache.

// Flush implements device.Flusher: it makes every write that completed
// before the call durable, with the metadata that says where it is (see
// the ordering above). Concurrent Flush calls share commits. On error the
// metadata keeps the previous commit and the next Flush or periodic commit
// tries again.
func (c *Clone) Flush() error {
	if err := c.begin(); err != nil {
		return c.ioError(device.OpFlush, 0, 0, err)
	}
	defer c.end()
	c.mu.Lock()
	ticket := c.mu.started
	c.mu.Unlock()
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	if c.committed.Load() > ticket {
		return nil // a commit whose snapshot was taken after this call began
	}
	return c.commitLocked()
}

// commit runs one commit.
func (c *Clone) commit() error {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	return c.commitLocked()
}

// commitLocked snapshots the bitmap, flushes DEST and writes the metadata,
// in that order. commitMu is held.
func (c *Clone) commitLocked() error {
	c.mu.Lock()
	c.mu.started++
	seq := c.mu.started
	changed := c.mu.changed
	slot := 1 - c.meta.slot
	dirty := c.mu.dirty[slot]
	count := c.mu.count
	if changed {
		c.meta.encode(c.mu.bits)
		c.mu.dirty[slot] = newBitmap(int64(len(dirty)) * 64)
		c.mu.changed = false
	}
	c.mu.Unlock()

	err := flush(c.dst)
	if err == nil && changed {
		err = c.meta.write(dirty, count)
	}
	if err != nil {
		c.mu.Lock()
		if changed {
			for i, w := range dirty {
				c.mu.dirty[slot][i] |= w
			}
			c.mu.changed = true
		}
		c.mu.lastErr = err
		c.mu.Unlock()
		return err
	}
	c.committed.Store(seq)
	if changed && count == c.regions {
		c.markHydrated()
	}
	return nil
}

// committer commits every CommitInterval when bits changed, and samples
// the copy rate.
func (c *Clone) committer(ctx context.Context) {
	defer c.wg.Done()
	t := time.NewTicker(c.opts.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.mu.Lock()
			c.sampleLocked(now)
			changed := c.mu.changed
			c.mu.Unlock()
			if changed {
				c.commit() // an error is kept in lastErr and retried
			}
		}
	}
}

// setHydratedLocked marks regions [lo, hi) hydrated. mu is held, and the
// data of every region in the range is on DEST (or was discarded).
func (c *Clone) setHydratedLocked(lo, hi int64) {
	for r := lo; r < hi; r++ {
		if !c.mu.bits.set(r) {
			continue
		}
		c.mu.count++
		c.mu.changed = true
		p := r / regionsPerPage
		c.mu.dirty[0].set(p)
		c.mu.dirty[1].set(p)
		if c.mu.failed.clear(r) {
			c.mu.nfailed--
		}
	}
}

func (c *Clone) setHydrated(lo, hi int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setHydratedLocked(lo, hi)
}

// rangeLock holds regions [lo, hi) against other writers and hydration.
type rangeLock struct {
	lo, hi int64
	done   chan struct{} // closed on release
}

// overlapLocked returns a lock overlapping [lo, hi), or nil. mu is held.
func (c *Clone) overlapLocked(lo, hi int64) *rangeLock {
	for _, l := range c.mu.locks {
		if l.lo < hi && lo < l.hi {
			return l
		}
	}
	return nil
}

// lockRegions locks [lo, hi), waiting for overlapping locks to be
// released. Locks are taken whole, never piecemeal, so waiting cannot
// deadlock.
func (c *Clone) lockRegions(lo, hi int64) *rangeLock {
	for {
		c.mu.Lock()
		l := c.overlapLocked(lo, hi)
		if l == nil {
			l = c.addLockLocked(lo, hi)
			c.mu.Unlock()
			return l
		}
		c.mu.Unlock()
		if lockWaitHook != nil {
			lockWaitHook(lo, hi)
		}
		<-l.done
	}
}

// lockWaitHook, when set by a test before any clone is opened, is called
// when a request starts waiting for a region lock.
var lockWaitHook func(lo, hi int64)

func (c *Clone) addLockLocked(lo, hi int64) *rangeLock {
	l := &rangeLock{lo: lo, hi: hi, done: make(chan struct{})}
	c.mu.locks = append(c.mu.locks, l)
	return l
}

// unlock releases l and wakes background hydration.
func (c *Clone) unlock(l *rangeLock) {
	c.mu.Lock()
	for i, x := range c.mu.locks {
		if x == l {
			c.mu.locks = append(c.mu.locks[:i], c.mu.locks[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
	close(l.done)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}
