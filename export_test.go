package kcopyd

import (
	"time"

	"github.com/kcopyd/kcopyd/internal/throttle"
)

// NewThrottleWithClock is NewThrottle on an injected clock, for tests.
func NewThrottleWithClock(percent int, now func() time.Duration, sleep func(time.Duration)) *Throttle {
	return &Throttle{t: throttle.NewWithClock(percent, now, sleep)}
}

// ThrottleStats exposes the throttle's counters to tests.
func ThrottleStats(t *Throttle) throttle.Stats { return t.t.Stats() }
