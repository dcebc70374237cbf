// Package throttle limits the I/O of copy clients in two ways: the kernel
// dm-kcopyd duty-cycle throttle, which caps the share of wall time during
// which I/O is outstanding, and a token bucket, which caps bytes per second.
//
// # Duty cycle
//
// A Throttle with percent p < 100 lets its clients keep I/O in flight
// about p % of the time, measured over a window of about one second
// (1024 ticks of 1 ms) that decays by halving. Before each submission a
// client calls OnIssue, which sleeps in steps of 100 ms (at most 10 per
// call) while the recent busy share exceeds p; on completion it calls
// OnComplete. The algorithm is dm-kcopyd's io_job_start/io_job_finish:
//
//	OnIssue:    d = now - last; last = now
//	            io += d if inflight > 0; total += d; io = min(io, total)
//	            if total >= 1024: k = bitlen(total >> 10); io >>= k; total >>= k
//	            if io - p*total/100 > 0 and slept < 10: sleep 100 ms, retry
//	            inflight++
//	OnComplete: inflight--; if p < 100 and inflight == 0:
//	            d = now - last; last = now; io += d; total += d; io = min(io, total)
//
// The share is of wall time, not bandwidth or IOPS: p = 0 still lets a
// client issue about once per second, and sleeps stall the caller. At
// p >= 100 (the default) only the in-flight count is kept and the clock is
// never read.
//
// # Bandwidth
//
// SetRate caps bytes per second with a token bucket holding at most one
// second of credit; WaitBytes takes n bytes of credit and waits, honouring
// its context, until the bucket is no longer in debt.
//
// A Throttle may be shared by several clients (a group, as the kernel's
// dm-raid1 and dm-snapshot do): all methods are safe for concurrent use.
package throttle

import (
	"context"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// Constants of the duty-cycle algorithm, as in dm-kcopyd.
const (
	// Tick is the unit of the duty-cycle accounting.
	Tick = time.Millisecond
	// Shift sets the accounting window: 1<<Shift ticks (1.024 s).
	Shift = 10
	// Sleep is the length of one throttle sleep.
	Sleep = 100 * time.Millisecond
	// MaxSleeps is the most sleeps one OnIssue takes; it bounds the stall
	// per submission to MaxSleeps*Sleep (1 s) and avoids a livelock when
	// many clients share a throttle.
	MaxSleeps = 10
	// Burst is the most credit the token bucket saves up while idle: a
	// quarter of a second at the configured rate. It is small so that a
	// rate holds over short windows too (a one-second burst let a 10 s
	// copy run 10 % over its rate).
	Burst = 250 * time.Millisecond
)

// window is the accounting window in ticks.
const window = 1 << Shift

// Throttle is a duty-cycle throttle and a token bucket, shareable by
// several clients. The zero value is not usable; call New or NewWithClock.
// A nil *Throttle throttles nothing: OnIssue, OnComplete, WaitBytes,
// Percent, Rate and Stats accept it; the setters do not.
type Throttle struct {
	now   func() time.Duration
	sleep func(time.Duration)
	// realClock is true when now and sleep are the real clock, so that
	// WaitBytes can wait on a timer that its context can interrupt.
	realClock bool

	// mu guards the duty-cycle state.
	mu struct {
		sync.Mutex
		percent     int
		inflight    int64
		ioPeriod    int64 // ticks with I/O in flight, decayed
		totalPeriod int64 // ticks, decayed
		lastTick    int64
		sleeps      int64 // total sleeps taken, for Stats
	}

	// bucket guards the token bucket, kept as a theoretical arrival time:
	// the bucket is full when tat <= now, and tat - now is the credit
	// already spent ahead of time (debt once it exceeds Burst).
	bucket struct {
		sync.Mutex
		rate int64         // bytes per second; 0 = unlimited
		tat  time.Duration // on the now() clock
	}
}

// New returns a throttle on the real monotonic clock with the given duty
// cycle in percent (clamped to 0..100; 100 turns the duty cycle off) and no
// bandwidth limit.
func New(percent int) *Throttle {
	start := time.Now()
	t := NewWithClock(percent, func() time.Duration { return time.Since(start) }, time.Sleep)
	t.realClock = true
	return t
}

// NewWithClock returns a throttle like New that reads time with now, a
// monotonic clock (any origin), and waits with sleep. It is meant for tests:
// a fake sleep that advances a fake now makes the throttle deterministic.
// With a custom sleep, WaitBytes checks its context before and after
// sleeping but cannot interrupt the sleep itself.
func NewWithClock(percent int, now func() time.Duration, sleep func(time.Duration)) *Throttle {
	if now == nil || sleep == nil {
		panic("throttle.NewWithClock: nil clock function")
	}
	t := &Throttle{now: now, sleep: sleep}
	t.mu.percent = clampPercent(percent)
	t.mu.lastTick = t.ticks()
	return t
}

func clampPercent(p int) int { return min(max(p, 0), 100) }

func (t *Throttle) ticks() int64 { return int64(t.now() / Tick) }

// SetPercent changes the duty cycle, clamped to 0..100, with effect from
// the next OnIssue or OnComplete. Lowering it from 100 is safe: the stale
// gap since the throttle was last accounted is absorbed by the decay.
func (t *Throttle) SetPercent(p int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mu.percent = clampPercent(p)
}

// Percent returns the duty cycle in percent; 100 means off.
func (t *Throttle) Percent() int {
	if t == nil {
		return 100
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mu.percent
}

// OnIssue accounts for one I/O about to be submitted. While the recent
// share of time with I/O in flight exceeds the duty cycle, it sleeps Sleep
// (without holding any lock) and looks again, at most MaxSleeps times; then
// it counts the I/O as in flight and returns. Every OnIssue must be matched
// by one OnComplete. It does nothing on a nil Throttle.
func (t *Throttle) OnIssue() {
	if t == nil {
		return
	}
	for slept := 0; ; slept++ {
		if !t.issue(slept) {
			return
		}
		t.sleep(Sleep)
	}
}

// issue runs one pass of OnIssue's loop. It returns true if the caller
// must sleep and try again, false once the I/O was counted in flight.
func (t *Throttle) issue(slept int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.mu.percent
	if p < 100 {
		t.accountLocked(t.mu.inflight > 0)
		if t.mu.totalPeriod >= window {
			k := bits.Len64(uint64(t.mu.totalPeriod >> Shift))
			t.mu.totalPeriod >>= k
			t.mu.ioPeriod >>= k
		}
		skew := t.mu.ioPeriod - int64(p)*t.mu.totalPeriod/100
		if skew > 0 && slept < MaxSleeps {
			t.mu.sleeps++
			return true
		}
	}
	t.mu.inflight++
	return false
}

// accountLocked adds the ticks since the last accounting to the total
// period, and to the I/O period when busy, keeping io <= total.
func (t *Throttle) accountLocked(busy bool) {
	now := t.ticks()
	d := now - t.mu.lastTick
	t.mu.lastTick = now
	if busy {
		t.mu.ioPeriod += d
	}
	t.mu.totalPeriod += d
	if t.mu.ioPeriod > t.mu.totalPeriod {
		t.mu.ioPeriod = t.mu.totalPeriod
	}
}

// OnComplete accounts for the completion of one I/O counted by OnIssue. It
// never blocks on anything but the throttle's lock and may be called from
// any goroutine. It panics if no I/O is in flight. It does nothing on a nil
// Throttle.
func (t *Throttle) OnComplete() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.inflight <= 0 {
		panic("throttle: OnComplete without a matching OnIssue")
	}
	t.mu.inflight--
	if t.mu.percent < 100 && t.mu.inflight == 0 {
		t.accountLocked(true)
	}
}

// Stats is a snapshot of a throttle's state.
type Stats struct {
	Percent  int   // duty cycle; 100 = off
	Inflight int64 // I/Os between OnIssue and OnComplete
	// IOTicks and TotalTicks are the decayed periods, in ticks, with I/O
	// in flight and in all; their ratio is the recent duty cycle.
	IOTicks, TotalTicks int64
	Sleeps              int64 // sleeps taken by OnIssue since creation
	Rate                int64 // bytes per second; 0 = unlimited
}

// Stats returns a snapshot of t's state.
func (t *Throttle) Stats() Stats {
	if t == nil {
		return Stats{Percent: 100}
	}
	t.mu.Lock()
	s := Stats{
		Percent:    t.mu.percent,
		Inflight:   t.mu.inflight,
		IOTicks:    t.mu.ioPeriod,
		TotalTicks: t.mu.totalPeriod,
		Sleeps:     t.mu.sleeps,
	}
	t.mu.Unlock()
	t.bucket.Lock()
	s.Rate = t.bucket.rate
	t.bucket.Unlock()
	return s
}

// SetRate sets the bandwidth limit in bytes per second; 0 (or less) means
// unlimited. It is safe while WaitBytes calls run: callers already waiting
// keep the wait they computed, later calls use the new rate. Turning a
// limit on starts with an empty bucket: the first bytes wait their cost,
// so a copy never starts with a burst above its rate.
func (t *Throttle) SetRate(bytesPerSec int64) {
	bytesPerSec = max(bytesPerSec, 0)
	t.bucket.Lock()
	defer t.bucket.Unlock()
	if t.bucket.rate == bytesPerSec {
		return
	}
	if t.bucket.rate == 0 {
		t.bucket.tat = t.now() + Burst
	}
	t.bucket.rate = bytesPerSec
}

// Rate returns the bandwidth limit in bytes per second; 0 means unlimited.
func (t *Throttle) Rate() int64 {
	if t == nil {
		return 0
	}
	t.bucket.Lock()
	defer t.bucket.Unlock()
	return t.bucket.rate
}

// cost returns the time n bytes take at rate bytes per second, saturating
// instead of overflowing.
func cost(n, rate int64) time.Duration {
	hi, lo := bits.Mul64(uint64(n), uint64(time.Second))
	if hi >= uint64(rate) {
		return time.Duration(1<<63 - 1)
	}
	q, _ := bits.Div64(hi, lo, uint64(rate))
	if q > 1<<63-1 {
		return time.Duration(1<<63 - 1)
	}
	return time.Duration(q)
}

// WaitBytes takes n bytes of credit from the token bucket and waits until
// the bucket is out of debt, that is until the bytes fit in the configured
// rate with at most Burst of credit saved up. Any n is accepted: one larger
// than a second's worth waits for its excess. With no rate set, or n <= 0,
// it returns at once without reading the clock.
//
// Concurrent callers queue: each sees the debt of those before it. If ctx
// is done before the wait ends (or already at the call), WaitBytes gives
// the credit back and returns ctx.Err(). It does nothing on a nil
// Throttle.
func (t *Throttle) WaitBytes(ctx context.Context, n int64) error {
	if t == nil || n <= 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	wait, c, ok := t.reserve(n)
	if !ok || wait <= 0 {
		return nil
	}
	if t.realClock {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-timer.C:
			return nil
		case <-ctx.Done():
			t.refund(c)
			return ctx.Err()
		}
	}
	t.sleep(wait)
	if err := ctx.Err(); err != nil {
		t.refund(c)
		return err
	}
	return nil
}

// reserve takes n bytes of credit and returns how long to wait and the
// cost taken; ok is false when no rate is set.
func (t *Throttle) reserve(n int64) (wait, c time.Duration, ok bool) {
	due, now, c, ok := t.reserveAt(n)
	return due - now, c, ok
}

// reserveAt takes n bytes of credit and returns when, on t's clock, the
// bytes may go, the time it read, and the cost taken.
func (t *Throttle) reserveAt(n int64) (due, now, c time.Duration, ok bool) {
	t.bucket.Lock()
	defer t.bucket.Unlock()
	if t.bucket.rate == 0 {
		return 0, 0, 0, false
	}
	now = t.now()
	c = cost(n, t.bucket.rate)
	tat := max(t.bucket.tat, now)
	if tat > time.Duration(1<<63-1)-c {
		tat = time.Duration(1<<63 - 1)
	} else {
		tat += c
	}
	t.bucket.tat = tat
	return tat - Burst, now, c, true
}

// Reserve takes n bytes of credit, as WaitBytes does, without waiting: it
// returns when the bytes may go, on t's clock (Now), and the cost taken,
// for Refund. ok is false, and nothing is taken, when no rate is set or
// n <= 0. For a caller that must not block, such as the engine's worker:
// it queues the request until due and goes on with other work, so that
// its own work never makes it late for the rate.
func (t *Throttle) Reserve(n int64) (due, cost time.Duration, ok bool) {
	if t == nil || n <= 0 {
		return 0, 0, false
	}
	due, _, cost, ok = t.reserveAt(n)
	return due, cost, ok
}

// Refund gives back the cost of a Reserve whose bytes did not go.
func (t *Throttle) Refund(cost time.Duration) { t.refund(cost) }

// Now reads t's clock.
func (t *Throttle) Now() time.Duration { return t.now() }

// AfterFunc calls f once d has passed on t's clock, on a goroutine of its
// own, and returns a function that cancels the call if it has not run.
// On an injected clock (NewWithClock) the wait is the injected sleep.
func (t *Throttle) AfterFunc(d time.Duration, f func()) (stop func() bool) {
	if t.realClock {
		return time.AfterFunc(d, f).Stop
	}
	// An injected sleep advances the injected clock by what it is given,
	// so sleep only what is left until the deadline, and not at all once
	// stopped: a stopped or late timer must not move the clock further.
	var stopped atomic.Bool
	deadline := t.now() + d
	go func() {
		if stopped.Load() {
			return
		}
		if left := deadline - t.now(); left > 0 {
			t.sleep(left)
		}
		if !stopped.Swap(true) {
			f()
		}
	}()
	return func() bool { return !stopped.Swap(true) }
}

// refund gives back credit taken by reserve.
func (t *Throttle) refund(c time.Duration) {
	t.bucket.Lock()
	defer t.bucket.Unlock()
	t.bucket.tat -= c
}
