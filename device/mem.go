package device

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// memBlockSize is the allocation unit of a Mem: a block that was never
// written, or that was zeroed or discarded as a whole, holds no memory and
// is reported as a hole by Extents.
const memBlockSize = 4096

// maxMemExtents bounds the number of extents one Extents call returns on a
// Mem, so that a fragmented device cannot make one call allocate without
// limit; the caller asks again from where the list ended.
const maxMemExtents = 4096

// memIDs numbers Mems so that each has its own Identity.
var memIDs atomic.Uint64

// Mem is a device held in memory. It is sparse: memory is allocated in
// blocks of 4 KiB when they are first written, and blocks that were never
// written, or that WriteZeroes or Discard cleared as a whole, are holes that
// read as zeroes and cost nothing.
//
// Mem implements Device, Limiter, WriteZeroer, Discarder, Flusher,
// Extenter, Identifier and fmt.Stringer. It has no alignment constraints.
// All methods are safe for concurrent use; reads run in parallel, writes
// exclude each other and reads.
type Mem struct {
	size int64
	id   uint64

	// mu guards the blocks and the closed state.
	mu struct {
		sync.RWMutex
		blocks []*[memBlockSize]byte // nil: a hole
		closed bool
	}
}

var (
	_ Device       = (*Mem)(nil)
	_ Limiter      = (*Mem)(nil)
	_ WriteZeroer  = (*Mem)(nil)
	_ Discarder    = (*Mem)(nil)
	_ Flusher      = (*Mem)(nil)
	_ Extenter     = (*Mem)(nil)
	_ Identifier   = (*Mem)(nil)
	_ fmt.Stringer = (*Mem)(nil)
)

// NewMem returns a zeroed in-memory device of size bytes. It panics if size
// is negative.
func NewMem(size int64) *Mem {
	if size < 0 {
		panic(fmt.Sprintf("device.NewMem: negative size %d", size))
	}
	m := &Mem{size: size, id: memIDs.Add(1)}
	m.mu.blocks = make([]*[memBlockSize]byte, (size+memBlockSize-1)/memBlockSize)
	return m
}

// NewMemFrom returns an in-memory device holding a copy of b, of size
// len(b). Every block of it counts as written (data, not a hole), even
// where b is zero.
func NewMemFrom(b []byte) *Mem {
	m := NewMem(int64(len(b)))
	m.mu.Lock()
	defer m.mu.Unlock()
	m.copyInLocked(b, 0)
	return m
}

// String returns "mem:<size>".
func (m *Mem) String() string { return fmt.Sprintf("mem:%d", m.size) }

// Identity implements Identifier. It is unique to m among all Mems of the
// process.
func (m *Mem) Identity() string { return fmt.Sprintf("mem#%d", m.id) }

// Size implements Device.
func (m *Mem) Size() int64 { return m.size }

// Limits implements Limiter: no alignment, no transfer limit, and native
// write-zeroes and discard of up to the whole device in one call.
func (m *Mem) Limits() Limits {
	return Limits{
		LogicalBlockSize: 1,
		MaxWriteZeroes:   max(m.size, 1),
		MaxDiscard:       max(m.size, 1),
	}
}

func (m *Mem) ioError(op Op, off, length int64, err error) error {
	return &IOError{Op: op, Dev: m.String(), Off: off, Len: length, Err: err}
}

// ReadAt implements Device. A read that starts at or after Size returns 0,
// io.EOF; one that crosses Size returns the bytes before Size and io.EOF. A
// negative off fails with an error wrapping ErrOutOfRange, and a closed Mem
// fails with ErrClosed.
func (m *Mem) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.mu.closed {
		return 0, m.ioError(OpRead, off, int64(len(p)), ErrClosed)
	}
	if off < 0 {
		return 0, m.ioError(OpRead, off, int64(len(p)), fmt.Errorf("%w: negative offset", ErrOutOfRange))
	}
	if off >= m.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	var err error
	if int64(len(p)) > m.size-off {
		p = p[:m.size-off]
		err = io.EOF
	}
	for done := 0; done < len(p); {
		pos := off + int64(done)
		bi, bo := pos/memBlockSize, int(pos%memBlockSize)
		chunk := p[done:min(len(p), done+memBlockSize-bo)]
		if b := m.mu.blocks[bi]; b != nil {
			copy(chunk, b[bo:])
		} else {
			clear(chunk)
		}
		done += len(chunk)
	}
	return len(p), err
}

// WriteAt implements Device. A write that would cross Size fails with an
// error wrapping ErrOutOfRange and writes nothing.
func (m *Mem) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.closed {
		return 0, m.ioError(OpWrite, off, int64(len(p)), ErrClosed)
	}
	if err := CheckRange(off, int64(len(p)), m.size, 1); err != nil {
		return 0, m.ioError(OpWrite, off, int64(len(p)), err)
	}
	m.copyInLocked(p, off)
	return len(p), nil
}

// copyInLocked copies p to off, allocating blocks as needed. The range must
// have been checked.
func (m *Mem) copyInLocked(p []byte, off int64) {
	for done := 0; done < len(p); {
		pos := off + int64(done)
		bi, bo := pos/memBlockSize, int(pos%memBlockSize)
		b := m.mu.blocks[bi]
		if b == nil {
			b = new([memBlockSize]byte)
			m.mu.blocks[bi] = b
		}
		done += copy(b[bo:], p[done:])
	}
}

// WriteZeroes implements WriteZeroer. Blocks of 4 KiB wholly inside the
// range become holes; the rest of the range is zeroed in place. A range
// crossing Size fails with an error wrapping ErrOutOfRange and changes
// nothing.
func (m *Mem) WriteZeroes(off, length int64) error {
	return m.clear(OpWriteZeroes, off, length)
}

// Discard implements Discarder. On a Mem, a discarded range reads back as
// zeroes: Discard does exactly what WriteZeroes does.
func (m *Mem) Discard(off, length int64) error {
	return m.clear(OpDiscard, off, length)
}

func (m *Mem) clear(op Op, off, length int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.closed {
		return m.ioError(op, off, length, ErrClosed)
	}
	if err := CheckRange(off, length, m.size, 1); err != nil {
		return m.ioError(op, off, length, err)
	}
	for pos, end := off, off+length; pos < end; {
		bi, bo := pos/memBlockSize, pos%memBlockSize
		n := min(end-pos, memBlockSize-bo)
		b := m.mu.blocks[bi]
		switch {
		case b == nil:
		case n == memBlockSize || bo == 0 && pos+n == m.size:
			// The whole block, or all of the device's last,
			// partial block.
			m.mu.blocks[bi] = nil
		default:
			clear(b[bo : bo+n])
		}
		pos += n
	}
	return nil
}

// Flush implements Flusher. A Mem has no cache, so Flush does nothing but
// report ErrClosed on a closed Mem.
func (m *Mem) Flush() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.mu.closed {
		return m.ioError(OpFlush, 0, 0, ErrClosed)
	}
	return nil
}

// Extents implements Extenter. Holes are 4 KiB blocks that were never
// written or were cleared whole by WriteZeroes or Discard; they are
// reported with Hole and Zero set. Everything else is data, with Zero
// unset even if it happens to hold zeroes. The range must lie inside the
// device and not be empty, else the error wraps ErrOutOfRange. The list
// holds at most 4096 extents; the caller asks again from where it ended.
func (m *Mem) Extents(off, length int64) ([]Extent, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.mu.closed {
		return nil, m.ioError(OpExtents, off, length, ErrClosed)
	}
	if err := CheckRange(off, length, m.size, 1); err != nil {
		return nil, m.ioError(OpExtents, off, length, err)
	}
	if length == 0 {
		return nil, m.ioError(OpExtents, off, length, fmt.Errorf("%w: empty range", ErrOutOfRange))
	}
	var list []Extent
	for pos, end := off, off+length; pos < end && len(list) < maxMemExtents; {
		hole := m.mu.blocks[pos/memBlockSize] == nil
		next := (pos/memBlockSize + 1) * memBlockSize
		for next < end && (m.mu.blocks[next/memBlockSize] == nil) == hole {
			next += memBlockSize
		}
		next = min(next, end)
		list = append(list, Extent{Off: pos, Len: next - pos, Hole: hole, Zero: hole})
		pos = next
	}
	return list, nil
}

// Bytes returns a copy of the device's contents. It is meant for tests and
// allocates Size bytes. It returns nil after Close.
func (m *Mem) Bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.mu.closed {
		return nil
	}
	out := make([]byte, m.size)
	for i, b := range m.mu.blocks {
		if b != nil {
			copy(out[int64(i)*memBlockSize:], b[:])
		}
	}
	return out
}

// Close releases the memory. Later operations, and a second Close, fail
// with an error wrapping ErrClosed.
func (m *Mem) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.closed {
		return fmt.Errorf("close %s: %w", m, ErrClosed)
	}
	m.mu.closed = true
	m.mu.blocks = nil
	return nil
}
