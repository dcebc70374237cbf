package kcopyd_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
)

// gate is a device whose reads at chosen offsets stop until the test lets
// them go: it forces the order of events that a test asserts, instead of
// hoping for it with sleeps. Every read (held or not) is recorded in order
// of arrival.
type gate struct {
	device.Device
	hold    func(off int64) bool // reads to hold; nil holds none
	arrived chan int64           // each held read's offset, on arrival
	release chan struct{}        // one token lets one held read go

	mu       sync.Mutex
	noRecord bool // keep no list of reads (for jobs of many chunks)
	reads    []int64
	inflight int
	peak     int
}

func newGate(d device.Device, hold func(off int64) bool) *gate {
	return &gate{Device: d, hold: hold, arrived: make(chan int64, 1<<16), release: make(chan struct{}, 1<<16)}
}

func (g *gate) ReadAt(p []byte, off int64) (int, error) {
	g.mu.Lock()
	if !g.noRecord {
		g.reads = append(g.reads, off)
	}
	g.inflight++
	g.peak = max(g.peak, g.inflight)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.inflight--
		g.mu.Unlock()
	}()
	if g.hold != nil && g.hold(off) {
		g.arrived <- off
		<-g.release
	}
	return g.Device.ReadAt(p, off)
}

// await returns the offset of the next held read, failing the test if none
// arrives within a minute (a hang, not a timing assertion).
func (g *gate) await(t *testing.T) int64 {
	t.Helper()
	select {
	case off := <-g.arrived:
		return off
	case <-time.After(time.Minute):
		t.Fatal("no held read arrived within a minute: the engine is stuck")
		return 0
	}
}

func (g *gate) readOrder() []int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int64(nil), g.reads...)
}

// discard is a destination that throws writes away: for jobs far larger
// than the test's memory.
type discard struct{ size int64 }

func (d discard) ReadAt(p []byte, off int64) (int, error) { clear(p); return len(p), nil }
func (d discard) WriteAt(p []byte, off int64) (int, error) {
	return len(p), nil
}
func (d discard) Size() int64  { return d.size }
func (d discard) Close() error { return nil }

// hog keeps n goroutines busy until the test ends, so that the engine's
// goroutines are preempted at awkward moments.
func hog(t *testing.T, n int) { t.Cleanup(startHog(n)) }

// startHog starts n goroutines burning CPU and returns a function that
// stops them and waits for them.
func startHog(n int) (stop func()) {
	var done atomic.Bool
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for x := 0; !done.Load(); x++ {
			}
		})
	}
	return func() { done.Store(true); wg.Wait() }
}

// TestChunkOrderUnderContention reproduces finding 1 of the engine-order
// issue. With one buffer and one I/O goroutine, reads reach the source in
// the order chunks were queued; jobs submitted from 8 goroutines beside
// CPU hogs must still read their chunks in ascending order, and WriteSeq
// jobs with one buffer must complete. Before the fix, the submitter queued
// a job's first chunks after releasing the job's lock, so the worker could
// queue chunk k+1 before chunk k: reads out of order, and WriteSeq jobs
// deadlocked (k+1 held the only buffer waiting for k's write). It caught
// that about once in 2,000 jobs here, so CI runs it with -count and -cpu
// 1,2,4,8 (.ci/engine-stress).
func TestChunkOrderUnderContention(t *testing.T) {
	hog(t, 2)
	const sub = 4096
	const n = 32 * sub
	data := randomBytes(1, n)
	c := newClient(t, &kcopyd.Options{SubJobSize: sub, MaxMemory: sub, IOWorkers: 1})
	reps := 60
	if testing.Short() {
		reps = 10
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range reps {
				src := newGate(device.NewMemFrom(data), nil)
				dst := device.NewMem(n)
				flags := kcopyd.Flags(0)
				if i%2 == 0 {
					flags = kcopyd.WriteSeq
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				j, err := c.Copy(ctx, kcopyd.Region{Dev: src, Len: n}, []kcopyd.Region{{Dev: dst, Len: n}}, flags, nil)
				if err == nil {
					err = j.Wait(context.Background())
				}
				cancel()
				if err != nil {
					t.Errorf("goroutine %d job %d (flags %#x): %v", g, i, flags, err)
					return
				}
				reads := src.readOrder()
				for k := 1; k < len(reads); k++ {
					if reads[k] <= reads[k-1] {
						t.Errorf("goroutine %d job %d: chunks read out of order: %v", g, i, reads)
						return
					}
				}
				runtime.Gosched()
			}
		}()
	}
	wg.Wait()
}

// TestWriteSeqAnyMemory runs WriteSeq jobs under every kind of valid
// MaxMemory (one sub-job, a sub-job that is not a power of two, a few
// sub-jobs), several jobs at once, with and without a read error: each
// completes, healthy jobs copy exactly, and a failed one reports a prefix.
func TestWriteSeqAnyMemory(t *testing.T) {
	hog(t, 1)
	for _, o := range []kcopyd.Options{
		{SubJobSize: 4096, MaxMemory: 4096},
		{SubJobSize: 12 << 10, MaxMemory: 12 << 10},
		{SubJobSize: 12 << 10, MaxMemory: 20 << 10},
		{SubJobSize: 64 << 10, MaxMemory: 3 * 64 << 10, IOWorkers: 2},
	} {
		c := newClient(t, &o)
		n := 40*o.SubJobSize + 4096 // a short last chunk in a smaller class
		data := randomBytes(7, int(n))
		var wg sync.WaitGroup
		for k := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var src device.Device = device.NewMemFrom(data)
				bad := int64(-1)
				if k%3 == 2 { // an unreadable chunk in the middle
					bad = 17 * o.SubJobSize
					src = &failAt{Device: src, off: bad}
				}
				dst := device.NewMem(n)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				j, err := c.Copy(ctx, kcopyd.Region{Dev: src, Len: n}, []kcopyd.Region{{Dev: dst, Len: n}}, kcopyd.WriteSeq, nil)
				if err != nil {
					t.Error(err)
					return
				}
				err = j.Wait(context.Background())
				var je *kcopyd.JobError
				switch {
				case bad < 0 && err != nil:
					t.Errorf("%+v job %d: %v", o, k, err)
				case bad >= 0 && (!errors.As(err, &je) || je.Canceled != nil || je.Completed > bad):
					t.Errorf("%+v job %d: err = %v; want a read error with at most %d bytes complete", o, k, err, bad)
				}
				complete := n
				if je != nil {
					complete = je.Completed
				}
				if d := firstDiff(contents(t, dst, 0, complete), data[:complete]); d >= 0 {
					t.Errorf("%+v job %d: destination differs at %d inside the complete prefix", o, k, d)
				}
			}()
		}
		wg.Wait()
	}
}

// failAt fails every read that covers byte off.
type failAt struct {
	device.Device
	off int64
}

func (f *failAt) ReadAt(p []byte, off int64) (int, error) {
	if off <= f.off && f.off < off+int64(len(p)) {
		return 0, &device.IOError{Op: device.OpRead, Off: off, Len: int64(len(p)), Err: errors.New("unreadable")}
	}
	return f.Device.ReadAt(p, off)
}

// TestSplitEightInFlight checks spec §2.7-2.8 with every read held at the
// source: a long job has exactly SplitCount chunks in flight, the first
// eight in order, and each later chunk is issued only when one finishes,
// in ascending order.
func TestSplitEightInFlight(t *testing.T) {
	const sub = 4096
	const chunks = 40
	src := newGate(device.NewMemFrom(randomBytes(1, chunks*sub)), func(int64) bool { return true })
	c := newClient(t, &kcopyd.Options{SubJobSize: sub, IOWorkers: 64})
	dst := device.NewMem(chunks * sub)
	j, err := c.Copy(context.Background(), kcopyd.Region{Dev: src, Len: chunks * sub}, []kcopyd.Region{{Dev: dst, Len: chunks * sub}}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for range kcopyd.SplitCount {
		seen[src.await(t)] = true
	}
	for k := range int64(kcopyd.SplitCount) {
		if !seen[k*sub] {
			t.Fatalf("the first %d chunks in flight were %v; want chunks 0..7", kcopyd.SplitCount, seen)
		}
	}
	// Let one read go at a time: the next chunk arrives only then, and it
	// is the next in order.
	for next := int64(kcopyd.SplitCount); next < chunks; next++ {
		src.release <- struct{}{}
		if off := src.await(t); off != next*sub {
			t.Fatalf("after a release, chunk %d arrived; want chunk %d", off/sub, next)
		}
	}
	for range kcopyd.SplitCount {
		src.release <- struct{}{}
	}
	if err := j.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if src.peak != kcopyd.SplitCount {
		t.Fatalf("%d reads in flight at most; want exactly %d", src.peak, kcopyd.SplitCount)
	}
	if d := firstDiff(contents(t, dst, 0, chunks*sub), contents(t, src.Device, 0, chunks*sub)); d >= 0 {
		t.Fatalf("destination differs at %d", d)
	}
}

// TestPagesFIFO checks spec §2.5: a job that finds no buffer waits at the
// head of the list and later jobs do not overtake it. With one buffer, job
// A's chunk 0 is held in its read while job B is submitted: A's chunks 1..7
// were queued before B, A's later chunks after it.
func TestPagesFIFO(t *testing.T) {
	const sub = 4096
	src := newGate(device.NewMemFrom(randomBytes(30, 20*sub)), func(off int64) bool { return off == 0 })
	c := newClient(t, &kcopyd.Options{SubJobSize: sub, MaxMemory: sub, IOWorkers: 1})
	a, err := c.Copy(context.Background(), kcopyd.Region{Dev: src, Len: 16 * sub}, []kcopyd.Region{{Dev: device.NewMem(16 * sub), Len: 16 * sub}}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	src.await(t) // A's chunk 0 holds the only buffer
	b, err := c.Copy(context.Background(), kcopyd.Region{Dev: src, Off: 19 * sub, Len: sub}, []kcopyd.Region{{Dev: device.NewMem(sub), Len: sub}}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	src.release <- struct{}{}
	if err := a.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []int64{0, 1, 2, 3, 4, 5, 6, 7, 19, 8, 9, 10, 11, 12, 13, 14, 15}
	got := src.readOrder()
	for i, w := range want {
		if got[i] != w*sub {
			t.Fatalf("read %d at chunk %d; want %d (order %v)", i, got[i]/sub, w, got)
		}
	}
}

// TestCloseWaits checks spec §1.6: Close returns only after every accepted
// job and every prepared callback has completed, and refuses new jobs from
// the moment it starts. The jobs are held in their reads and the prepared
// callback fired only once Close is known to have begun, so Close cannot
// return early without the test seeing it.
func TestCloseWaits(t *testing.T) {
	c, err := kcopyd.NewClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	src := newGate(device.NewMemFrom(randomBytes(11, 4<<20)), func(off int64) bool { return off%(1<<20) == 0 })
	closed := make(chan struct{})
	var done atomic.Int32
	check := func(what string) {
		select {
		case <-closed:
			t.Errorf("Close returned before %s ran", what)
		default:
		}
		done.Add(1)
	}
	for i := range 4 {
		if _, err := c.Copy(context.Background(), kcopyd.Region{Dev: src, Off: int64(i) << 20, Len: 1 << 20},
			[]kcopyd.Region{{Dev: device.NewMem(1 << 20), Len: 1 << 20}}, 0, func(bool, uint64, error) { check("a job's callback") }); err != nil {
			t.Fatal(err)
		}
	}
	h, err := c.PrepareCallback(func(r bool, w uint64, err error) {
		if !r || w != 0b100 {
			t.Errorf("prepared callback got %v %#b", r, w)
		}
		var je *kcopyd.JobError
		if !errors.As(err, &je) || !errors.Is(err, kcopyd.ErrReported) || je.WriteErrMask() != 0b100 {
			t.Errorf("prepared callback err = %v", err)
		}
		check("the prepared callback")
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		src.await(t) // every job is held in its first read
	}
	go func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		close(closed)
	}()
	// Close has begun once the client refuses jobs.
	probe := kcopyd.Region{Dev: device.NewMem(1), Len: 1}
	for {
		_, err := c.Copy(context.Background(), probe, []kcopyd.Region{{Dev: device.NewMem(1), Len: 1}}, 0, nil)
		if errors.Is(err, kcopyd.ErrClosed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		runtime.Gosched()
	}
	for range 4 {
		src.release <- struct{}{}
	}
	go c.DoCallback(h, true, 0b100) // from another goroutine, as from an I/O completion
	<-closed
	if n := done.Load(); n != 5 {
		t.Fatalf("%d of 5 completions ran before Close returned", n)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}
