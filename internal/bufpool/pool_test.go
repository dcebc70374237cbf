package bufpool

import (
	"math/rand/v2"
	"sync"
	"testing"
	"unsafe"
)

func TestClass(t *testing.T) {
	for _, tc := range []struct{ n, want int }{
		{1, 0}, {4096, 0}, {4097, 1}, {8192, 1}, {8193, 2}, {512 << 10, 7}, {1 << 20, 8},
	} {
		if got := class(tc.n); got != tc.want {
			t.Errorf("class(%d) = %d; want %d", tc.n, got, tc.want)
		}
	}
}

func TestReserveAlwaysAvailable(t *testing.T) {
	p, err := New(512<<10, 512<<10)
	if err != nil {
		t.Fatal(err)
	}
	b, ok := p.Get(512 << 10)
	if !ok {
		t.Fatal("Get(max) on a fresh pool failed; the reserve must serve it")
	}
	if _, ok := p.Get(4096); ok {
		t.Fatal("Get succeeded beyond the budget")
	}
	p.Put(b)
	// A small request may borrow the reserve; once returned, a large one
	// succeeds again.
	s, ok := p.Get(100)
	if !ok || len(s) != 100 {
		t.Fatalf("Get(100) = %d, %v; want 100, true", len(s), ok)
	}
	p.Put(s)
	if _, ok := p.Get(512 << 10); !ok {
		t.Fatal("reserve lost after a borrow")
	}
}

func TestAlignmentAndBudget(t *testing.T) {
	const limit = 4 << 20
	p, err := New(1<<20, limit)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 1))
			var held [][]byte
			for i := 0; i < 2000; i++ {
				if len(held) > 0 && r.IntN(2) == 0 {
					j := r.IntN(len(held))
					p.Put(held[j])
					held = append(held[:j], held[j+1:]...)
					continue
				}
				n := 1 + r.IntN(1<<20)
				b, ok := p.Get(n)
				if !ok {
					continue
				}
				if len(b) != n {
					mu.Lock()
					t.Errorf("Get(%d) returned %d bytes", n, len(b))
					mu.Unlock()
				}
				if uintptr(unsafe.Pointer(&b[0]))%Align != 0 {
					mu.Lock()
					t.Errorf("Get(%d) returned an unaligned buffer", n)
					mu.Unlock()
				}
				held = append(held, b)
				if s := p.Stats(); s.Allocated > limit {
					mu.Lock()
					t.Errorf("allocated %d > budget %d", s.Allocated, limit)
					mu.Unlock()
				}
			}
			for _, b := range held {
				p.Put(b)
			}
		}(uint64(g))
	}
	wg.Wait()
	s := p.Stats()
	if s.InUse != 0 || s.Allocated > limit || s.PeakInUse > limit {
		t.Fatalf("after the run: %+v", s)
	}
}

func TestNewRejectsSmallBudget(t *testing.T) {
	if _, err := New(1<<20, 1<<19); err == nil {
		t.Fatal("New accepted a budget smaller than one buffer")
	}
}

func BenchmarkGetPut(b *testing.B) {
	p, _ := New(512<<10, 8<<20)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ := p.Get(512 << 10)
		p.Put(buf)
	}
}

// TestRebalance fills the budget with small buffers and checks that a
// full-size request is still served once they are returned: the pool gives
// up free buffers of other classes rather than serve only the reserve.
func TestRebalance(t *testing.T) {
	const top = 64 << 10
	const limit = 4 * top
	p, err := New(top, limit)
	if err != nil {
		t.Fatal(err)
	}
	var small [][]byte
	for {
		b, ok := p.Get(4096)
		if !ok {
			break
		}
		small = append(small, b)
	}
	if s := p.Stats(); s.InUse != limit {
		t.Fatalf("small buffers fill %d of %d bytes", s.InUse, limit)
	}
	if _, ok := p.Get(top); ok {
		t.Fatal("Get(top) succeeded with the whole budget in use")
	}
	for _, b := range small {
		p.Put(b)
	}
	var big [][]byte
	for range 4 {
		b, ok := p.Get(top)
		if !ok {
			t.Fatalf("Get(top) #%d failed after every small buffer was returned: %+v", len(big)+1, p.Stats())
		}
		big = append(big, b)
	}
	if s := p.Stats(); s.Allocated > limit || s.Evicted == 0 {
		t.Fatalf("after rebalancing: %+v", s)
	}
	for _, b := range big {
		p.Put(b)
	}
}

// TestExactTopClass checks that the largest class costs the largest
// buffer's size, not the next power of two: a 12 KiB pool with a 12 KiB
// budget is valid and serves 12 KiB.
func TestExactTopClass(t *testing.T) {
	p, err := New(12<<10, 12<<10)
	if err != nil {
		t.Fatalf("New(12 KiB, 12 KiB) = %v", err)
	}
	b, ok := p.Get(12 << 10)
	if !ok || len(b) != 12<<10 || cap(b) != 12<<10 {
		t.Fatalf("Get(12 KiB) = len %d cap %d, %v", len(b), cap(b), ok)
	}
	if _, ok := p.Get(4096); ok {
		t.Fatal("Get beyond a 12 KiB budget succeeded")
	}
	p.Put(b)
	s, ok := p.Get(8 << 10) // borrows the 12 KiB buffer
	if !ok {
		t.Fatal("Get(8 KiB) failed with 12 KiB free")
	}
	p.Put(s)
	if st := p.Stats(); st.InUse != 0 || st.Allocated != 12<<10 {
		t.Fatalf("after the run: %+v", st)
	}
}
