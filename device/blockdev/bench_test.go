//go:build linux

package blockdev_test

import (
	"fmt"
	"testing"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/blockdev"
	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
)

// BenchmarkSequentialRead reads a 64 MiB loop device sequentially in 1 MiB
// requests, wrapping around, with and without O_DIRECT and with the loop
// driver doing direct I/O on its backing file or not.
func BenchmarkSequentialRead(b *testing.B) {
	const size, chunk = 64 * MiB, 1 * MiB
	for _, tc := range []struct {
		direct, loopDIO bool
	}{
		{true, false},
		{true, true},
		{false, false},
	} {
		b.Run(fmt.Sprintf("direct=%v/loop-dio=%v", tc.direct, tc.loopDIO), func(b *testing.B) {
			var opts []looptest.Option
			if tc.loopDIO {
				opts = append(opts, looptest.DirectIO())
			}
			path := looptest.New(b, size, opts...)
			d := open(b, path, blockdev.Options{Direct: tc.direct, ReadOnly: true})
			buf := device.AlignedBuf(chunk, 4096)
			b.SetBytes(chunk)
			off := int64(0)
			for b.Loop() {
				if _, err := d.ReadAt(buf, off); err != nil {
					b.Fatal(err)
				}
				off = (off + chunk) % size
			}
		})
	}
}
