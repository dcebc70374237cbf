package kcopyd

import (
	"context"

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
// snapshot_copy_throttle). Its waits stall the waiting client's worker,
// callbacks included, as the kernel's do.
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
func (t *Throttle) waitBytes(ctx context.Context, n int64) error {
	return t.t.WaitBytes(ctx, n)
}
