package kcopyd_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
)

// clockDev is a device whose every request takes 10 ms of a fake clock.
type clockDev struct {
	device.Device
	now *atomic.Int64 // nanoseconds
}

func (d clockDev) ReadAt(p []byte, off int64) (int, error) {
	d.now.Add(int64(10 * time.Millisecond))
	return d.Device.ReadAt(p, off)
}

func (d clockDev) WriteAt(p []byte, off int64) (int, error) {
	d.now.Add(int64(10 * time.Millisecond))
	return d.Device.WriteAt(p, off)
}

// TestThrottleDutyCycle runs copies under the kernel's duty-cycle throttle
// on a fake clock that only device I/O and throttle sleeps advance: at 100
// the throttle never sleeps, and every request is matched by a completion;
// at 20 % it sleeps to keep busy time near a fifth of the total.
func TestThrottleDutyCycle(t *testing.T) {
	for _, tc := range []struct {
		percent    int
		wantSleeps bool
	}{{100, false}, {20, true}} {
		var now atomic.Int64
		clock := func() time.Duration { return time.Duration(now.Load()) }
		sleep := func(d time.Duration) { now.Add(int64(d)) }
		th := kcopyd.NewThrottleWithClock(tc.percent, clock, sleep)
		c := newClient(t, &kcopyd.Options{SubJobSize: 64 << 10, IOWorkers: 1, Throttle: th})
		src := clockDev{device.NewMemFrom(randomBytes(40, 4<<20)), &now}
		dst := clockDev{device.NewMem(4 << 20), &now}
		res := run(t, c, context.Background(), &kcopyd.Region{Dev: src, Len: 4 << 20}, []kcopyd.Region{{Dev: dst, Len: 4 << 20}}, 0)
		if res.err != nil {
			t.Fatal(res.err)
		}
		s := kcopyd.ThrottleStats(th)
		if s.Inflight != 0 {
			t.Fatalf("percent %d: %d requests still counted in flight after the job", tc.percent, s.Inflight)
		}
		if (s.Sleeps > 0) != tc.wantSleeps {
			t.Fatalf("percent %d: %d sleeps", tc.percent, s.Sleeps)
		}
		if tc.wantSleeps {
			// 128 requests of 10 ms = 1.28 s of I/O; at 20 % the whole
			// run must take several times that.
			if total := time.Duration(now.Load()); total < 4*1280*time.Millisecond {
				t.Fatalf("percent 20: %v of fake time for 1.28 s of I/O; the throttle did not hold back", total)
			}
		}
	}
}
