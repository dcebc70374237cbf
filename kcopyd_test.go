package kcopyd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// Client must stop its worker and I/O goroutines on Close. With
// KCOPYD_TEST_HOG=N it keeps N goroutines burning CPU beside every test, so
// that the engine's goroutines are preempted at awkward moments (CI's
// engine stress run sets it).
func TestMain(m *testing.M) {
	n, _ := strconv.Atoi(os.Getenv("KCOPYD_TEST_HOG"))
	stop := startHog(n)
	code := m.Run()
	stop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// randomBytes returns n bytes of seed's deterministic pattern.
func randomBytes(seed uint64, n int) []byte { return testutil.Pattern(seed, 0, n) }

func newClient(t testing.TB, o *kcopyd.Options) *kcopyd.Client {
	t.Helper()
	c, err := kcopyd.NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

func contents(t testing.TB, d device.Device, off, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := d.ReadAt(b, off); err != nil && n > 0 {
		t.Fatalf("ReadAt(%d, %d): %v", off, n, err)
	}
	return b
}

// firstDiff returns the first offset where a and b differ, or -1.
var firstDiff = testutil.FirstDiff

type result struct {
	readErr  bool
	writeErr uint64
	err      error
	calls    int
}

// run submits a copy (src non-nil) or zero and waits for its callback.
func run(t testing.TB, c *kcopyd.Client, ctx context.Context, src *kcopyd.Region, dests []kcopyd.Region, flags kcopyd.Flags) result {
	t.Helper()
	var res result
	var mu sync.Mutex
	fn := func(r bool, w uint64, err error) {
		mu.Lock()
		defer mu.Unlock()
		res.readErr, res.writeErr, res.err = r, w, err
		res.calls++
	}
	var job *kcopyd.Job
	var err error
	if src != nil {
		job, err = c.Copy(ctx, *src, dests, flags, fn)
	} else {
		job, err = c.Zero(ctx, dests, flags, fn)
	}
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	werr := job.Wait(context.Background())
	c.Flush()
	mu.Lock()
	defer mu.Unlock()
	if res.calls != 1 {
		t.Fatalf("callback ran %d times; want exactly once", res.calls)
	}
	if werr != res.err {
		t.Fatalf("Wait() = %v; callback err = %v", werr, res.err)
	}
	return res
}

func TestCopyLengths(t *testing.T) {
	const sub = 64 << 10
	c := newClient(t, &kcopyd.Options{SubJobSize: sub})
	for _, n := range []int64{0, 1, 511, 4096, sub - 1, sub, sub + 1, 8 * sub, 8*sub + 1, 37*sub + 12345} {
		for _, nd := range []int{1, 3, 8} {
			t.Run(fmt.Sprintf("len=%d/dests=%d", n, nd), func(t *testing.T) {
				data := randomBytes(uint64(n), int(n)+1000)
				src := device.NewMemFrom(data)
				var dests []kcopyd.Region
				for i := range nd {
					dests = append(dests, kcopyd.Region{Dev: device.NewMem(n + 5000), Off: int64(i) * 17, Len: n})
				}
				res := run(t, c, context.Background(), &kcopyd.Region{Dev: src, Off: 999, Len: n}, dests, 0)
				if res.err != nil || res.readErr || res.writeErr != 0 {
					t.Fatalf("copy failed: %+v", res)
				}
				for i, d := range dests {
					got := contents(t, d.Dev, d.Off, n)
					if k := firstDiff(got, data[999:999+n]); k >= 0 {
						t.Fatalf("destination %d differs from the source at byte %d", i, k)
					}
					// Nothing written outside the region.
					if before := contents(t, d.Dev, 0, d.Off); !bytes.Equal(before, make([]byte, d.Off)) {
						t.Fatalf("destination %d written before its region", i)
					}
				}
			})
		}
	}
}

// TestCallbacksSerialExactlyOnce submits thousands of jobs from many
// goroutines and checks that callbacks never overlap, all run on one
// goroutine, and each runs exactly once.
func TestCallbacksSerialExactlyOnce(t *testing.T) {
	c := newClient(t, &kcopyd.Options{SubJobSize: 16 << 10})
	src := device.NewMemFrom(randomBytes(7, 1<<20))
	const goroutines, perG = 16, 200
	var inCallback atomic.Int32
	var overlaps atomic.Int32
	counts := make([]atomic.Int32, goroutines*perG)
	dsts := make([]*device.Mem, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		dsts[g] = device.NewMem(1 << 20)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 3))
			for i := range perG {
				id := g*perG + i
				n := int64(1 + r.IntN(64<<10))
				off := int64(r.IntN(1<<20 - int(n)))
				_, err := c.Copy(context.Background(), kcopyd.Region{Dev: src, Off: off, Len: n},
					[]kcopyd.Region{{Dev: dsts[g], Off: off, Len: n}}, 0,
					func(bool, uint64, error) {
						if inCallback.Add(1) != 1 {
							overlaps.Add(1)
						}
						counts[id].Add(1)
						inCallback.Add(-1)
					})
				if err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if err := c.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if overlaps.Load() != 0 {
		t.Fatalf("%d callbacks overlapped another", overlaps.Load())
	}
	for id := range counts {
		if n := counts[id].Load(); n != 1 {
			t.Fatalf("job %d: callback ran %d times", id, n)
		}
	}
	for g, d := range dsts {
		// Each goroutine copied ranges of src to the same offsets of its
		// own destination: wherever it wrote, it matches src.
		got := contents(t, d, 0, 1<<20)
		want := contents(t, src, 0, 1<<20)
		for i := range got {
			if got[i] != 0 && got[i] != want[i] {
				t.Fatalf("destination %d byte %d = %#x; want %#x", g, i, got[i], want[i])
			}
		}
	}
	if s := c.Stats(); s.BufferBytes > 2*kcopyd.SplitCount*(16<<10) {
		t.Fatalf("client holds %d bytes of buffer, above its bound", s.BufferBytes)
	}
}

// TestCallbackMaySubmit checks spec §2.11: a callback can submit a new job,
// and Close waits for the chain to finish.
func TestCallbackMaySubmit(t *testing.T) {
	c, err := kcopyd.NewClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	src := device.NewMemFrom(randomBytes(2, 64<<10))
	dst := device.NewMem(64 << 10)
	var steps atomic.Int32
	var next func(bool, uint64, error)
	next = func(bool, uint64, error) {
		i := int64(steps.Add(1))
		if i < 16 {
			if _, err := c.Copy(context.Background(), kcopyd.Region{Dev: src, Off: i * 4096, Len: 4096},
				[]kcopyd.Region{{Dev: dst, Off: i * 4096, Len: 4096}}, 0, next); err != nil {
				t.Error(err)
			}
		}
	}
	if _, err := c.Copy(context.Background(), kcopyd.Region{Dev: src, Len: 4096}, []kcopyd.Region{{Dev: dst, Len: 4096}}, 0, next); err != nil {
		t.Fatal(err)
	}
	if err := c.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if steps.Load() != 16 {
		t.Fatalf("%d steps ran; want 16", steps.Load())
	}
	if !bytes.Equal(contents(t, dst, 0, 64<<10), contents(t, src, 0, 64<<10)) {
		t.Fatal("chained copies did not copy everything")
	}
}

func TestZeroLengthCompletesLater(t *testing.T) {
	c := newClient(t, nil)
	dst := device.NewMem(10)
	// Hold the worker in a callback of its own, so that a callback that
	// runs before Copy returns can only have run inside Copy (the check
	// below once raced with the worker running it promptly).
	gate, held := make(chan struct{}), make(chan struct{})
	h, err := c.PrepareCallback(func(bool, uint64, error) { close(held); <-gate })
	if err != nil {
		t.Fatal(err)
	}
	c.DoCallback(h, false, 0)
	<-held
	var ran atomic.Bool
	job, err := c.Copy(context.Background(), kcopyd.Region{Dev: device.NewMem(10)}, []kcopyd.Region{{Dev: dst}}, 0,
		func(r bool, w uint64, err error) {
			if r || w != 0 || err != nil {
				t.Errorf("zero-length job: %v %v %v", r, w, err)
			}
			ran.Store(true)
		})
	if err != nil {
		t.Fatal(err)
	}
	if ran.Load() {
		// Spec §8.1: never inline.
		t.Fatal("callback ran inside Copy")
	}
	close(gate)
	if err := job.Wait(context.Background()); err != nil || !ran.Load() {
		t.Fatalf("Wait = %v, ran = %v", err, ran.Load())
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []kcopyd.Options{
		{SubJobSize: 1000},
		{SubJobSize: 128 << 20},
		{SubJobSize: 1 << 20, MaxMemory: 1 << 19},
		{IOWorkers: -1},
	} {
		if c, err := kcopyd.NewClient(&o); err == nil {
			c.Close()
			t.Errorf("NewClient(%+v) succeeded", o)
		}
	}
}

// TestIndexSweep fails the i-th device operation of a multi-chunk copy to
// three destinations, for every i, with and without IgnoreError: every job
// must complete exactly once, report the failure, keep healthy bytes, and
// leak nothing (TestMain checks goroutines).
func TestIndexSweep(t *testing.T) {
	const sub, n = 16 << 10, 10*(16<<10) + 777
	data := randomBytes(8, n)
	setup := func(inj faultdev.Injector) (*faultdev.Device, []*faultdev.Device) {
		src := faultdev.Wrap(device.NewMemFrom(append([]byte(nil), data...)), inj)
		var ds []*faultdev.Device
		for range 3 {
			ds = append(ds, faultdev.Wrap(device.NewMem(n), inj))
		}
		return src, ds
	}
	// Count the operations of a clean run.
	counter := &faultdev.Counter{}
	src, ds := setup(counter)
	c := newClient(t, &kcopyd.Options{SubJobSize: sub})
	regions := func(ds []*faultdev.Device) []kcopyd.Region {
		var rs []kcopyd.Region
		for _, d := range ds {
			rs = append(rs, kcopyd.Region{Dev: d, Len: n})
		}
		return rs
	}
	if res := run(t, c, context.Background(), &kcopyd.Region{Dev: src, Len: n}, regions(ds), 0); res.err != nil {
		t.Fatal(res.err)
	}
	total := counter.Count()
	if total != 11*4 {
		t.Fatalf("clean run made %d operations; want 44 (11 reads + 33 writes)", total)
	}
	for _, flags := range []kcopyd.Flags{0, kcopyd.IgnoreError} {
		for i := range total {
			idx := faultdev.OnIndex(i)
			src, ds := setup(idx)
			res := run(t, c, context.Background(), &kcopyd.Region{Dev: src, Len: n}, regions(ds), flags)
			if !idx.Fired() {
				t.Fatalf("flags %d, i=%d: the fault never fired", flags, i)
			}
			var je *kcopyd.JobError
			if res.err == nil && flags&kcopyd.IgnoreError != 0 {
				// A one-off read fault is healed by the block-by-block
				// retry that IgnoreError makes: then every byte is right.
				for k, d := range ds {
					if x := firstDiff(contents(t, d, 0, n), data); x >= 0 {
						t.Fatalf("flags %d, i=%d: clean result but destination %d differs at %d", flags, i, k, x)
					}
				}
				continue
			}
			if !errors.As(res.err, &je) {
				t.Fatalf("flags %d, i=%d: err = %v; want a *JobError", flags, i, res.err)
			}
			if res.readErr == (res.writeErr != 0) {
				t.Fatalf("flags %d, i=%d: readErr %v writeErr %#b: want exactly one kind", flags, i, res.readErr, res.writeErr)
			}
			// Every destination holds the source over the completed prefix,
			// and with IgnoreError, everywhere outside the failed ranges.
			for k, d := range ds {
				got := contents(t, d, 0, n)
				if x := firstDiff(got[:je.Completed], data[:je.Completed]); x >= 0 {
					t.Fatalf("flags %d, i=%d: destination %d differs at %d inside Completed=%d", flags, i, k, x, je.Completed)
				}
				if flags&kcopyd.IgnoreError == 0 {
					continue
				}
				exp := append([]byte(nil), data...)
				for _, r := range je.ReadRanges {
					clear(exp[r.Off : r.Off+r.Len])
				}
				for _, r := range je.WriteRanges[k] {
					copy(exp[r.Off:r.Off+r.Len], got[r.Off:r.Off+r.Len])
				}
				if x := firstDiff(got, exp); x >= 0 {
					t.Fatalf("flags %d, i=%d: destination %d differs at %d outside the reported ranges", flags, i, k, x)
				}
			}
		}
	}
}

// TestCancel stops a long copy through its context: chunks in flight
// finish, the job ends with Canceled and a correct prefix.
func TestCancel(t *testing.T) {
	const sub, n = 64 << 10, 200 * (64 << 10)
	data := randomBytes(10, n)
	src := faultdev.Wrap(device.NewMemFrom(data), faultdev.Latency(2*time.Millisecond))
	dst := device.NewMem(n)
	c := newClient(t, &kcopyd.Options{SubJobSize: sub})
	ctx, cancel := context.WithCancel(context.Background())
	job, err := c.Copy(ctx, kcopyd.Region{Dev: src, Len: n}, []kcopyd.Region{{Dev: dst, Len: n}}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	for job.Progress() < 10*sub {
		time.Sleep(time.Millisecond)
	}
	cancel()
	err = job.Wait(context.Background())
	var je *kcopyd.JobError
	if !errors.As(err, &je) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v; want a *JobError wrapping context.Canceled", err)
	}
	if je.Completed < 10*sub || je.Completed >= n || je.Completed%sub != 0 {
		t.Fatalf("Completed = %d; want a chunk boundary between %d and %d", je.Completed, 10*sub, n)
	}
	if k := firstDiff(contents(t, dst, 0, je.Completed), data[:je.Completed]); k >= 0 {
		t.Fatalf("destination differs at %d inside the completed prefix", k)
	}
	if job.Progress() < je.Completed {
		t.Fatalf("Progress %d < Completed %d", job.Progress(), je.Completed)
	}
}

func TestDoCallbackTwicePanics(t *testing.T) {
	c := newClient(t, nil)
	h, _ := c.PrepareCallback(func(bool, uint64, error) {})
	c.DoCallback(h, false, 0)
	defer func() {
		if recover() == nil {
			t.Fatal("second DoCallback did not panic")
		}
	}()
	c.DoCallback(h, false, 0)
}

// TestMemoryBound runs many large jobs at once and checks the buffer pool
// never exceeds MaxMemory (spec §6.4, with the bound the kernel lacks).
func TestMemoryBound(t *testing.T) {
	const sub = 64 << 10
	const limit = 3 * sub
	c := newClient(t, &kcopyd.Options{SubJobSize: sub, MaxMemory: limit})
	src := device.NewMemFrom(randomBytes(12, 4<<20))
	var jobs []*kcopyd.Job
	var dsts []*device.Mem
	for range 10 {
		d := device.NewMem(4 << 20)
		dsts = append(dsts, d)
		j, err := c.Copy(context.Background(), kcopyd.Region{Dev: src, Len: 4 << 20}, []kcopyd.Region{{Dev: d, Len: 4 << 20}}, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j)
	}
	for _, j := range jobs {
		if err := j.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if s := c.Stats(); s.BufferBytes > limit || s.PeakBufferBytes > limit {
		t.Fatalf("stats %+v exceed the bound %d", s, limit)
	}
	for i, d := range dsts {
		if !bytes.Equal(contents(t, d, 0, 4<<20), contents(t, src, 0, 4<<20)) {
			t.Fatalf("destination %d differs", i)
		}
	}
}

func TestThrottleRate(t *testing.T) {
	th := kcopyd.NewThrottle(100)
	th.SetRate(1 << 20) // 1 MiB/s
	c := newClient(t, &kcopyd.Options{SubJobSize: 64 << 10, Throttle: th})
	ctx, cancel := context.WithCancel(context.Background())
	job, err := c.Copy(ctx, kcopyd.Region{Dev: device.NewMem(64 << 20), Len: 64 << 20},
		[]kcopyd.Region{{Dev: device.NewMem(64 << 20), Len: 64 << 20}}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	// At 1 MiB/s with a one-second burst, far less than 64 MiB can be done.
	if p := job.Progress(); p >= 16<<20 {
		t.Fatalf("progress %d after 100 ms at 1 MiB/s", p)
	}
	th.SetRate(0) // lift it while running
	if err := job.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
}

func TestThrottleGroupCancel(t *testing.T) {
	th := kcopyd.NewThrottle(100)
	th.SetRate(64 << 10)
	c1 := newClient(t, &kcopyd.Options{SubJobSize: 64 << 10, Throttle: th})
	c2 := newClient(t, &kcopyd.Options{SubJobSize: 64 << 10, Throttle: th})
	ctx, cancel := context.WithCancel(context.Background())
	var jobs []*kcopyd.Job
	for _, c := range []*kcopyd.Client{c1, c2} {
		j, err := c.Copy(ctx, kcopyd.Region{Dev: device.NewMem(8 << 20), Len: 8 << 20},
			[]kcopyd.Region{{Dev: device.NewMem(8 << 20), Len: 8 << 20}}, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j)
	}
	time.Sleep(50 * time.Millisecond)
	cancel() // a throttled wait must end with the context
	for _, j := range jobs {
		if err := j.Wait(context.Background()); !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait = %v; want context.Canceled", err)
		}
	}
}

// placed is a window at base onto another device, like a partition.
type placed struct {
	device.Device
	store string
	base  int64
}

func (p placed) Placement() (string, int64) { return p.store, p.base }

// TestOverlapThroughPlacement refuses a copy from a disk to its own
// partition when the ranges meet on the disk, and allows it when not.
func TestOverlapThroughPlacement(t *testing.T) {
	c := newClient(t, nil)
	disk := device.NewMem(1 << 20)
	part := placed{Device: device.NewMem(1 << 19), store: device.IdentityOf(disk), base: 1 << 19}
	if _, err := c.Copy(context.Background(), kcopyd.Region{Dev: disk, Off: 1<<19 + 2048, Len: 4096},
		[]kcopyd.Region{{Dev: part, Off: 0, Len: 4096}}, 0, nil); !errors.Is(err, kcopyd.ErrOverlap) {
		t.Fatalf("disk [514 KiB, +4 KiB) to partition [0, +4 KiB) at 512 KiB = %v; want ErrOverlap", err)
	}
	if _, err := c.Copy(context.Background(), kcopyd.Region{Dev: disk, Off: 0, Len: 4096},
		[]kcopyd.Region{{Dev: part, Off: 0, Len: 4096}}, 0, nil); err != nil {
		t.Fatalf("disk [0, +4 KiB) to the partition: %v", err)
	}
	c.Drain(context.Background())
}

// TestFlush checks spec §1.7: callbacks queued before Flush have run when
// it returns.
func TestFlush(t *testing.T) {
	c := newClient(t, nil)
	var ran atomic.Int32
	for range 10 {
		h, err := c.PrepareCallback(func(bool, uint64, error) { ran.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		c.DoCallback(h, false, 0)
	}
	c.Flush()
	if n := ran.Load(); n != 10 {
		t.Fatalf("%d of 10 fired callbacks ran before Flush returned", n)
	}
}

// TestDirectOddSizedFile copies a file whose size is not a multiple of the
// O_DIRECT alignment, as an operator copying an odd-sized image with
// --direct does: the last chunk ends at the end of the file.
func TestDirectOddSizedFile(t *testing.T) {
	dir := t.TempDir()
	const n = 3<<20 + 1234
	data := randomBytes(50, n)
	if err := os.WriteFile(filepath.Join(dir, "src"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := device.OpenFile(filepath.Join(dir, "src"), device.FileOptions{ReadOnly: true, Direct: true})
	if errors.Is(err, device.ErrNotSupported) {
		t.Skipf("O_DIRECT not supported on %s: %v", dir, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := device.CreateFile(filepath.Join(dir, "dst"), n, device.FileOptions{Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if device.LimitsOf(src).OffsetAlign <= 1 {
		t.Skip("the filesystem reports no O_DIRECT alignment")
	}
	c := newClient(t, nil)
	if res := run(t, c, context.Background(), &kcopyd.Region{Dev: src, Len: n}, []kcopyd.Region{{Dev: dst, Len: n}}, 0); res.err != nil {
		t.Fatal(res.err)
	}
	if k := firstDiff(contents(t, dst, 0, n), data); k >= 0 {
		t.Fatalf("destination differs at %d", k)
	}
	// An unaligned length that does not end at the end is refused.
	if _, err := c.Copy(context.Background(), kcopyd.Region{Dev: src, Len: 1000}, []kcopyd.Region{{Dev: dst, Len: 1000}}, 0, nil); !errors.Is(err, kcopyd.ErrAlignment) {
		t.Fatalf("unaligned copy in the middle = %v; want ErrAlignment", err)
	}
}
