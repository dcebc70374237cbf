// Package uring starts reads and writes on file descriptors with Linux's
// io_uring and reports their completion through a callback, so that a
// request in flight needs no goroutine, and no thread blocked in a system
// call, of its own.
//
// It is the engine's optional fast path for O_DIRECT I/O (issue 8): with a
// goroutine per request, every 1 MiB chunk cost about 17 context switches
// on a 2-core guest (goroutine hand-offs, threads parked and woken by the
// runtime when a blocking pread returns); with a ring the submitting
// goroutine makes one non-blocking io_uring_enter per request and one
// goroutine reaps every completion, woken through an eventfd by the Go
// netpoller rather than by a thread blocked in the kernel.
//
// A Ring is small on purpose: plain IORING_OP_READ and IORING_OP_WRITE,
// no registered buffers, no SQPOLL thread (whose CPU would not be charged
// to the process). Start refuses, rather than waits, when the ring is
// full, and the caller then does the I/O the ordinary way.
package uring

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Op is the kind of a request.
type Op uint8

// Request kinds, with the kernel's opcode numbers (IORING_OP_READ and
// IORING_OP_WRITE, Linux 5.6).
const (
	Read  Op = 22
	Write Op = 23
)

// Completer receives the result of a started request: the bytes
// transferred and, when the kernel returned an error, that error (a
// syscall.Errno). Complete runs on the ring's reaper goroutine; it must
// not block for long and must not call Ring.Close.
type Completer interface {
	Complete(n int, err error)
}

// ErrClosed is returned by a second Close.
var ErrClosed = errors.New("uring: ring closed")

// params is struct io_uring_params.
type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

// sqringOffsets is struct io_sqring_offsets.
type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

// cqringOffsets is struct io_cqring_offsets.
type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

// sqe is struct io_uring_sqe, as used here.
type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	rwFlags     uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFDIn  int32
	addr3       uint64
	pad2        uint64
}

// cqe is struct io_uring_cqe.
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

const (
	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	featSingleMmap = 1 << 0

	enterGetEvents = 1 << 0

	sqCQOverflow = 1 << 1 // IORING_SQ_CQ_OVERFLOW

	registerEventFD = 4
)

// slot is a request in flight: what the kernel writes to or reads from
// (held so the garbage collector keeps it) and whom to tell.
type slot struct {
	buf  []byte
	done Completer
	next int32 // free list
}

// Ring is one io_uring instance with a reaper goroutine. Its methods are
// safe for concurrent use.
type Ring struct {
	fd int

	sqRing, cqRing, sqeMem []byte // the mmapped areas (cqRing aliases sqRing with IORING_FEAT_SINGLE_MMAP)

	sqTail  *uint32 // written by us, read by the kernel
	sqHead  *uint32 // written by the kernel
	sqMask  uint32
	sqFlags *uint32 // IORING_SQ_CQ_OVERFLOW, set by the kernel
	sqes    []sqe

	cqHead *uint32 // written by us
	cqTail *uint32 // written by the kernel
	cqMask uint32
	cqes   []cqe

	ev     *os.File // eventfd the kernel signals on every completion; read through the netpoller
	reaped chan struct{}

	mu       sync.Mutex // guards the submission queue, slots, free, inflight and closed
	drained  sync.Cond  // signalled when inflight falls to 0 after Close began
	slots    []slot
	free     int32 // head of the free list, -1 when every slot is busy
	inflight int
	closed   bool
}

// New sets up a ring with room for entries requests in flight (rounded up
// to a power of two by the kernel). It fails with an error wrapping
// errors.ErrUnsupported where io_uring is not available (an old kernel,
// kernel.io_uring_disabled, a seccomp filter).
func New(entries uint32) (*Ring, error) {
	var p params
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		err := error(errno)
		if errno == unix.ENOSYS || errno == unix.EPERM || errno == unix.EACCES {
			err = fmt.Errorf("%w: %w", errors.ErrUnsupported, errno)
		}
		return nil, fmt.Errorf("io_uring_setup: %w", err)
	}
	r := &Ring{fd: int(fd), reaped: make(chan struct{})}
	r.drained.L = &r.mu
	if err := r.mmap(&p); err != nil {
		r.unmap()
		unix.Close(r.fd)
		return nil, err
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		r.unmap()
		unix.Close(r.fd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	e := int32(efd)
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerEventFD, uintptr(unsafe.Pointer(&e)), 1, 0, 0); errno != 0 {
		unix.Close(efd)
		r.unmap()
		unix.Close(r.fd)
		return nil, fmt.Errorf("io_uring_register eventfd: %w", errno)
	}
	// A non-blocking descriptor wrapped by os.NewFile is read through
	// the runtime's netpoller: the reaper parks as a goroutine, not as a
	// thread blocked in read.
	r.ev = os.NewFile(uintptr(efd), "io_uring eventfd")
	n := int(p.cqEntries)
	r.slots = make([]slot, n)
	for i := range r.slots {
		r.slots[i].next = int32(i + 1)
	}
	r.slots[n-1].next = -1
	go r.reap()
	return r, nil
}

// mmap maps the rings and the submission entries described by p.
func (r *Ring) mmap(p *params) error {
	sqSize := int(p.sqOff.array) + int(p.sqEntries)*4
	cqSize := int(p.cqOff.cqes) + int(p.cqEntries)*int(unsafe.Sizeof(cqe{}))
	single := p.features&featSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	prot, flags := unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE
	if r.sqRing, err = unix.Mmap(r.fd, offSQRing, sqSize, prot, flags); err != nil {
		return fmt.Errorf("mmap io_uring SQ ring: %w", err)
	}
	r.cqRing = r.sqRing
	if !single {
		if r.cqRing, err = unix.Mmap(r.fd, offCQRing, cqSize, prot, flags); err != nil {
			return fmt.Errorf("mmap io_uring CQ ring: %w", err)
		}
	}
	sqeSize := int(p.sqEntries) * int(unsafe.Sizeof(sqe{}))
	if r.sqeMem, err = unix.Mmap(r.fd, offSQEs, sqeSize, prot, flags); err != nil {
		return fmt.Errorf("mmap io_uring SQEs: %w", err)
	}
	u32 := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	r.sqHead = u32(r.sqRing, p.sqOff.head)
	r.sqTail = u32(r.sqRing, p.sqOff.tail)
	r.sqMask = *u32(r.sqRing, p.sqOff.ringMask)
	r.sqFlags = u32(r.sqRing, p.sqOff.flags)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	// The indirection array maps ring positions to entries one to one,
	// once and for all.
	array := unsafe.Slice(u32(r.sqRing, p.sqOff.array), p.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	r.cqHead = u32(r.cqRing, p.cqOff.head)
	r.cqTail = u32(r.cqRing, p.cqOff.tail)
	r.cqMask = *u32(r.cqRing, p.cqOff.ringMask)
	r.cqes = unsafe.Slice((*cqe)(unsafe.Pointer(&r.cqRing[p.cqOff.cqes])), p.cqEntries)
	return nil
}

func (r *Ring) unmap() {
	if r.sqeMem != nil {
		unix.Munmap(r.sqeMem)
	}
	if r.cqRing != nil && &r.cqRing[0] != &r.sqRing[0] {
		unix.Munmap(r.cqRing)
	}
	if r.sqRing != nil {
		unix.Munmap(r.sqRing)
	}
}

// Start submits op on fd for p at off and returns true; done.Complete is
// called exactly once when it completes. It returns false, and submits
// nothing, when the ring is closed or full, or the kernel refused the
// submission: the caller then does the I/O itself.
//
// p must stay valid and, for Read, untouched until Complete runs; the ring
// keeps a reference to it until then.
func (r *Ring) Start(op Op, fd int, p []byte, off int64, done Completer) bool {
	if len(p) == 0 || len(p) > 1<<30 || off < 0 {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.free < 0 {
		return false
	}
	tail := atomic.LoadUint32(r.sqTail)
	if tail-atomic.LoadUint32(r.sqHead) > r.sqMask {
		return false // cannot happen with one submission per enter, but never overwrite an entry
	}
	i := r.free
	s := &r.slots[i]
	r.free = s.next
	s.buf, s.done = p, done
	e := &r.sqes[tail&r.sqMask]
	*e = sqe{
		opcode:   uint8(op),
		fd:       int32(fd),
		off:      uint64(off),
		addr:     uint64(uintptr(unsafe.Pointer(&p[0]))),
		len:      uint32(len(p)),
		userData: uint64(i),
	}
	// The store of the tail publishes the entry (sync/atomic is
	// sequentially consistent, stronger than the release the kernel
	// needs).
	atomic.StoreUint32(r.sqTail, tail+1)
	for {
		n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 1, 0, 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 || n != 1 {
			// Not consumed: take the entry back. Only this
			// goroutine, holding mu, moves the tail.
			if atomic.LoadUint32(r.sqHead) == tail {
				atomic.StoreUint32(r.sqTail, tail)
			}
			s.buf, s.done = nil, nil
			s.next, r.free = r.free, i
			return false
		}
		break
	}
	r.inflight++
	return true
}

// reap runs until Close: it waits for the eventfd and hands every new
// completion to its Completer.
func (r *Ring) reap() {
	defer close(r.reaped)
	var b [8]byte
	for {
		r.drain()
		if _, err := r.ev.Read(b[:]); err != nil {
			return // closed by Close, after the last completion
		}
	}
}

// drain hands every completion the kernel has posted to its Completer.
// The kernel posts a completion before it signals the eventfd, so a
// completion posted after drain read the tail signals again.
//
// Each entry is consumed (the head moved past it) before its slot is
// freed: a freed slot lets Start submit another request at once, and the
// completion queue, as long as the slots, must then have room for it. (The
// first version freed slots first; the kernel then had to keep completions
// on its overflow list, which signals nothing, and the ring stalled.)
func (r *Ring) drain() {
	head := atomic.LoadUint32(r.cqHead)
	for {
		if atomic.LoadUint32(r.sqFlags)&sqCQOverflow != 0 {
			// Defensive: should the kernel ever hold completions
			// back, have it move them to the queue.
			unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 0, 0, enterGetEvents, 0, 0)
		}
		tail := atomic.LoadUint32(r.cqTail)
		if head == tail {
			return
		}
		for ; head != tail; head++ {
			c := r.cqes[head&r.cqMask]
			atomic.StoreUint32(r.cqHead, head+1)
			r.complete(int32(c.userData), c.res)
		}
	}
}

func (r *Ring) complete(i int32, res int32) {
	r.mu.Lock()
	s := &r.slots[i]
	done := s.done
	s.buf, s.done = nil, nil
	s.next, r.free = r.free, i
	r.inflight--
	if r.closed && r.inflight == 0 {
		r.drained.Broadcast()
	}
	r.mu.Unlock()
	if res < 0 {
		done.Complete(0, syscall.Errno(-res))
		return
	}
	done.Complete(int(res), nil)
}

// Close waits for the requests in flight to complete, stops the reaper and
// releases the ring. Start fails after Close.
func (r *Ring) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	r.closed = true
	for r.inflight > 0 {
		r.drained.Wait()
	}
	r.mu.Unlock()
	err := r.ev.Close()
	<-r.reaped
	r.unmap()
	return errors.Join(err, unix.Close(r.fd))
}
