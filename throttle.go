package kcopyd

import (
	"time"

	"github.com/kcopyd/kcopyd/internal/throttle"
)

// Throttle limits the I/O of the clients that share it, so that foreground
// I/O keeps its share of the devices. It combines two limits:
//
//   - The kernel's duty-cycle throttle (dm-kcopyd's "throttle" percentage):
//     the share of wall time, decayed over about a second, during which at
//     least one I/O of the group is in flight. Before each request a client
//     over its share sleeps 100 ms at a time, at most ten times. 100 (the
//     default) is off; 0 still lets about one request a second through.
//   - A token bucket in bytes per second, counted once per chunk at its
//     read (or zeroing), starting with no credit and saving up at most a
//     quarter of a second of it while idle. 0 (the default) is off.
//
// Both are changeable while jobs run. A Throttle may be shared by several
// clients: that is the kernel's throttle group (raid1_resync_throttle,
// snapshot_copy_throttle). The duty cycle's waits stall the waiting
// client's worker, callbacks included, as the kernel's do. The byte rate's
// do not: a chunk over the rate waits in a queue of its own while the
// worker goes on issuing writes and running callbacks, so that the
// worker's own work never makes the copy fall behind its rate. (When the
// worker slept for the rate, 256 MiB in 512 KiB chunks at 25.6 MiB/s took
// 12.1 s instead of 10: writes queued behind the sleeping reads held the
// buffers the next reads needed.)
type Throttle struct {
	t *throttle.Throttle
}

// NewThrottle returns a throttle at percent (clamped to 0..100) with no
// byte rate.
func NewThrottle(percent int) *Throttle {
	return &Throttle{t: throttle.New(percent)}
}

// SetPercent changes the duty cycle; safe while jobs run.
func (t *Throttle) SetPercent(p int) { t.t.SetPercent(p) }

// Percent returns the duty cycle.
func (t *Throttle) Percent() int { return t.t.Percent() }

// SetRate sets the byte rate in bytes per second, 0 for none; safe while
// jobs run.
func (t *Throttle) SetRate(bytesPerSec int64) { t.t.SetRate(bytesPerSec) }

// Rate returns the byte rate, 0 for none.
func (t *Throttle) Rate() int64 { return t.t.Rate() }

func (t *Throttle) onIssue()    { t.t.OnIssue() }
func (t *Throttle) onComplete() { t.t.OnComplete() }
func (t *Throttle) reserveBytes(n int64) (due, cost time.Duration, ok bool) {
	return t.t.Reserve(n)
}
func (t *Throttle) refund(cost time.Duration)                       { t.t.Refund(cost) }
func (t *Throttle) now() time.Duration                              { return t.t.Now() }
func (t *Throttle) afterFunc(d time.Duration, f func()) func() bool { return t.t.AfterFunc(d, f) }
