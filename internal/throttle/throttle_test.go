package throttle_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/internal/throttle"
)

// fakeClock is a monotonic clock that only moves when slept on or advanced.
// It is safe for concurrent use.
type fakeClock struct {
	t        atomic.Int64 // nanoseconds
	nowCalls atomic.Int64
	sleeps   atomic.Int64
	slept    atomic.Int64 // nanoseconds
}

func (c *fakeClock) now() time.Duration {
	c.nowCalls.Add(1)
	return time.Duration(c.t.Load())
}

func (c *fakeClock) sleep(d time.Duration) {
	c.sleeps.Add(1)
	c.slept.Add(int64(d))
	c.t.Add(int64(d))
}

func (c *fakeClock) advance(d time.Duration) { c.t.Add(int64(d)) }

func newFake(tb testing.TB, percent int) (*throttle.Throttle, *fakeClock) {
	tb.Helper()
	c := new(fakeClock)
	return throttle.NewWithClock(percent, c.now, c.sleep), c
}

const ms = time.Millisecond

// checkStats compares the duty-cycle fields of t's stats with want.
func checkStats(tb testing.TB, step string, t *throttle.Throttle, want throttle.Stats) {
	tb.Helper()
	got := t.Stats()
	got.Rate, want.Rate = 0, 0
	if got != want {
		tb.Errorf("%s: Stats() = %+v; want %+v", step, got, want)
	}
}

func TestAccounting(t *testing.T) {
	th, c := newFake(t, 50)
	th.OnIssue() // d = 0: nothing accounted, no skew
	checkStats(t, "first issue", th, throttle.Stats{Percent: 50, Inflight: 1})
	c.advance(30 * ms)
	th.OnComplete() // busy 30 ms
	checkStats(t, "first completion", th, throttle.Stats{Percent: 50, IOTicks: 30, TotalTicks: 30})
	c.advance(70 * ms)
	th.OnIssue() // idle 70 ms: skew = 30 - 50*100/100 < 0
	checkStats(t, "second issue", th, throttle.Stats{Percent: 50, Inflight: 1, IOTicks: 30, TotalTicks: 100})

	// Overlapping I/O counts once: the period is the union.
	c.advance(10 * ms)
	th.OnIssue() // busy 10 ms (one in flight)
	checkStats(t, "overlapping issue", th, throttle.Stats{Percent: 50, Inflight: 2, IOTicks: 40, TotalTicks: 110})
	c.advance(10 * ms)
	th.OnComplete() // one still in flight: nothing accounted
	checkStats(t, "first of two completions", th, throttle.Stats{Percent: 50, Inflight: 1, IOTicks: 40, TotalTicks: 110})
	c.advance(10 * ms)
	th.OnComplete()
	checkStats(t, "last completion", th, throttle.Stats{Percent: 50, IOTicks: 60, TotalTicks: 130})

	// Sub-tick times truncate to ticks of the clock, not of the gap.
	c.advance(ms / 2)
	th.OnIssue()
	c.advance(ms / 2)
	th.OnComplete()
	checkStats(t, "sub-tick I/O", th, throttle.Stats{Percent: 50, IOTicks: 61, TotalTicks: 131})
	if c.sleeps.Load() != 0 {
		t.Errorf("%d sleeps; want 0", c.sleeps.Load())
	}
}

func TestDecay(t *testing.T) {
	th, c := newFake(t, 90)
	th.OnIssue()
	c.advance(1000 * ms)
	th.OnComplete()
	checkStats(t, "1 s busy", th, throttle.Stats{Percent: 90, IOTicks: 1000, TotalTicks: 1000})
	c.advance(48 * ms)
	// total 1048 >= 1024: k = bitlen(1) = 1, so io 500, total 524; skew =
	// 500 - 471 > 0: one sleep adds 100 idle ticks, skew = 500 - 561 < 0.
	th.OnIssue()
	checkStats(t, "decayed issue", th, throttle.Stats{Percent: 90, Inflight: 1, IOTicks: 500, TotalTicks: 624, Sleeps: 1})
	if got := c.sleeps.Load(); got != 1 {
		t.Errorf("%d sleeps; want 1", got)
	}

	// Completion never decays: 5 s of I/O stays 5000 ticks until the next
	// issue, which shifts by bitlen(5000>>10 = 4) = 3, not by log2(4) = 2.
	th, c = newFake(t, 99)
	th.OnIssue()
	c.advance(5 * time.Second)
	th.OnComplete()
	checkStats(t, "5 s busy", th, throttle.Stats{Percent: 99, IOTicks: 5000, TotalTicks: 5000})
	// 5000 >> 3 = 625 each; skew = 625 - 618 > 0: sleep; then total 725:
	// skew = 625 - 717 < 0.
	th.OnIssue()
	checkStats(t, "issue after 5 s", th, throttle.Stats{Percent: 99, Inflight: 1, IOTicks: 625, TotalTicks: 725, Sleeps: 1})
}

func TestClamp(t *testing.T) {
	tests := []struct{ in, want int }{{-5, 0}, {0, 0}, {1, 1}, {99, 99}, {100, 100}, {101, 100}, {1 << 40, 100}}
	for _, tt := range tests {
		if got := throttle.New(tt.in).Percent(); got != tt.want {
			t.Errorf("New(%d).Percent() = %d; want %d", tt.in, got, tt.want)
		}
		th := throttle.New(50)
		th.SetPercent(tt.in)
		if got := th.Percent(); got != tt.want {
			t.Errorf("SetPercent(%d); Percent() = %d; want %d", tt.in, got, tt.want)
		}
	}
}

func TestMaxSleeps(t *testing.T) {
	th, c := newFake(t, 0)
	th.OnIssue()
	c.advance(10 * ms)
	th.OnComplete() // io 10, total 10
	before := c.t.Load()
	th.OnIssue() // skew stays 10 > 0 through 10 sleeps (total 1010 < 1024)
	if got := c.sleeps.Load(); got != throttle.MaxSleeps {
		t.Errorf("OnIssue slept %d times; want %d", got, throttle.MaxSleeps)
	}
	if got := time.Duration(c.t.Load() - before); got != throttle.MaxSleeps*throttle.Sleep {
		t.Errorf("OnIssue stalled %v; want %v", got, throttle.MaxSleeps*throttle.Sleep)
	}
	checkStats(t, "after max sleeps", th, throttle.Stats{Inflight: 1, IOTicks: 10, TotalTicks: 1010, Sleeps: 10})

	// The next issue decays once on the way (1120 >= 1024) and still
	// gives up after 10 sleeps.
	c.advance(10 * ms)
	th.OnComplete()
	th.OnIssue()
	if got := c.sleeps.Load(); got != 2*throttle.MaxSleeps {
		t.Errorf("two issues slept %d times; want %d", got, 2*throttle.MaxSleeps)
	}
}

func TestNoThrottleAt100(t *testing.T) {
	th, c := newFake(t, 100)
	calls := c.nowCalls.Load()
	for range 1000 {
		th.OnIssue()
		th.OnIssue()
		c.advance(ms)
		th.OnComplete()
		th.OnComplete()
	}
	th.OnIssue()
	checkStats(t, "p=100", th, throttle.Stats{Percent: 100, Inflight: 1})
	if got := c.nowCalls.Load() - calls; got != 0 {
		t.Errorf("p=100: clock read %d times; want 0", got)
	}
	if c.sleeps.Load() != 0 {
		t.Errorf("p=100: %d sleeps; want 0", c.sleeps.Load())
	}
	if err := th.WaitBytes(context.Background(), 1<<30); err != nil {
		t.Errorf("WaitBytes with no rate: %v", err)
	}
	if got := c.nowCalls.Load() - calls; got != 0 {
		t.Errorf("WaitBytes with no rate: clock read %d times; want 0", got)
	}
}

func TestOnCompleteWithoutIssuePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Errorf("OnComplete without OnIssue did not panic")
		}
	}()
	throttle.New(50).OnComplete()
}

func TestNil(t *testing.T) {
	var th *throttle.Throttle
	th.OnIssue()
	th.OnComplete()
	if err := th.WaitBytes(context.Background(), 100); err != nil {
		t.Errorf("nil WaitBytes: %v", err)
	}
	if th.Percent() != 100 || th.Rate() != 0 || th.Stats() != (throttle.Stats{Percent: 100}) {
		t.Errorf("nil throttle: Percent %d, Rate %d, Stats %+v", th.Percent(), th.Rate(), th.Stats())
	}
}

// worker simulates one client issuing I/Os of length io back to back on the
// fake clock from time 0 to end, and returns the share of the time after
// from during which its I/O was in flight, and its issues per second then.
func worker(th *throttle.Throttle, c *fakeClock, io, from, end time.Duration) (busy float64, perSec float64) {
	var busyTime time.Duration
	issues := 0
	for time.Duration(c.t.Load()) < end {
		th.OnIssue()
		start := time.Duration(c.t.Load())
		c.advance(io)
		th.OnComplete()
		if start >= from {
			issues++
			busyTime += io
		}
	}
	span := time.Duration(c.t.Load()) - from
	return float64(busyTime) / float64(span), float64(issues) / span.Seconds()
}

func TestDutyCycle(t *testing.T) {
	for _, p := range []int{10, 25, 50, 75, 90} {
		for _, io := range []time.Duration{2 * ms, 10 * ms, 50 * ms} {
			th, c := newFake(t, p)
			// Measure after 30 s, once the window has settled.
			busy, _ := worker(th, c, io, 30*time.Second, 90*time.Second)
			// The 100 ms sleep quantum makes the kernel's algorithm
			// undershoot a little, never overshoot.
			if want := float64(p) / 100; busy > want+0.02 || busy < want-0.1 {
				t.Errorf("p=%d, I/O %v: busy %.3f of the time; want about %.2f", p, io, busy, want)
			}
		}
	}
}

func TestZeroPercent(t *testing.T) {
	for _, io := range []time.Duration{10 * ms, 50 * ms} {
		th, c := newFake(t, 0)
		_, perSec := worker(th, c, io, 10*time.Second, 2*time.Minute)
		if perSec < 0.9 || perSec > 1.05 {
			t.Errorf("p=0, I/O %v: %.2f issues per second; want about 1", io, perSec)
		}
	}
}

func TestSetPercentAtRuntime(t *testing.T) {
	th, c := newFake(t, 100)
	if busy, _ := worker(th, c, 10*ms, 0, 10*time.Second); busy != 1 {
		t.Fatalf("p=100: busy %.3f; want 1", busy)
	}
	if c.sleeps.Load() != 0 {
		t.Fatalf("p=100: %d sleeps", c.sleeps.Load())
	}
	// Lowering the throttle: the stale 10 s gap is absorbed by the decay
	// and the duty cycle converges to the new value.
	th.SetPercent(30)
	start := time.Duration(c.t.Load())
	busy, _ := worker(th, c, 10*ms, start+5*time.Second, start+time.Minute)
	if busy > 0.32 || busy < 0.2 {
		t.Errorf("after SetPercent(30): busy %.3f; want about 0.3", busy)
	}
	// Raising it back to 100 stops the sleeps at once.
	th.SetPercent(100)
	sleeps := c.sleeps.Load()
	start = time.Duration(c.t.Load())
	if busy, _ := worker(th, c, 10*ms, start, start+10*time.Second); busy != 1 || c.sleeps.Load() != sleeps {
		t.Errorf("after SetPercent(100): busy %.3f, %d more sleeps; want 1, 0", busy, c.sleeps.Load()-sleeps)
	}
}

// TestGroup shares a throttle between two clients, one goroutine each, on a
// shared fake clock. Under -race it checks the locking; the accounting must
// stay consistent.
func TestGroup(t *testing.T) {
	th, c := newFake(t, 20)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for range 300 {
				th.OnIssue()
				c.advance(5 * ms)
				th.OnComplete()
			}
		})
	}
	wg.Go(func() {
		for i := range 100 {
			th.SetPercent(10 + i%20)
			_ = th.Stats()
		}
		th.SetPercent(20)
	})
	wg.Wait()
	s := th.Stats()
	if s.Inflight != 0 || s.IOTicks > s.TotalTicks || s.IOTicks < 0 || s.TotalTicks >= 1<<throttle.Shift+int64(10*throttle.Sleep/throttle.Tick)*4 {
		t.Errorf("after the group ran: %+v", s)
	}
	if s.Sleeps == 0 || s.Sleeps != c.sleeps.Load() {
		t.Errorf("Stats().Sleeps = %d, clock saw %d sleeps; want equal and > 0", s.Sleeps, c.sleeps.Load())
	}
}

func TestRate(t *testing.T) {
	const mib = 1 << 20
	th, c := newFake(t, 100)
	th.SetRate(mib)
	if th.Rate() != mib || th.Stats().Rate != mib {
		t.Fatalf("Rate() = %d; want %d", th.Rate(), mib)
	}
	ctx := context.Background()
	steps := []struct {
		n     int64
		sleep time.Duration // the wait this call must take
	}{
		{mib, time.Second},           // the bucket starts empty: no burst at the start
		{mib, time.Second},           // then each MiB costs a second
		{10 * mib, 10 * time.Second}, // larger than the burst: waits for all of it
		{mib / 2, time.Second / 2},
		{0, 0},
	}
	for _, s := range steps {
		before := c.slept.Load()
		if err := th.WaitBytes(ctx, s.n); err != nil {
			t.Fatalf("WaitBytes(%d): %v", s.n, err)
		}
		if got := time.Duration(c.slept.Load() - before); got != s.sleep {
			t.Errorf("WaitBytes(%d) waited %v; want %v", s.n, got, s.sleep)
		}
	}
	// Idle time refills the bucket, up to Burst of credit.
	c.advance(5 * time.Second)
	before := c.slept.Load()
	th.WaitBytes(ctx, 2*mib)
	if got, want := time.Duration(c.slept.Load()-before), 2*time.Second-throttle.Burst; got != want {
		t.Errorf("after 5 s idle, WaitBytes(2 MiB) waited %v; want %v", got, want)
	}

	// A higher rate applies to later calls.
	th.SetRate(4 * mib)
	before = c.slept.Load()
	th.WaitBytes(ctx, 4*mib)
	if got := time.Duration(c.slept.Load() - before); got != time.Second {
		t.Errorf("at 4 MiB/s, WaitBytes(4 MiB) with no credit waited %v; want 1s", got)
	}

	// Turning the limit off: no waits, no clock reads.
	th.SetRate(0)
	calls := c.nowCalls.Load()
	if err := th.WaitBytes(ctx, 1<<40); err != nil || c.nowCalls.Load() != calls {
		t.Errorf("unlimited WaitBytes: %v, %d clock reads", err, c.nowCalls.Load()-calls)
	}
	// A huge request at a tiny rate saturates instead of overflowing.
	th.SetRate(1)
	if err := th.WaitBytes(ctx, 1<<62); err != nil {
		t.Errorf("WaitBytes(1<<62) at 1 B/s: %v", err)
	}
}

func TestRateCancel(t *testing.T) {
	th, c := newFake(t, 100)
	th.SetRate(1000)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := th.WaitBytes(ctx, 5000); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitBytes with a done context: %v; want context.Canceled", err)
	}
	// Cancelled while waiting: the credit comes back.
	c2 := new(fakeClock)
	ctx, cancel = context.WithCancel(context.Background())
	th2 := throttle.NewWithClock(100, c2.now, func(d time.Duration) { cancel(); c2.sleep(d) })
	th2.SetRate(1000)
	if err := th2.WaitBytes(ctx, 5000); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitBytes cancelled while waiting: %v; want context.Canceled", err)
	}
	// Both throttles must now behave as if the cancelled calls never
	// happened: 5000 bytes at 1000 B/s wait 5 s (the bucket started empty).
	for i, tc := range []struct {
		th *throttle.Throttle
		c  *fakeClock
	}{{th, c}, {th2, c2}} {
		tc.c.t.Store(0)
		before := tc.c.slept.Load()
		tc.th.WaitBytes(context.Background(), 5000)
		if got := time.Duration(tc.c.slept.Load() - before); got != 5*time.Second {
			t.Errorf("throttle %d: WaitBytes(5000) after a cancelled call waited %v; want 5s", i, got)
		}
	}
}

func TestRateRealClockCancel(t *testing.T) {
	th := throttle.New(100)
	th.SetRate(1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*ms)
	defer cancel()
	if err := th.WaitBytes(ctx, 1<<20); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitBytes(1 MiB) at 1 B/s with a 10 ms deadline: %v; want DeadlineExceeded", err)
	}
}

// TestRateConcurrent runs WaitBytes from several goroutines on a shared
// fake clock: every sleeper advances the clock by its own wait, so the clock
// runs at least as fast as real time would, and the bytes let through can
// never exceed what the rate allows over the elapsed time plus the burst.
func TestRateConcurrent(t *testing.T) {
	const rate = 1 << 20
	th, c := newFake(t, 100)
	th.SetRate(rate)
	var total atomic.Int64
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				n := int64(64<<10 + (g*50+i)%7*4096)
				if err := th.WaitBytes(context.Background(), n); err != nil {
					t.Error(err)
					return
				}
				total.Add(n)
			}
		})
	}
	wg.Wait()
	elapsed := time.Duration(c.t.Load())
	if allowed := int64((elapsed + throttle.Burst).Seconds() * rate); total.Load() > allowed {
		t.Errorf("%d bytes in %v at %d B/s; want at most %d", total.Load(), elapsed, rate, allowed)
	}
}

// Example shows the kernel's throttle sharing one I/O channel at 50 %.
func Example() {
	var now time.Duration
	th := throttle.NewWithClock(50, func() time.Duration { return now }, func(d time.Duration) { now += d })
	busy := time.Duration(0)
	for now < 10*time.Second {
		th.OnIssue()
		now += 20 * time.Millisecond // the I/O
		busy += 20 * time.Millisecond
		th.OnComplete()
	}
	fmt.Printf("busy %d%% of the time, %d sleeps of %v\n", 100*busy/now, th.Stats().Sleeps, throttle.Sleep)
	// Output:
	// busy 46% of the time, 54 sleeps of 100ms
}
