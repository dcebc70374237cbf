package clone_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/clone"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

// errCrashed is returned by devices of a world that crashed.
var errCrashed = errors.New("crashed")

// world is a set of devices with volatile write caches that crash
// together, at once, after a given number of operations: a power cut.
type world struct {
	rw      sync.RWMutex // held for reading by each operation, for writing by the crash
	ops     atomic.Int64
	crashAt atomic.Int64 // crash when ops reaches it; 0: never
	crashed bool         // guarded by rw
	devs    []*cacheDev
	rng     *rand.Rand // tears the caches at the crash; used under rw
	done    chan struct{}
}

func newWorld(seed uint64) *world {
	return &world{rng: rand.New(rand.NewPCG(seed, 77)), done: make(chan struct{})}
}

// arm makes the world crash at its n-th operation from now.
func (w *world) arm(n int64) { w.crashAt.Store(w.ops.Load() + n) }

// cacheDev is a device with a volatile write cache: writes are visible at
// once but durable only after Flush. At a crash each cached write
// survives, sector by sector, or not, at random.
type cacheDev struct {
	w       *world
	id      string
	mu      sync.Mutex // guards the fields below between crashes
	visible []byte     // what reads see
	durable []byte
	pending []write // since the last Flush, in order
}

type write struct {
	off  int64
	data []byte
}

func (w *world) newDev(id string, image []byte) *cacheDev {
	d := &cacheDev{w: w, id: id, visible: bytes.Clone(image), durable: bytes.Clone(image)}
	w.devs = append(w.devs, d)
	return d
}

// op runs fn as one operation of the world, unless it crashed; the
// crashAt-th operation crashes the world instead.
func (d *cacheDev) op(fn func()) error {
	if n := d.w.ops.Add(1); n == d.w.crashAt.Load() {
		d.w.crash()
	}
	d.w.rw.RLock()
	defer d.w.rw.RUnlock()
	if d.w.crashed {
		return errCrashed
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	fn()
	return nil
}

func (w *world) crash() {
	w.rw.Lock()
	defer w.rw.Unlock()
	if w.crashed {
		return
	}
	w.crashed = true
	for _, d := range w.devs {
		for _, p := range d.pending {
			for s := int64(0); s < int64(len(p.data)); s += 512 {
				if w.rng.IntN(2) == 0 {
					copy(d.durable[p.off+s:], p.data[s:min(s+512, int64(len(p.data)))])
				}
			}
		}
		d.pending = nil
	}
	close(w.done)
}

func (d *cacheDev) Size() int64      { return int64(len(d.visible)) }
func (d *cacheDev) Identity() string { return d.id }
func (d *cacheDev) Close() error     { return nil }
func (d *cacheDev) String() string   { return d.id }

func (d *cacheDev) ReadAt(p []byte, off int64) (int, error) {
	if off >= d.Size() {
		return 0, errors.New("read past the end")
	}
	var n int
	err := d.op(func() { n = copy(p, d.visible[off:]) })
	if err == nil && n < len(p) {
		err = errors.New("short read")
	}
	return n, err
}

func (d *cacheDev) WriteAt(p []byte, off int64) (int, error) {
	if err := device.CheckRange(off, int64(len(p)), d.Size(), 1); err != nil {
		return 0, err
	}
	err := d.op(func() {
		copy(d.visible[off:], p)
		d.pending = append(d.pending, write{off, bytes.Clone(p)})
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (d *cacheDev) Flush() error {
	return d.op(func() {
		copy(d.durable, d.visible)
		d.pending = nil
	})
}

// model tracks what the clone must read as after a crash: per byte, the
// value of the newest write that a completed Flush covered (or the base),
// or the value of any later write to it.
type model struct {
	mu      sync.Mutex
	base    []byte
	writes  []modelWrite
	acks    int64 // writes acknowledged so far
	covered int64 // writes with ack <= covered are durable
}

type modelWrite struct {
	off  int64
	data []byte
	ack  int64 // 0 while in flight
}

func (m *model) issue(off int64, data []byte) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes = append(m.writes, modelWrite{off: off, data: data})
	return len(m.writes) - 1
}

func (m *model) ack(i int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.acks++
	m.writes[i].ack = m.acks
}

func (m *model) flushStart() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.acks
}

func (m *model) flushDone(start int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.covered = max(m.covered, start)
}

// check verifies got against the model and makes it the new base. Writes
// to one byte come from one goroutine, so their order in writes is their
// order on the device.
func (m *model) check(got []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := bytes.Clone(m.base)
	later := make([][]byte, len(got))
	for _, w := range m.writes {
		durable := w.ack != 0 && w.ack <= m.covered
		for j, v := range w.data {
			i := w.off + int64(j)
			if durable {
				want[i], later[i] = v, later[i][:0]
			} else {
				later[i] = append(later[i], v)
			}
		}
	}
	for i := range got {
		if got[i] != want[i] && bytes.IndexByte(later[i], got[i]) < 0 {
			return fmt.Errorf("byte %d = %#x; want %#x (flushed) or one of %x (unflushed)", i, got[i], want[i], later[i])
		}
	}
	m.base = bytes.Clone(got)
	m.writes, m.acks, m.covered = nil, 0, 0
	return nil
}

// crashCfg is the geometry of a crash test.
type crashCfg struct {
	size, rs int64
	writers  int
}

// writer issues random writes, within the regions it owns (runs of three
// regions, dealt round-robin to the writers), and flushes now and then,
// until the world crashes or n writes are done.
func (cfg crashCfg) writer(c *clone.Clone, m *model, g int, rng *rand.Rand, n int, stop <-chan struct{}) {
	runs := cfg.size / cfg.rs / 3
	for k := 0; k < n; k++ {
		select {
		case <-stop:
			return
		default:
		}
		run := int64(rng.IntN(int(runs/int64(cfg.writers))))*int64(cfg.writers) + int64(g)
		base := run * 3 * cfg.rs
		var off, length int64
		switch rng.IntN(3) {
		case 0: // whole regions
			off = base + int64(rng.IntN(3))*cfg.rs
			length = cfg.rs * int64(1+rng.IntN(int((base+3*cfg.rs-off)/cfg.rs)))
		default: // anywhere in the run
			off = base + rng.Int64N(3*cfg.rs-1)
			length = 1 + rng.Int64N(min(base+3*cfg.rs-off, 2*cfg.rs))
		}
		data := testutil.Pattern(rng.Uint64(), off, int(length))
		i := m.issue(off, data)
		if _, err := c.WriteAt(data, off); err != nil {
			return
		}
		m.ack(i)
		if rng.IntN(4) == 0 {
			start := m.flushStart()
			if c.Flush() != nil {
				return
			}
			m.flushDone(start)
		}
	}
}

// readUntil reads random blocks of c until stop is closed.
func readUntil(c *clone.Clone, rng *rand.Rand, stop <-chan struct{}) {
	buf := make([]byte, 4096)
	for {
		select {
		case <-stop:
			return
		default:
			c.ReadAt(buf, rng.Int64N(c.Size()-4096))
		}
	}
}

func crashSeed(t *testing.T) uint64 {
	if s := os.Getenv("CLONE_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// TestCrash cuts the power (drops, sector by sector at random, every write
// not flushed, on DEST and on the metadata at the same instant) at a
// random operation of a clone that hydrates in the background while
// writers write and flush, restarts it, checks that every flushed write is
// there and that the clone reads as SOURCE elsewhere (DEST starts with
// other data, so a region marked hydrated without its data would show),
// and goes on. At the end DEST must equal SOURCE with the writes applied.
func TestCrash(t *testing.T) {
	seed := crashSeed(t)
	t.Logf("seed %d (rerun with CLONE_CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	cfg := crashCfg{size: 1 << 20, rs: 4 << 10, writers: 2}
	rounds := 40
	if raceEnabled {
		rounds = 12
	}
	if testing.Short() {
		rounds = 4
	}
	src := testutil.RandomDevice(t, cfg.size, seed)
	defer src.Close()
	m := &model{base: src.Bytes()}
	dstImg := testutil.RandomDevice(t, cfg.size, seed+1).Bytes()
	mdImg := make([]byte, clone.MetadataSize(cfg.size, cfg.rs))
	for round := 0; round < rounds; round++ {
		w := newWorld(rng.Uint64())
		dst, md := w.newDev("dst", dstImg), w.newDev("md", mdImg)
		c := cfg.open(t, src, dst, md, round < rounds*3/4 || rng.IntN(4) != 0, rng.IntN(2) == 0)
		if round > 0 {
			if err := m.check(testutil.ReadRange(t, c, 0, cfg.size)); err != nil {
				t.Fatalf("round %d, after the crash: %v", round, err)
			}
		}
		w.arm(1 + rng.Int64N(3000))
		var wg sync.WaitGroup
		for g := range cfg.writers {
			wg.Add(1)
			r := rand.New(rand.NewPCG(rng.Uint64(), uint64(g)))
			go func() { defer wg.Done(); cfg.writer(c, m, g, r, 1+r.IntN(10), w.done) }()
		}
		wg.Wait()
		readUntil(c, rng, w.done) // the crash comes during hydration or reads
		t.Logf("round %d: %d writes, %d flushed; %d of %d regions hydrated", round, len(m.writes), m.covered, c.Status().HydratedRegions, c.Status().Regions)
		c.Close() // fails: the devices are gone
		dstImg, mdImg = dst.durable, md.durable
	}
	w := newWorld(0)
	dst, md := w.newDev("dst", dstImg), w.newDev("md", mdImg)
	c := cfg.open(t, src, dst, md, false, false)
	if err := m.check(testutil.ReadRange(t, c, 0, cfg.size)); err != nil {
		t.Fatalf("after the last crash: %v", err)
	}
	waitHydrated(t, c)
	closeClone(t, c)
	if !bytes.Equal(dst.durable, m.base) {
		t.Fatalf("DEST differs from SOURCE with the writes at byte %d", testutil.FirstDiff(dst.durable, m.base))
	}
}

// open opens a clone for a round: slow throttles background hydration,
// and flushOnly leaves commits to Flush (no periodic commit in practice).
func (cfg crashCfg) open(t *testing.T, src, dst, md device.Device, slow, flushOnly bool) *clone.Clone {
	t.Helper()
	th := kcopyd.NewThrottle(100)
	if slow {
		th.SetRate(16 << 10) // hydration spans most rounds
	}
	interval := 5 * time.Millisecond
	if flushOnly {
		interval = time.Hour
	}
	c, err := clone.Open(src, dst, md, &clone.Options{
		RegionSize: cfg.rs, BatchSize: 3, Throttle: th,
		CommitInterval: interval, RetryInterval: time.Millisecond,
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return c
}
