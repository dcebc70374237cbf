package dmio

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kcopyd/kcopyd/device"
)

// plain hides every optional capability of the device it holds.
type plain struct{ device.Device }

// badRange fails reads that overlap [off, off+n) and caps transfers.
type badRange struct {
	device.Device
	off, n   int64
	maxXfer  int64
	requests int
}

var errBad = errors.New("bad sector")

func (b *badRange) ReadAt(p []byte, off int64) (int, error) {
	b.requests++
	if off < b.off+b.n && b.off < off+int64(len(p)) {
		return 0, &device.IOError{Op: device.OpRead, Off: off, Len: int64(len(p)), Err: errBad}
	}
	return b.Device.ReadAt(p, off)
}

func (b *badRange) Limits() device.Limits { return device.Limits{MaxTransfer: b.maxXfer} }

func run(t *testing.T, e *Engine, r *Request) *Request {
	t.Helper()
	done := make(chan struct{})
	r.Notify = func(*Request) { close(done) }
	e.Submit(r)
	<-done
	return r
}

func random(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestReadThenFanOut(t *testing.T) {
	e := New(4)
	defer e.Close()
	data := random(1 << 20)
	src := device.NewMemFrom(append([]byte(nil), data...))
	var dsts []*device.Mem
	r := &Request{Op: OpRead, Regions: [MaxRegions]Region{{src, 4096, 300000}}, N: 1, Buf: make([]byte, 300000)}
	run(t, e, r)
	if r.Errs[0] != nil {
		t.Fatal(r.Errs[0])
	}
	w := &Request{Op: OpWrite, Buf: r.Buf}
	for i := range 5 {
		d := device.NewMem(1 << 20)
		dsts = append(dsts, d)
		w.Regions[i] = Region{d, int64(i) * 1000, 300000}
	}
	w.N = 5
	run(t, e, w)
	for i, d := range dsts {
		if w.Errs[i] != nil {
			t.Fatalf("dest %d: %v", i, w.Errs[i])
		}
		got := make([]byte, 300000)
		d.ReadAt(got, int64(i)*1000)
		if !bytes.Equal(got, data[4096:4096+300000]) {
			t.Fatalf("dest %d differs from the source", i)
		}
	}
}

func TestWriteZeroesNativeAndFallback(t *testing.T) {
	e := New(2)
	defer e.Close()
	for _, native := range []bool{true, false} {
		a := device.NewMemFrom(bytes.Repeat([]byte{0xff}, 3<<20))
		b := plain{device.NewMemFrom(bytes.Repeat([]byte{0xff}, 3<<20))}
		r := &Request{Op: OpWriteZeroes, Native: native, N: 2}
		r.Regions[0] = Region{a, 1, 3<<20 - 2}
		r.Regions[1] = Region{b, 1, 3<<20 - 2}
		run(t, e, r)
		for i, d := range []device.Device{a, b} {
			if r.Errs[i] != nil {
				t.Fatal(r.Errs[i])
			}
			got := make([]byte, 3<<20)
			d.ReadAt(got, 0)
			if got[0] != 0xff || got[len(got)-1] != 0xff || !bytes.Equal(got[1:len(got)-1], make([]byte, len(got)-2)) {
				t.Fatalf("native=%v dest %d: not zeroed exactly over the region", native, i)
			}
		}
	}
	if CanWriteZeroes(plain{device.NewMem(1)}) {
		t.Fatal("CanWriteZeroes true for a device without WriteZeroer")
	}
}

func TestReadFailureSalvage(t *testing.T) {
	e := New(1)
	defer e.Close()
	data := random(64 << 10)
	for _, salvage := range []bool{false, true} {
		dev := &badRange{Device: device.NewMemFrom(append([]byte(nil), data...)), off: 10000, n: 5000, maxXfer: 16 << 10}
		r := &Request{Op: OpRead, N: 1, Salvage: salvage, Buf: make([]byte, 64<<10)}
		r.Regions[0] = Region{dev, 0, 64 << 10}
		run(t, e, r)
		if !errors.Is(r.Errs[0], errBad) {
			t.Fatalf("salvage=%v: err = %v; want errBad", salvage, r.Errs[0])
		}
		want := []Range{{0, 64 << 10}}
		if salvage {
			want = []Range{{8192, 8192}} // 4 KiB blocks 2 and 3 overlap [10000, 15000)
		}
		if len(r.Bad) != len(want) || r.Bad[0] != want[0] {
			t.Fatalf("salvage=%v: Bad = %v; want %v", salvage, r.Bad, want)
		}
		exp := append([]byte(nil), data...)
		for _, b := range want {
			clear(exp[b.Off : b.Off+b.Len])
		}
		if !bytes.Equal(r.Buf, exp) {
			t.Fatalf("salvage=%v: buffer is not the data with exactly the bad ranges zeroed", salvage)
		}
	}
}

func TestShortDeviceIsAnError(t *testing.T) {
	e := New(1)
	defer e.Close()
	r := &Request{Op: OpRead, N: 1, Buf: make([]byte, 8192)}
	r.Regions[0] = Region{device.NewMem(4096), 0, 8192}
	run(t, e, r)
	if r.Errs[0] == nil {
		t.Fatal("reading past the end succeeded")
	}
}

func BenchmarkFanOut4(b *testing.B) {
	e := New(8)
	defer e.Close()
	buf := random(512 << 10)
	w := &Request{Op: OpWrite, Buf: buf, N: 4}
	for i := range 4 {
		w.Regions[i] = Region{device.NewMem(512 << 10), 0, 512 << 10}
	}
	done := make(chan struct{}, 1)
	w.Notify = func(*Request) { done <- struct{}{} }
	b.SetBytes(512 << 10)
	b.ReportAllocs()
	for b.Loop() {
		e.Submit(w)
		<-done
	}
}

// contradictory has a MaxTransfer (and MaxWriteZeroes) smaller than its
// offset alignment: no request can be issued to it.
type contradictory struct{ *device.Mem }

func (contradictory) Limits() device.Limits {
	return device.Limits{OffsetAlign: 4096, MaxTransfer: 512, MaxWriteZeroes: 512}
}

// TestContradictoryLimits checks that a device whose limits allow no
// request fails each request with ErrBadLimits instead of looping forever
// on zero-length calls (which also hung Close).
func TestContradictoryLimits(t *testing.T) {
	e := New(2)
	defer e.Close()
	dev := contradictory{device.NewMem(1 << 16)}
	if err := CheckLimits(dev); !errors.Is(err, ErrBadLimits) {
		t.Fatalf("CheckLimits = %v; want ErrBadLimits", err)
	}
	for _, r := range []*Request{
		{Op: OpRead, N: 1, Regions: [MaxRegions]Region{{dev, 0, 8192}}, Buf: make([]byte, 8192)},
		{Op: OpWrite, N: 1, Regions: [MaxRegions]Region{{dev, 0, 8192}}, Buf: make([]byte, 8192)},
		{Op: OpWriteZeroes, N: 1, Regions: [MaxRegions]Region{{dev, 0, 8192}}},
		{Op: OpWriteZeroes, Native: true, N: 1, Regions: [MaxRegions]Region{{dev, 0, 8192}}},
	} {
		run(t, e, r)
		if !errors.Is(r.Errs[0], ErrBadLimits) {
			t.Errorf("%v: err = %v; want ErrBadLimits", r.Op, r.Errs[0])
		}
	}
}

// starter is a device.Starter over a Mem: it completes each started
// request on a goroutine of its own, the first shortN of them short by one
// byte and the next failN of them with errBad, and counts the requests
// done through ReadAt and WriteAt (the ordinary path).
type starter struct {
	*device.Mem
	mu            sync.Mutex
	shortN, failN int
	started       int
	refuse        bool
	plainCalls    atomic.Int32
}

func (s *starter) ReadAt(p []byte, off int64) (int, error) {
	s.plainCalls.Add(1)
	return s.Mem.ReadAt(p, off)
}

func (s *starter) WriteAt(p []byte, off int64) (int, error) {
	s.plainCalls.Add(1)
	return s.Mem.WriteAt(p, off)
}

func (s *starter) StartReadAt(p []byte, off int64, c device.Completer) bool {
	return s.start(p, off, c, s.Mem.ReadAt)
}

func (s *starter) StartWriteAt(p []byte, off int64, c device.Completer) bool {
	return s.start(p, off, c, s.Mem.WriteAt)
}

func (s *starter) start(p []byte, off int64, c device.Completer, do func([]byte, int64) (int, error)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse {
		return false
	}
	s.started++
	short, fail := s.shortN > 0, s.shortN == 0 && s.failN > 0
	if short {
		s.shortN--
	} else if fail {
		s.failN--
	}
	go func() {
		switch {
		case fail:
			c.Complete(0, errBad)
		case short:
			n, err := do(p[:len(p)-1], off)
			c.Complete(n, err)
		default:
			c.Complete(do(p, off))
		}
	}()
	return true
}

// TestStarter copies through devices that start requests themselves: a
// request completed whole takes no I/O goroutine, and one completed short
// or with an error is done again the ordinary way, so the bytes and the
// errors are those of the ordinary path.
func TestStarter(t *testing.T) {
	e := New(2)
	defer e.Close()
	data := random(256 << 10)
	for _, tc := range []struct {
		name          string
		shortN, failN int
		refuse        bool
		plain         int32 // ReadAt and WriteAt calls expected
	}{
		{"started", 0, 0, false, 0},
		{"short", 1, 0, false, 1},
		{"failed", 0, 1, false, 1},
		{"refused", 0, 0, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &starter{Mem: device.NewMemFrom(append([]byte(nil), data...)), shortN: tc.shortN, failN: tc.failN, refuse: tc.refuse}
			buf := make([]byte, len(data))
			r := run(t, e, &Request{Op: OpRead, Regions: [MaxRegions]Region{{src, 0, int64(len(data))}}, N: 1, Buf: buf})
			if r.Errs[0] != nil || !bytes.Equal(buf, data) {
				t.Fatalf("read: %v, equal %v", r.Errs[0], bytes.Equal(buf, data))
			}
			if got := src.plainCalls.Load(); got != tc.plain {
				t.Fatalf("read: %d ReadAt calls, want %d", got, tc.plain)
			}
			dst := &starter{Mem: device.NewMem(int64(len(data))), shortN: tc.shortN, failN: tc.failN, refuse: tc.refuse}
			r = run(t, e, &Request{Op: OpWrite, Regions: [MaxRegions]Region{{dst, 0, int64(len(data))}}, N: 1, Buf: buf})
			got := make([]byte, len(data))
			dst.Mem.ReadAt(got, 0)
			if r.Errs[0] != nil || !bytes.Equal(got, data) {
				t.Fatalf("write: %v, equal %v", r.Errs[0], bytes.Equal(got, data))
			}
			if got := dst.plainCalls.Load(); got != tc.plain {
				t.Fatalf("write: %d WriteAt calls, want %d", got, tc.plain)
			}
		})
	}
}
