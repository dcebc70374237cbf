package throttle_test

import (
	"context"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/internal/throttle"
)

// BenchmarkIssueComplete measures the cost of accounting one I/O on the
// real clock, with the duty cycle off and on (with no I/O time elapsing,
// the throttle never sleeps), from parallel goroutines sharing one
// throttle.
func BenchmarkIssueComplete(b *testing.B) {
	for _, p := range []int{100, 50} {
		b.Run(map[int]string{100: "off", 50: "50%"}[p], func(b *testing.B) {
			th := throttle.NewWithClock(p, func() time.Duration { return 0 }, func(time.Duration) { b.Fatal("slept") })
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					th.OnIssue()
					th.OnComplete()
				}
			})
		})
	}
}

// BenchmarkWaitBytes measures taking credit from a bucket that never runs
// dry.
func BenchmarkWaitBytes(b *testing.B) {
	th := throttle.New(100)
	th.SetRate(1 << 62)
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := th.WaitBytes(ctx, 4096); err != nil {
				b.Fatal(err)
			}
		}
	})
}
