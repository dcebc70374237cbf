package faultdev

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kcopyd/kcopyd/device"
)

// ErrInjected is wrapped by every error a Device injects, so that tests can
// tell injected failures from real ones with errors.Is. It is returned when
// an Injector decides that an operation fails.
var ErrInjected = errors.New("faultdev: injected fault")

// Op describes one device operation, as an Injector sees it before the
// operation runs.
type Op struct {
	// Kind is the operation: device.OpRead, OpWrite, OpWriteZeroes,
	// OpDiscard, OpFlush or OpExtents.
	Kind device.Op
	// Off and Len are the byte range of the request. A flush has Off 0 and
	// Len 0 and so overlaps no range.
	Off, Len int64
}

// IsRead reports whether op reads data: a read or an extent query.
func (op Op) IsRead() bool { return op.Kind == device.OpRead || op.Kind == device.OpExtents }

// IsWrite reports whether op changes data: a write, a write-zeroes or a
// discard. A flush is neither a read nor a write.
func (op Op) IsWrite() bool {
	switch op.Kind {
	case device.OpWrite, device.OpWriteZeroes, device.OpDiscard:
		return true
	}
	return false
}

// Fault is an Injector's decision about one operation. The zero Fault lets
// the operation run untouched.
type Fault struct {
	// Err, when non-nil, makes the operation fail with an *device.IOError
	// wrapping both ErrInjected and Err, without reaching the wrapped
	// device.
	Err error
	// Drop makes a write, write-zeroes, discard or flush report success
	// without reaching the wrapped device (the range is still checked
	// against Size). Reads and extent queries ignore Drop. Err takes
	// precedence over Drop.
	Drop bool
	// Delay is slept before the operation runs (or fails, or is dropped).
	Delay time.Duration
	// Short makes a read or write transfer only part of its buffer: the
	// first half, rounded down to the wrapped device's OffsetAlign (so
	// possibly nothing), and return that count. With Err the error comes
	// with the count, a short transfer as io.ReaderAt and io.WriterAt
	// allow it; without Err the count comes with a nil error, a device
	// breaking those contracts, which a caller must not take as success
	// either. Other operations ignore Short.
	Short bool
}

// IsZero reports whether f leaves the operation alone.
func (f Fault) IsZero() bool { return f.Err == nil && !f.Drop && f.Delay == 0 && !f.Short }

// merge combines two faults: the first error wins, Drop if either drops,
// delays add up.
func (f Fault) merge(g Fault) Fault {
	if f.Err == nil {
		f.Err = g.Err
	}
	f.Drop = f.Drop || g.Drop
	f.Short = f.Short || g.Short
	f.Delay += g.Delay
	return f
}

// Injector decides the fate of each operation of a Device.
//
// Inject is called exactly once per operation, before it runs, possibly
// from many goroutines at once: implementations must be safe for
// concurrent use. Filters (Reads, Writes, Range, Ops, Toggle) call the
// injectors they wrap only for the operations they let through, so an
// inner counting injector (OnIndex, Counter) counts only those.
type Injector interface {
	Inject(op Op) Fault
}

// InjectorFunc is an Injector made of a function.
type InjectorFunc func(op Op) Fault

// Inject implements Injector.
func (f InjectorFunc) Inject(op Op) Fault { return f(op) }

// Always returns an injector that fails every operation with err, or with
// ErrInjected alone when err is nil. The Device wraps err so that the
// result matches both errors.Is(e, ErrInjected) and errors.Is(e, err);
// passing device.ErrNotSupported, for example, makes a WriteZeroes look
// unsupported.
func Always(err error) Injector {
	if err == nil {
		err = ErrInjected
	}
	return InjectorFunc(func(Op) Fault { return Fault{Err: err} })
}

// Drop returns an injector that drops every operation it sees: writes,
// write-zeroes, discards and flushes report success and do nothing; reads
// and extent queries run normally.
func Drop() Injector {
	return InjectorFunc(func(Op) Fault { return Fault{Drop: true} })
}

// ShortIO returns an injector that makes every read and write transfer
// only part of its buffer (Fault.Short), returning err with the short
// count, or a nil error (a contract violation) when err is nil. Other
// operations run normally.
func ShortIO(err error) Injector {
	f := Fault{Short: true}
	if err != nil {
		f.Err = err
	}
	return Ops(InjectorFunc(func(Op) Fault { return f }), device.OpRead, device.OpWrite)
}

// ErrorWrites returns an injector that fails every write, write-zeroes and
// discard with ErrInjected and lets everything else run, like dm-flakey's
// error_writes.
func ErrorWrites() Injector { return Writes(Always(nil)) }

// DropWrites returns an injector that silently drops every write,
// write-zeroes and discard (reporting success) and lets everything else
// run, like dm-flakey's drop_writes.
func DropWrites() Injector { return Writes(Drop()) }

// Latency returns an injector that delays every operation by d.
func Latency(d time.Duration) Injector {
	return InjectorFunc(func(Op) Fault { return Fault{Delay: d} })
}

// RandomLatency returns an injector that delays every operation by a
// duration drawn uniformly from [0, max), from a generator seeded with
// seed: the sequence of delays is reproducible, though with concurrent
// operations which operation gets which delay is not. It panics if max is
// not positive.
func RandomLatency(seed uint64, max time.Duration) Injector {
	if max <= 0 {
		panic("faultdev.RandomLatency: max must be positive")
	}
	r := &lockedRand{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	return InjectorFunc(func(Op) Fault {
		return Fault{Delay: time.Duration(r.int64N(int64(max)))}
	})
}

// Random returns an injector that applies inj to each operation with
// probability p (0 ≤ p ≤ 1), from a generator seeded with seed. It panics
// if p is outside [0, 1].
func Random(seed uint64, p float64, inj Injector) Injector {
	if !(p >= 0 && p <= 1) {
		panic("faultdev.Random: probability outside [0, 1]")
	}
	r := &lockedRand{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	return InjectorFunc(func(op Op) Fault {
		if r.float64() < p {
			return inj.Inject(op)
		}
		return Fault{}
	})
}

// lockedRand is a generator safe for concurrent use.
type lockedRand struct {
	// mu guards rng.
	mu  sync.Mutex
	rng *rand.Rand
}

func (r *lockedRand) int64N(n int64) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rng.Int64N(n)
}

func (r *lockedRand) float64() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rng.Float64()
}

// Reads returns an injector that passes reads and extent queries to inj and
// lets every other operation run.
func Reads(inj Injector) Injector {
	return InjectorFunc(func(op Op) Fault {
		if op.IsRead() {
			return inj.Inject(op)
		}
		return Fault{}
	})
}

// Writes returns an injector that passes writes, write-zeroes and discards
// to inj and lets every other operation (reads, extents, flushes) run.
func Writes(inj Injector) Injector {
	return InjectorFunc(func(op Op) Fault {
		if op.IsWrite() {
			return inj.Inject(op)
		}
		return Fault{}
	})
}

// Ops returns an injector that passes operations of the given kinds to inj
// and lets the others run. Ops(inj, device.OpFlush) targets flushes alone.
func Ops(inj Injector, kinds ...device.Op) Injector {
	kinds = append([]device.Op(nil), kinds...)
	return InjectorFunc(func(op Op) Fault {
		for _, k := range kinds {
			if op.Kind == k {
				return inj.Inject(op)
			}
		}
		return Fault{}
	})
}

// Range returns an injector that passes to inj the operations whose byte
// range overlaps [off, off+length) and lets the others run. Flushes and
// empty requests overlap nothing. It panics if length is negative.
func Range(off, length int64, inj Injector) Injector {
	if length < 0 {
		panic("faultdev.Range: negative length")
	}
	return InjectorFunc(func(op Op) Fault {
		if op.Len > 0 && length > 0 && op.Off < off+length && off < op.Off+op.Len {
			return inj.Inject(op)
		}
		return Fault{}
	})
}

// Index is an injector that numbers the operations it sees from 0 and
// applies another injector to one of them. It is safe for concurrent use:
// each operation gets a distinct number, in the order in which Inject is
// called.
type Index struct {
	index int64
	next  Injector
	seen  atomic.Int64
	fired atomic.Bool
}

// OnIndex returns an injector that fails the i-th operation it sees
// (counting from 0) with ErrInjected. A negative i never fires, which makes
// OnIndex(-1) a counter for a dry run: run once, read Seen as N, then run
// again with OnIndex(i) for each i in [0, N).
func OnIndex(i int64) *Index { return Nth(i, Always(nil)) }

// Nth returns an injector that applies inj to the i-th operation it sees
// (counting from 0) and lets all the others run; Writes(Nth(3, Drop()))
// drops the fourth write. A negative i never fires.
func Nth(i int64, inj Injector) *Index { return &Index{index: i, next: inj} }

// Inject implements Injector.
func (x *Index) Inject(op Op) Fault {
	if x.seen.Add(1)-1 != x.index {
		return Fault{}
	}
	x.fired.Store(true)
	return x.next.Inject(op)
}

// Seen returns the number of operations x has seen.
func (x *Index) Seen() int64 { return x.seen.Load() }

// Fired reports whether x has reached its index, that is whether the
// operation it targets has happened. A sweep that raises the index until
// Fired is false has failed every operation once.
func (x *Index) Fired() bool { return x.fired.Load() }

// From returns an injector that applies inj to every operation from the
// i-th on (counting from 0): the device "dies" at operation i.
func From(i int64, inj Injector) Injector {
	var seen atomic.Int64
	return InjectorFunc(func(op Op) Fault {
		if seen.Add(1)-1 < i {
			return Fault{}
		}
		return inj.Inject(op)
	})
}

// Counter is an injector that injects nothing and counts the operations it
// sees. Wrap it in filters to count, say, writes.
type Counter struct{ n atomic.Int64 }

// Inject implements Injector.
func (c *Counter) Inject(Op) Fault {
	c.n.Add(1)
	return Fault{}
}

// Count returns the number of operations c has seen.
func (c *Counter) Count() int64 { return c.n.Load() }

// Toggle is an injector that can be switched on and off at run time, from
// any goroutine. While off it lets every operation run without consulting
// the injector it wraps. A new Toggle is off.
type Toggle struct {
	on   atomic.Bool
	next Injector
}

// NewToggle returns a Toggle, initially off, that applies inj while on.
func NewToggle(inj Injector) *Toggle { return &Toggle{next: inj} }

// Inject implements Injector.
func (t *Toggle) Inject(op Op) Fault {
	if !t.on.Load() {
		return Fault{}
	}
	return t.next.Inject(op)
}

// On switches t on: operations that start afterwards see the wrapped
// injector. Operations already running are not affected.
func (t *Toggle) On() { t.on.Store(true) }

// Off switches t off.
func (t *Toggle) Off() { t.on.Store(false) }

// Set switches t on or off.
func (t *Toggle) Set(on bool) { t.on.Store(on) }

// Enabled reports whether t is on.
func (t *Toggle) Enabled() bool { return t.on.Load() }

// Any returns an injector that consults every inj, in order, for every
// operation (so that each counts every operation) and merges what they
// decide: the first error wins, the operation is dropped if any drops it,
// and the delays add up. Any() injects nothing.
func Any(injs ...Injector) Injector {
	injs = append([]Injector(nil), injs...)
	return InjectorFunc(func(op Op) Fault {
		var f Fault
		for _, inj := range injs {
			f = f.merge(inj.Inject(op))
		}
		return f
	})
}

// All returns an injector that consults every inj, in order, for every
// operation, and injects their merged decision (as Any) only when every one
// of them decides something; otherwise the operation runs untouched.
// All(OnIndex(5), Range(...)) fails the sixth operation only if it lies in
// the range. All() injects nothing.
func All(injs ...Injector) Injector {
	injs = append([]Injector(nil), injs...)
	return InjectorFunc(func(op Op) Fault {
		var f Fault
		all := len(injs) > 0
		for _, inj := range injs {
			g := inj.Inject(op)
			if g.IsZero() {
				all = false
			}
			f = f.merge(g)
		}
		if !all {
			return Fault{}
		}
		return f
	})
}
