package clone

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
)

// Clone is a device that reads as SOURCE from the moment it is opened and
// copies SOURCE to DEST in the background, with dm-clone's semantics (see
// the package documentation). Its methods are safe for concurrent use.
type Clone struct {
	src, dst, md device.Device
	size         int64 // SOURCE's size: the clone's size
	rs           int64 // region size
	shift        uint  // log2(rs)
	regions      int64
	opts         Options
	limits       device.Limits
	fg, bg       *kcopyd.Client // on-demand (unthrottled) and background hydration
	batch        atomic.Int64

	// commitMu serializes commits and guards meta.
	commitMu  sync.Mutex
	meta      *meta
	committed atomic.Uint64 // sequence number of the newest successful commit

	hydrated     chan struct{} // closed when every region is hydrated and committed
	hydratedOnce sync.Once
	wake         chan struct{} // 1-buffered: a region lock was released
	cancel       context.CancelFunc
	wg           sync.WaitGroup

	// mu guards the in-memory state below. It is never held across I/O.
	mu struct {
		sync.Mutex
		bits     bitmap    // hydrated regions
		count    int64     // set bits in bits
		dirty    [2]bitmap // per slot: bitmap pages changed since the slot was written
		changed  bool      // bits changed since the last commit's snapshot
		started  uint64    // commits started: the sequence number of the newest snapshot
		locks    []*rangeLock
		failed   bitmap // regions whose last copy failed
		nfailed  int64
		retryAt  time.Time // failed regions are skipped until then
		single   int64     // regions below it are copied one per batch (after a batch of several failed)
		lastErr  error     // the newest hydration or commit failure
		failures int64     // failed copies since Open
		readErrs int64     // client reads that SOURCE failed
		inflight int       // client requests in flight
		idle     chan struct{}
		closed   bool
		copied   int64 // bytes copied from SOURCE since Open
		busy     int64 // regions being copied
		samples  []rateSample
	}
}

var (
	_ device.Device      = (*Clone)(nil)
	_ device.Limiter     = (*Clone)(nil)
	_ device.WriteZeroer = (*Clone)(nil)
	_ device.Discarder   = (*Clone)(nil)
	_ device.Flusher     = (*Clone)(nil)
	_ device.Extenter    = (*Clone)(nil)
)

// Open starts a clone of src onto dst, with its metadata on md, and
// returns it as a device of src's size that reads as src.
//
// md is blank (all zeroes, as a new file from MetadataSize is) for a new
// clone, or holds the metadata of an earlier run, which is loaded and
// must belong to the same SOURCE, DEST and region size: hydration resumes
// where the last commit left it. Open checks everything before it writes
// anything: a dst smaller than src, overlapping devices, a bad region
// size, metadata of another clone or a too small md fail with an error
// wrapping one of this package's sentinels, and nothing is written. A new
// clone's metadata is committed before Open returns.
//
// The devices stay the caller's: Close does not close them, and they must
// outlive the Clone. SOURCE must not change while the clone runs.
func Open(src, dst, md device.Device, opts *Options) (*Clone, error) {
	if err := checkDevices(src, dst, md); err != nil {
		return nil, err
	}
	rs := int64(0)
	if opts != nil {
		rs = opts.RegionSize
	}
	if rs == 0 {
		if rs = peekRegionSize(md, src.Size()); rs == 0 {
			rs = DefaultRegionSize
		}
	}
	if !ValidRegionSize(rs) {
		return nil, fmt.Errorf("%w: %d", ErrRegionSize, rs)
	}
	o, err := opts.clone(rs)
	if err != nil {
		return nil, err
	}
	geo := geometry{
		regionSize: rs,
		sourceSize: src.Size(),
		destSize:   dst.Size(),
		regions:    regionCount(src.Size(), rs),
		sourceID:   idOr(o.SourceID, src),
		destID:     idOr(o.DestID, dst),
	}
	m, bits, err := loadMeta(md, geo)
	if err != nil {
		return nil, err
	}
	c, err := newClone(src, dst, md, o, m, bits)
	if err != nil {
		return nil, err
	}
	if err := c.commit(); err != nil {
		return nil, errors.Join(err, c.stop())
	}
	c.start()
	return c, nil
}

// checkDevices refuses missing, empty, too small or overlapping devices.
func checkDevices(src, dst, md device.Device) error {
	if src == nil || dst == nil || md == nil {
		return errors.New("clone: nil device")
	}
	if src.Size() <= 0 {
		return fmt.Errorf("clone: SOURCE %s is empty", device.Name(src))
	}
	if dst.Size() < src.Size() {
		return fmt.Errorf("%w: DEST %s has %d bytes, SOURCE %s has %d",
			ErrDestTooSmall, device.Name(dst), dst.Size(), device.Name(src), src.Size())
	}
	pairs := [][2]device.Device{{src, dst}, {src, md}, {dst, md}}
	for _, p := range pairs {
		if overlap(p[0], p[1]) {
			return fmt.Errorf("%w: %s and %s are the same storage", ErrSameDevice, device.Name(p[0]), device.Name(p[1]))
		}
	}
	return nil
}

func overlap(a, b device.Device) bool {
	ida, offa := device.PlacementOf(a)
	idb, offb := device.PlacementOf(b)
	return ida == idb && offa < offb+b.Size() && offb < offa+a.Size()
}

// idOr returns id, or d's stable identity when id is empty: "" when d
// has no identity (device.Identifier), else where its data lies
// (device.PlacementOf), as "STORE" or "STORE@OFFSET". A block device's own
// identity is its device number, which the kernel hands out again: a loop
// device detached and attached to another file keeps its number, so a
// loop device is recorded as its backing file's identity and its offset in
// the file (a loop at offset 0 is the file itself, which it is), and a
// partition as its disk and start.
func idOr(id string, d device.Device) string {
	if id != "" {
		return id
	}
	for x := d; x != nil; {
		if _, ok := x.(device.Identifier); ok {
			store, off := device.PlacementOf(d)
			if off == 0 {
				return store
			}
			return fmt.Sprintf("%s@%d", store, off)
		}
		w, ok := x.(device.Wrapper)
		if !ok {
			break
		}
		x = w.Unwrap()
	}
	return ""
}

func newClone(src, dst, md device.Device, o Options, m *meta, bits bitmap) (*Clone, error) {
	c := &Clone{
		src: src, dst: dst, md: md,
		size: src.Size(), rs: o.RegionSize, regions: m.geo.regions,
		opts: o, meta: m,
		hydrated: make(chan struct{}),
		wake:     make(chan struct{}, 1),
	}
	for c.rs>>c.shift != 1 {
		c.shift++
	}
	c.batch.Store(int64(o.BatchSize))
	c.limits = combineLimits(src, dst)
	var err error
	if c.fg, err = kcopyd.NewClient(&kcopyd.Options{SubJobSize: o.SubJobSize}); err != nil {
		return nil, err
	}
	if c.bg, err = kcopyd.NewClient(&kcopyd.Options{SubJobSize: o.SubJobSize, Throttle: o.Throttle}); err != nil {
		return nil, errors.Join(err, c.fg.Close())
	}
	c.mu.bits = bits
	c.mu.count = bits.count()
	c.mu.failed = newBitmap(c.regions)
	pages := bitmapLen(c.regions) / metaPageSize
	for s := range c.mu.dirty {
		c.mu.dirty[s] = newBitmap(pages)
		if m.gen == 0 || s != m.slot {
			// A slot that does not hold the newest generation may
			// hold anything: its first write rewrites every page.
			c.mu.dirty[s].setRange(0, pages)
		}
	}
	c.mu.changed = m.gen == 0 // a new clone commits at once
	return c, nil
}

// start runs the committer and, unless disabled, background hydration.
func (c *Clone) start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(1)
	go c.committer(ctx)
	if !c.opts.NoHydration {
		c.wg.Add(1)
		go c.hydrator(ctx)
	}
	c.mu.Lock()
	done := c.mu.count == c.regions
	c.mu.Unlock()
	if done {
		c.markHydrated()
	}
}

// stop stops the goroutines and the engine clients.
func (c *Clone) stop() error {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
	return errors.Join(c.bg.Close(), c.fg.Close())
}

// combineLimits returns the constraints of a device that sends each
// request to src or dst.
func combineLimits(src, dst device.Device) device.Limits {
	s, d := device.LimitsOf(src), device.LimitsOf(dst)
	l := device.Limits{
		LogicalBlockSize: max(s.LogicalBlockSize, d.LogicalBlockSize, 1),
		OffsetAlign:      max(s.OffsetAlign, d.OffsetAlign),
		MemAlign:         max(s.MemAlign, d.MemAlign),
		MaxTransfer:      minPositive(s.MaxTransfer, d.MaxTransfer),
		MaxDiscard:       MaxRegionSize,
	}
	if _, ok := dst.(device.WriteZeroer); ok {
		l.MaxWriteZeroes = d.MaxWriteZeroes
	}
	return l
}

func minPositive(a, b int64) int64 {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// Close stops background hydration, waits for client requests in flight,
// commits the metadata (flushing DEST first) and stops the engine. It
// does not close SOURCE, DEST or the metadata device. A later call, and
// any request after Close, fails with an error wrapping device.ErrClosed.
// A commit failure is returned; the metadata then holds the previous
// commit, and the next Open resumes from there.
func (c *Clone) Close() error {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return fmt.Errorf("close %s: %w", c, device.ErrClosed)
	}
	c.mu.closed = true
	idle := c.mu.idle
	busy := c.mu.inflight > 0
	c.mu.Unlock()
	if busy {
		<-idle
	}
	c.cancel()
	c.wg.Wait()
	return errors.Join(c.commit(), c.bg.Close(), c.fg.Close())
}

// String returns a name for the clone.
func (c *Clone) String() string {
	return fmt.Sprintf("clone(%s→%s)", device.Name(c.src), device.Name(c.dst))
}

// Size implements device.Device: SOURCE's size.
func (c *Clone) Size() int64 { return c.size }

// Limits implements device.Limiter: the stricter alignment of SOURCE and
// DEST, DEST's write-zeroes, and discard always (it marks regions
// hydrated even when DEST cannot discard).
func (c *Clone) Limits() device.Limits { return c.limits }

// RegionSize returns the region size in bytes.
func (c *Clone) RegionSize() int64 { return c.rs }

// Throttle returns the throttle of background hydration; its percent and
// rate may be changed while the clone runs.
func (c *Clone) Throttle() *kcopyd.Throttle { return c.opts.Throttle }

// SetBatchSize changes the most regions one background job copies; n < 1
// means 1. Safe while the clone runs; the next batch uses it.
func (c *Clone) SetBatchSize(n int) { c.batch.Store(int64(max(n, 1))) }

// Hydrated returns a channel that is closed once every region is hydrated
// and that state is committed to the metadata.
func (c *Clone) Hydrated() <-chan struct{} { return c.hydrated }

func (c *Clone) markHydrated() { c.hydratedOnce.Do(func() { close(c.hydrated) }) }

// begin registers a client request; it fails once the clone is closed.
func (c *Clone) begin() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return device.ErrClosed
	}
	if c.mu.inflight == 0 {
		c.mu.idle = make(chan struct{})
	}
	c.mu.inflight++
	return nil
}

// end unregisters a client request.
func (c *Clone) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.inflight--; c.mu.inflight == 0 {
		close(c.mu.idle)
	}
}

func (c *Clone) ioError(op device.Op, off, length int64, err error) error {
	return &device.IOError{Op: op, Dev: c.String(), Off: off, Len: length, Err: err}
}
