// Package bufpool is the engine's buffer pool: page-aligned buffers in
// size classes, allocated lazily up to a byte budget and then reused for
// the life of the pool.
//
// It differs from the kernel's page pool (spec §6) in two ways, both on
// purpose. Buffers are contiguous, so one chunk is one read and one write
// per device rather than a scatter list. And memory above the reserve is
// kept rather than freed: on the machines we target, memory handed back to
// the host costs far more to fault in again than to hold (about 1.5 s of
// system time per GiB). Free buffers of one class are given up only when a
// request of another class could not be served otherwise.
//
// The classes are powers of two times Align up to the largest buffer, whose
// class is exactly the largest buffer's size rounded up to Align (so a
// 12 KiB largest buffer costs 12 KiB, not 16). The reserve keeps the
// kernel's guarantee: one buffer of the largest class is allocated when the
// pool is made, and Get serves a request whenever the bytes handed out and
// not returned leave room for it under the budget: from a free buffer of
// its class, a new allocation, a larger free buffer, or, as a last resort,
// by dropping free buffers of smaller classes to make room. So whatever was
// asked before, a request that fits the budget is served, and with
// first-come-first-served waiting in the caller a job alone always makes
// progress.
package bufpool

import (
	"fmt"
	"math/bits"
	"sync"
	"unsafe"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/internal/invariants"
)

// Align is the alignment of every buffer's address and size class. It is
// the largest memory alignment O_DIRECT asks for on Linux.
const Align = 4096

// Pool hands out aligned buffers. It is safe for concurrent use.
type Pool struct {
	sizes []int // sizes[k]: the bytes of a class-k buffer, ascending
	limit int64 // budget in bytes

	mu struct {
		sync.Mutex
		free      [][][]byte // free[k]: free buffers of sizes[k] bytes
		freeBytes int64      // bytes in free lists
		allocated int64      // bytes allocated, in use or free
		inUse     int64      // bytes handed out and not yet returned
		peakInUse int64
		evicted   int64 // bytes of free buffers dropped to make room
	}
}

// New returns a pool whose largest buffer is maxBuf bytes (rounded up to a
// multiple of Align) and which never holds more than limit bytes; limit
// must be at least one largest buffer. It allocates one buffer of the
// largest size at once: the reserve.
func New(maxBuf int, limit int64) (*Pool, error) {
	if maxBuf <= 0 {
		return nil, fmt.Errorf("bufpool: buffer size %d must be positive", maxBuf)
	}
	top := (maxBuf + Align - 1) / Align * Align
	if limit < int64(top) {
		return nil, fmt.Errorf("bufpool: budget of %d bytes cannot hold one buffer of %d bytes", limit, top)
	}
	p := &Pool{limit: limit}
	for k := 0; Align<<k < top; k++ {
		p.sizes = append(p.sizes, Align<<k)
	}
	p.sizes = append(p.sizes, top)
	p.mu.free = make([][][]byte, len(p.sizes))
	p.mu.free[len(p.sizes)-1] = append(p.mu.free[len(p.sizes)-1], Alloc(top))
	p.mu.allocated = int64(top)
	p.mu.freeBytes = int64(top)
	return p, nil
}

// class returns the smallest k with Align<<k >= n, the power-of-two class
// of n before capping at the largest class.
func class(n int) int {
	if n <= Align {
		return 0
	}
	return bits.Len(uint((n - 1) / Align))
}

// classOf returns the class that serves n bytes.
func (p *Pool) classOf(n int) int { return min(class(n), len(p.sizes)-1) }

// Alloc returns n bytes whose address is a multiple of Align, outside any
// pool: for buffers that live as long as the program, such as a shared zero
// buffer, and for the few callers that need one aligned buffer.
func Alloc(n int) []byte { return device.AlignedBuf(n, Align) }

// MaxSize returns the size of the largest buffer Get can return.
func (p *Pool) MaxSize() int { return p.sizes[len(p.sizes)-1] }

// Get returns a buffer of exactly n bytes whose address is aligned to
// Align, or nil and false when the bytes handed out leave no room for it
// under the budget: the caller waits for a Put and tries again. Get never
// blocks. It panics if n is not in 1..MaxSize().
func (p *Pool) Get(n int) ([]byte, bool) {
	if n <= 0 || n > p.MaxSize() {
		panic(fmt.Sprintf("bufpool: Get(%d) outside 1..%d", n, p.MaxSize()))
	}
	k := p.classOf(n)
	size := int64(p.sizes[k])
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.takeLocked(k)
	if b == nil && p.mu.allocated+size > p.limit && p.mu.inUse+size <= p.limit {
		// A larger free buffer serves without allocating; failing that,
		// free buffers of smaller classes make room.
		for j := k + 1; j < len(p.sizes) && b == nil; j++ {
			b = p.takeLocked(j)
		}
		for j := 0; j < k && p.mu.allocated+size > p.limit; j++ {
			p.evictLocked(j)
		}
	}
	if b == nil {
		if p.mu.allocated+size > p.limit {
			return nil, false
		}
		b = Alloc(int(size))
		p.mu.allocated += size
	}
	p.mu.inUse += int64(cap(b))
	p.mu.peakInUse = max(p.mu.peakInUse, p.mu.inUse)
	p.checkLocked()
	return b[:n], true
}

// takeLocked pops a free buffer of class k, or returns nil.
func (p *Pool) takeLocked(k int) []byte {
	fl := p.mu.free[k]
	if len(fl) == 0 {
		return nil
	}
	b := fl[len(fl)-1]
	fl[len(fl)-1] = nil
	p.mu.free[k] = fl[:len(fl)-1]
	p.mu.freeBytes -= int64(cap(b))
	return b
}

// evictLocked drops the free buffers of class k, for the garbage collector.
func (p *Pool) evictLocked(k int) {
	for p.takeLocked(k) != nil {
		p.mu.allocated -= int64(p.sizes[k])
		p.mu.evicted += int64(p.sizes[k])
	}
}

// Put returns a buffer obtained from Get. Putting anything else, or the
// same buffer twice while it is free, is a bug the pool may not detect
// (built with the invariants tag it detects the second).
func (p *Pool) Put(b []byte) {
	c := cap(b)
	k := p.classOf(c)
	if c != p.sizes[k] {
		panic(fmt.Sprintf("bufpool: Put of a buffer of capacity %d that no Get returned", c))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if invariants.Enabled {
		for _, f := range p.mu.free[k] {
			if unsafe.SliceData(f) == unsafe.SliceData(b) {
				panic("bufpool: invariant: buffer put twice")
			}
		}
	}
	p.mu.free[k] = append(p.mu.free[k], b[:c])
	p.mu.freeBytes += int64(c)
	p.mu.inUse -= int64(c)
	p.checkLocked()
}

// checkLocked verifies the pool's accounting when built with the
// invariants tag.
func (p *Pool) checkLocked() {
	if !invariants.Enabled {
		return
	}
	if p.mu.inUse < 0 || p.mu.allocated > p.limit || p.mu.inUse+p.mu.freeBytes != p.mu.allocated {
		panic(fmt.Sprintf("bufpool: invariant: in use %d + free %d != allocated %d (limit %d)",
			p.mu.inUse, p.mu.freeBytes, p.mu.allocated, p.limit))
	}
}

// Stats reports the pool's memory in bytes.
type Stats struct {
	Allocated int64 // held by the pool, in use or free; never above the budget
	InUse     int64 // handed out now
	PeakInUse int64 // the most ever handed out at once
	Limit     int64 // the budget
	Evicted   int64 // free buffers dropped so that another class could be served
}

// Stats returns the pool's current figures.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Allocated: p.mu.allocated, InUse: p.mu.inUse, PeakInUse: p.mu.peakInUse, Limit: p.limit, Evicted: p.mu.evicted}
}
