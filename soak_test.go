package kcopyd_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
)

var (
	soakSeed = flag.Uint64("soak.seed", 0, "TestSoak: random seed (0: from the clock, or $KCOPYD_SOAK_SEED)")
	soakTime = flag.Duration("soak.time", 0, "TestSoak: how long to submit jobs (0: $KCOPYD_SOAK_TIME, else 2m)")
)

// soakConfig returns the soak test's seed and duration from the flags, the
// environment, or the defaults.
func soakConfig(t *testing.T) (seed uint64, d time.Duration) {
	seed, d = *soakSeed, *soakTime
	if s := os.Getenv("KCOPYD_SOAK_SEED"); seed == 0 && s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KCOPYD_SOAK_SEED=%q: %v", s, err)
		}
		seed = n
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	if s := os.Getenv("KCOPYD_SOAK_TIME"); d == 0 && s != "" {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("KCOPYD_SOAK_TIME=%q: %v", s, err)
		}
		d = v
	}
	if d == 0 {
		d = 2 * time.Minute
	}
	return seed, d
}

// soak is the shared state of TestSoak: devices, a pool of clients that
// goroutines close and replace at random, and counters.
type soak struct {
	seed    uint64
	data    []byte        // the source's contents
	src     device.Device // faulty source
	dsts    [3]device.Device
	mems    [3]*device.Mem // what the destinations hold
	faults  []*faultdev.Toggle
	th      *kcopyd.Throttle
	opts    []kcopyd.Options
	clients [3]atomic.Pointer[kcopyd.Client]

	jobs, failed, canceled, closes, refused atomic.Int64
}

const (
	soakSlot    = 256 << 10 // each goroutine owns slots of this size
	soakSlots   = 8         // per goroutine
	soakWorkers = 8
	soakSize    = soakWorkers * soakSlots * soakSlot
)

// TestSoak runs tens of thousands of random copy and zero jobs of random
// sizes from many goroutines on several clients that share a throttle,
// with random read, write and short-transfer faults, random cancellation,
// and clients closed and replaced at random while others submit to them.
// Each goroutine owns its slots of the destinations and checks every job
// when it ends: exactly one callback, agreeing with Wait, and the first
// Completed bytes right on every destination. At the end faults are
// switched off, every slot whose last job failed is copied again, and
// every byte of every destination is checked. Run with -race; the seed
// is printed and set with -soak.seed or $KCOPYD_SOAK_SEED, the duration
// with -soak.time or $KCOPYD_SOAK_TIME (default 2m).
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test skipped with -short")
	}
	seed, dur := soakConfig(t)
	t.Logf("seed %d (rerun: go test -race -run TestSoak -soak.seed %d -soak.time %v .)", seed, seed, dur)
	s := newSoak(seed)
	defer s.closeClients(t)

	deadline := time.Now().Add(dur)
	stopKnobs := s.turnKnobs(deadline)
	var wg sync.WaitGroup
	want := make([][]byte, soakWorkers) // per worker: its slots' expected contents, nil = unknown
	for w := range soakWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want[w] = s.worker(t, w, deadline)
		}()
	}
	wg.Wait()
	stopKnobs()
	for _, f := range s.faults {
		f.Off()
	}
	s.repairAndCheck(t, want)
	t.Logf("%d jobs (%d failed, %d canceled), %d client closes, %d submissions refused by a closed client, %d bytes checked",
		s.jobs.Load(), s.failed.Load(), s.canceled.Load(), s.closes.Load(), s.refused.Load(), 3*int64(soakSize))
}

func newSoak(seed uint64) *soak {
	s := &soak{seed: seed, data: randomBytes(seed, soakSize), th: kcopyd.NewThrottle(100)}
	eio := faultdev.Always(syscall.EIO)
	toggle := func(inj faultdev.Injector) faultdev.Injector {
		tg := faultdev.NewToggle(inj)
		tg.On()
		s.faults = append(s.faults, tg)
		return tg
	}
	s.src = faultdev.Wrap(device.NewMemFrom(append([]byte(nil), s.data...)), toggle(faultdev.Any(
		faultdev.Random(seed, 0.001, eio),
		faultdev.Random(seed+1, 0.0005, faultdev.ShortIO(nil)),
	)))
	for i := range s.dsts {
		s.mems[i] = device.NewMem(soakSize)
		s.dsts[i] = faultdev.Wrap(s.mems[i], toggle(faultdev.Any(
			faultdev.Random(seed+10+uint64(i), 0.0005, eio),
			faultdev.Random(seed+20+uint64(i), 0.0002, faultdev.ShortIO(nil)),
		)))
	}
	s.opts = []kcopyd.Options{
		{SubJobSize: 4096, MaxMemory: 64 << 10, Throttle: s.th, IOWorkers: 8},
		{SubJobSize: 16 << 10, Throttle: s.th, IOWorkers: 16},
		{SubJobSize: 64 << 10, MaxMemory: 256 << 10, Throttle: s.th},
	}
	for i := range s.clients {
		s.clients[i].Store(s.newClient(i))
	}
	return s
}

func (s *soak) newClient(i int) *kcopyd.Client {
	c, err := kcopyd.NewClient(&s.opts[i])
	if err != nil {
		panic(err)
	}
	return c
}

// turnKnobs changes the shared throttle at random until deadline; the
// returned function stops it.
func (s *soak) turnKnobs(deadline time.Time) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(s.seed, 99))
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for time.Now().Before(deadline) {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			s.th.SetPercent([]int{100, 100, 95, 90}[r.IntN(4)])
			s.th.SetRate([]int64{0, 0, 1 << 30, 256 << 20}[r.IntN(4)])
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		s.th.SetPercent(100)
		s.th.SetRate(0)
	}
}

// worker submits random jobs to its own slots until deadline and returns
// their expected contents (nil where the last job failed).
func (s *soak) worker(t *testing.T, w int, deadline time.Time) []byte {
	r := rand.New(rand.NewPCG(s.seed, uint64(w)+1000))
	base := int64(w) * soakSlots * soakSlot
	known := make([]bool, soakSlots)
	for i := range known {
		known[i] = true // the destinations start as zeroes ...
	}
	want := make([]byte, soakSlots*soakSlot) // ... and so does want
	for time.Now().Before(deadline) && !t.Failed() {
		slot := r.IntN(soakSlots)
		// Log-uniform lengths from 1 byte to the slot size.
		n := min(int64(1)<<r.IntN(19)+r.Int64N(1<<r.IntN(18)+1), soakSlot)
		off := base + int64(slot)*soakSlot + r.Int64N(soakSlot-n+1)
		ok := s.runJob(t, r, off, n, r.IntN(5) == 0, want[off-base:off-base+n])
		known[slot] = known[slot] && ok
		if r.IntN(2000) == 0 {
			s.replaceClient(r.IntN(len(s.clients)))
		}
	}
	for i, k := range known {
		if !k {
			// A failed job left bytes unknown; repairAndCheck rewrites
			// the slot.
			copy(want[i*soakSlot:(i+1)*soakSlot], unknownSlot)
		}
	}
	return want
}

// unknownSlot marks a slot whose contents are unknown: no job writes 0xA5
// repeated over a whole slot.
var unknownSlot = bytes.Repeat([]byte{0xA5}, soakSlot)

// runJob runs one random job on [off, off+n) of 1 to 3 destinations, waits
// for it, checks it and reports whether it succeeded; on success want
// (the slot's expected bytes for that range) is updated.
func (s *soak) runJob(t *testing.T, r *rand.Rand, off, n int64, zero bool, want []byte) bool {
	nd := 1 + r.IntN(len(s.dsts))
	// Every job writes all three destinations' range, so that they stay
	// alike: jobs to fewer destinations are followed by one to the rest.
	flags := []kcopyd.Flags{0, kcopyd.IgnoreError, kcopyd.DetectZeroes, kcopyd.WriteSeq}[r.IntN(4)]
	ok := true
	for first := 0; first < len(s.dsts); first += nd {
		last := min(first+nd, len(s.dsts))
		ok = s.runOne(t, r, off, n, zero, flags, s.dsts[first:last], s.mems[first:last]) && ok
	}
	if ok {
		if zero {
			clear(want)
		} else {
			copy(want, s.data[off:off+n])
		}
	}
	return ok
}

// runOne submits one job to dsts, retrying on a client closed under it,
// and checks its outcome. It reports whether the job succeeded.
func (s *soak) runOne(t *testing.T, r *rand.Rand, off, n int64, zero bool, flags kcopyd.Flags, dsts []device.Device, mems []*device.Mem) bool {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	switch r.IntN(20) {
	case 0:
		cancel() // canceled before it starts
	case 1:
		time.AfterFunc(time.Duration(r.IntN(2000))*time.Microsecond, cancel)
	}
	regs := make([]kcopyd.Region, len(dsts))
	for i, d := range dsts {
		regs[i] = kcopyd.Region{Dev: d, Off: off, Len: n}
	}
	var calls atomic.Int32
	var cbErr error
	fn := func(_ bool, _ uint64, err error) {
		cbErr = err
		calls.Add(1)
	}
	var job *kcopyd.Job
	for {
		c := s.clients[r.IntN(len(s.clients))].Load()
		var err error
		if zero {
			job, err = c.Zero(ctx, regs, flags, fn)
		} else {
			job, err = c.Copy(ctx, kcopyd.Region{Dev: s.src, Off: off, Len: n}, regs, flags, fn)
		}
		if errors.Is(err, kcopyd.ErrClosed) {
			s.refused.Add(1)
			continue
		}
		if err != nil {
			t.Errorf("job [%d, +%d) refused: %v (seed %d)", off, n, err, s.seed)
			return false
		}
		break
	}
	err := job.Wait(context.Background())
	s.jobs.Add(1)
	if c := calls.Load(); c != 1 || (cbErr == nil) != (err == nil) {
		t.Errorf("job [%d, +%d): %d callbacks with %v, Wait %v; want one, agreeing (seed %d)", off, n, c, cbErr, err, s.seed)
	}
	if err == nil {
		return true
	}
	s.failed.Add(1)
	var je *kcopyd.JobError
	if !errors.As(err, &je) {
		t.Errorf("job [%d, +%d) failed with %T %v; want a *JobError (seed %d)", off, n, err, err, s.seed)
		return false
	}
	if je.Canceled != nil {
		s.canceled.Add(1)
	}
	// Completed is a promise: that prefix is on every destination (with
	// IgnoreError, less the zero-filled ranges, which it does not count).
	if len(je.ReadRanges) == 0 {
		want := s.data[off : off+je.Completed]
		if zero {
			want = make([]byte, je.Completed)
		}
		for i, m := range mems {
			if got := contents(t, m, off, je.Completed); !bytes.Equal(got, want) {
				t.Errorf("job [%d, +%d) to %d destinations: Completed %d, but destination %d differs at %d (seed %d)", off, n, len(mems), je.Completed, i, firstDiff(got, want), s.seed)
			}
		}
	}
	return false
}

// replaceClient closes client i, possibly while other goroutines submit to
// it, and puts a new one in its place.
func (s *soak) replaceClient(i int) {
	old := s.clients[i].Swap(s.newClient(i))
	old.Close()
	s.closes.Add(1)
}

func (s *soak) closeClients(t *testing.T) {
	for i := range s.clients {
		if err := s.clients[i].Load().Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

// repairAndCheck copies again, without faults, every slot whose contents
// are unknown, then compares every byte of every destination with want.
func (s *soak) repairAndCheck(t *testing.T, want [][]byte) {
	c := s.clients[0].Load()
	regs := func(off, n int64) []kcopyd.Region {
		var out []kcopyd.Region
		for _, d := range s.dsts {
			out = append(out, kcopyd.Region{Dev: d, Off: off, Len: n})
		}
		return out
	}
	for w, wb := range want {
		for i := range soakSlots {
			slot := wb[i*soakSlot : (i+1)*soakSlot]
			if !bytes.Equal(slot, unknownSlot) {
				continue
			}
			off := int64(w*soakSlots+i) * soakSlot
			job, err := c.Copy(context.Background(), kcopyd.Region{Dev: s.src, Off: off, Len: soakSlot}, regs(off, soakSlot), 0, nil)
			if err == nil {
				err = job.Wait(context.Background())
			}
			if err != nil {
				t.Fatalf("repair copy of slot at %d without faults: %v (seed %d)", off, err, s.seed)
			}
			copy(slot, s.data[off:off+soakSlot])
		}
	}
	all := bytes.Join(want, nil)
	for i, m := range s.mems {
		if got := contents(t, m, 0, soakSize); !bytes.Equal(got, all) {
			t.Errorf("destination %d differs from what its successful jobs wrote at byte %d (seed %d)", i, firstDiff(got, all), s.seed)
		}
	}
}
