//go:build linux

package blockdev_test

import (
	"testing"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/blockdev"
	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
	"github.com/kcopyd/kcopyd/device/devicetest"
)

// TestConformance runs the device conformance suite on loop devices with
// 512- and 4096-byte sectors, buffered and with O_DIRECT, and with the loop
// driver itself doing direct I/O on its backing file.
func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts blockdev.Options
		loop []looptest.Option
	}{
		{"512/buffered", blockdev.Options{}, nil},
		{"512/direct", blockdev.Options{Direct: true}, nil},
		{"4096/buffered", blockdev.Options{}, []looptest.Option{looptest.SectorSize(4096)}},
		{"4096/direct", blockdev.Options{Direct: true, Exclusive: true}, []looptest.Option{looptest.SectorSize(4096)}},
		{"4096/direct/loop-dio", blockdev.Options{Direct: true}, []looptest.Option{looptest.SectorSize(4096), looptest.DirectIO()}},
		{"512/direct/io_uring", blockdev.Options{Direct: true, IOUring: true}, nil},
		{"4096/direct/loop-dio/io_uring", blockdev.Options{Direct: true, IOUring: true}, []looptest.Option{looptest.SectorSize(4096), looptest.DirectIO()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			devicetest.Run(t, func(t *testing.T, size int64) device.Device {
				// Loop devices have whole sectors: round the
				// suite's size up.
				size = (size + 4095) / 4096 * 4096
				path := looptest.New(t, size, tc.loop...)
				return open(t, path, tc.opts)
			})
		})
	}
}
