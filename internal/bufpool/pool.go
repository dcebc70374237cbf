// Package bufpool is the engine's buffer pool: page-aligned buffers in
// power-of-two size classes, allocated lazily up to a byte budget and then
// reused for the life of the pool.
//
// It differs from the kernel's page pool (spec §6) in two ways, both on
// purpose. Buffers are contiguous, so one chunk is one read and one write
// per device rather than a scatter list. And memory above the reserve is
// kept rather than freed: on the machines we target, memory handed back to
// the host costs far more to fault in again than to hold (about 1.5 s of
// system time per GiB).
//
// The reserve keeps the kernel's guarantee: one buffer of the largest class
// is allocated when the pool is made and is always returned to the pool, so
// when nothing is in use a request of any size up to the largest class
// succeeds. Together with first-come-first-served waiting in the caller this
// means a job alone always makes progress.
package bufpool

import (
	"fmt"
	"math/bits"
	"sync"
	"unsafe"
)

// Align is the alignment of every buffer's address and size class. It is
// the largest memory alignment O_DIRECT asks for on Linux.
const Align = 4096

// Pool hands out aligned buffers. It is safe for concurrent use.
type Pool struct {
	maxClass int   // index of the largest class
	limit    int64 // budget in bytes

	mu struct {
		sync.Mutex
		free      [][][]byte // free[k]: buffers of Align<<k bytes
		allocated int64      // bytes allocated, in use or free
		inUse     int64      // bytes handed out and not yet returned
		peakInUse int64
	}
}

// New returns a pool whose largest buffer is maxBuf bytes (rounded up to a
// power of two times Align) and which never holds more than limit bytes. It
// allocates one buffer of the largest size at once: the reserve.
func New(maxBuf int, limit int64) (*Pool, error) {
	if maxBuf <= 0 {
		return nil, fmt.Errorf("bufpool: buffer size %d must be positive", maxBuf)
	}
	k := class(maxBuf)
	if limit < int64(Align)<<k {
		return nil, fmt.Errorf("bufpool: budget of %d bytes cannot hold one buffer of %d bytes", limit, int64(Align)<<k)
	}
	p := &Pool{maxClass: k, limit: limit}
	p.mu.free = make([][][]byte, k+1)
	p.mu.free[k] = append(p.mu.free[k], Alloc(Align<<k))
	p.mu.allocated = int64(Align) << k
	return p, nil
}

// class returns the smallest k with Align<<k >= n.
func class(n int) int {
	if n <= Align {
		return 0
	}
	return bits.Len(uint((n - 1) / Align))
}

// Alloc returns n bytes whose address is a multiple of Align, outside any
// pool: for buffers that live as long as the program, such as a shared zero
// buffer.
func Alloc(n int) []byte {
	b := make([]byte, n+Align)
	off := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) % Align); r != 0 {
		off = Align - r
	}
	return b[off : off+n : off+n]
}

// MaxSize returns the size of the largest buffer Get can return.
func (p *Pool) MaxSize() int { return Align << p.maxClass }

// Get returns a buffer of exactly n bytes whose address is aligned to
// Align, or nil and false when the budget is spent and no free buffer is
// large enough: the caller waits for a Put and tries again. Get never
// blocks. It panics if n is not in 1..MaxSize().
func (p *Pool) Get(n int) ([]byte, bool) {
	if n <= 0 || n > p.MaxSize() {
		panic(fmt.Sprintf("bufpool: Get(%d) outside 1..%d", n, p.MaxSize()))
	}
	k := class(n)
	p.mu.Lock()
	defer p.mu.Unlock()
	var b []byte
	if fl := p.mu.free[k]; len(fl) > 0 {
		b = fl[len(fl)-1]
		p.mu.free[k] = fl[:len(fl)-1]
	} else if size := int64(Align) << k; p.mu.allocated+size <= p.limit {
		b = Alloc(int(size))
		p.mu.allocated += size
	} else {
		// Borrow a larger free buffer rather than wait; Put returns it
		// to its own class by capacity.
		for j := k + 1; j <= p.maxClass && b == nil; j++ {
			if fl := p.mu.free[j]; len(fl) > 0 {
				b = fl[len(fl)-1]
				p.mu.free[j] = fl[:len(fl)-1]
			}
		}
		if b == nil {
			return nil, false
		}
	}
	p.mu.inUse += int64(cap(b))
	if p.mu.inUse > p.mu.peakInUse {
		p.mu.peakInUse = p.mu.inUse
	}
	return b[:n], true
}

// Put returns a buffer obtained from Get. Putting anything else, or the
// same buffer twice while it is free, is a bug the pool may not detect.
func (p *Pool) Put(b []byte) {
	c := cap(b)
	k := class(c)
	if c != Align<<k || k > p.maxClass {
		panic(fmt.Sprintf("bufpool: Put of a buffer of capacity %d that no Get returned", c))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.free[k] = append(p.mu.free[k], b[:c])
	p.mu.inUse -= int64(c)
}

// Stats reports the pool's memory in bytes.
type Stats struct {
	Allocated int64 // held by the pool, in use or free; never above the budget
	InUse     int64 // handed out now
	PeakInUse int64 // the most ever handed out at once
	Limit     int64 // the budget
}

// Stats returns the pool's current figures.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Allocated: p.mu.allocated, InUse: p.mu.inUse, PeakInUse: p.mu.peakInUse, Limit: p.limit}
}
