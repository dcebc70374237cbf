package clone_test

import (
	"bytes"
	"sync"
	"testing"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/clone"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

// gateDev holds reads that touch [off, off+n) until release is closed,
// after signalling entered once.
type gateDev struct {
	device.Device
	off, n  int64
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gateDev) ReadAt(p []byte, off int64) (int, error) {
	if off < g.off+g.n && g.off < off+int64(len(p)) {
		g.once.Do(func() { close(g.entered) })
		<-g.release
	}
	return g.Device.ReadAt(p, off)
}

// TestWriteWaitsForHydration: a whole-region write to a region whose
// on-demand hydration (for an earlier partial write) is reading SOURCE
// waits for that hydration; had it not, the copy would land over it.
func TestWriteWaitsForHydration(t *testing.T) {
	const rs = 64 << 10
	s := newSetup(t, 1<<20, rs, 13)
	g := &gateDev{Device: s.src, off: 5 * rs, n: rs, entered: make(chan struct{}), release: make(chan struct{})}
	waiting := make(chan struct{})
	var once sync.Once
	clone.SetLockWaitHook(func(lo, hi int64) {
		if lo == 5 {
			once.Do(func() { close(waiting) })
		}
	})
	defer clone.SetLockWaitHook(nil)
	c, err := clone.Open(g, s.dst, s.md, &clone.Options{RegionSize: rs, NoHydration: true})
	if err != nil {
		t.Fatal(err)
	}
	defer closeClone(t, c)
	var release sync.Once
	defer release.Do(func() { close(g.release) }) // also when the test fails
	a := testutil.Pattern(1, 5*rs+100, 100)
	b := testutil.Pattern(2, 5*rs, rs)
	errs := make(chan error, 2)
	go func() { _, err := c.WriteAt(a, 5*rs+100); errs <- err }()
	<-g.entered // the partial write is hydrating region 5
	go func() { _, err := c.WriteAt(b, 5*rs); errs <- err }()
	select {
	case <-waiting: // the whole-region write waits for it
	case err := <-errs:
		t.Fatalf("a write (err %v) finished while region 5 was being hydrated", err)
	}
	release.Do(func() { close(g.release) })
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.ReadRange(t, c, 5*rs, rs); !bytes.Equal(got, b) {
		t.Fatalf("region 5 differs from the later write at byte %d", testutil.FirstDiff(got, b))
	}
	if st := c.Status(); st.CopiedBytes != rs || st.HydratedRegions != 1 {
		t.Fatalf("Status = %+v; want one region copied and hydrated", st)
	}
}

// readSizes records the largest read of a device and signals after n reads.
type readSizes struct {
	device.Device
	mu      sync.Mutex
	max, n  int
	enough  chan struct{}
	reached int
}

func (d *readSizes) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	d.max = max(d.max, len(p))
	if d.n++; d.n == d.reached {
		close(d.enough)
	}
	d.mu.Unlock()
	return d.Device.ReadAt(p, off)
}

// TestThrottledBatch: under a byte rate a background batch holds at most
// what the rate copies in 100 ms, so that client requests do not wait for
// a whole batch at the throttled rate.
func TestThrottledBatch(t *testing.T) {
	const rs = 4 << 10
	s := newSetup(t, 1<<20, rs, 17)
	src := &readSizes{Device: s.src, enough: make(chan struct{}), reached: 3}
	th := kcopyd.NewThrottle(100)
	th.SetRate(80 << 10) // 8 KiB per 100 ms: 2 regions
	c, err := clone.Open(src, s.dst, s.md, &clone.Options{RegionSize: rs, BatchSize: 256, Throttle: th})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-src.enough:
	case <-c.Hydrated(): // too few reads: batches were too large
	}
	closeClone(t, c)
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.max > 2*rs {
		t.Fatalf("a background read of %d bytes; want batches of at most %d under the rate", src.max, 2*rs)
	}
}
