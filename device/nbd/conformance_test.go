package nbd_test

import (
	"strconv"
	"testing"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/devicetest"
	"github.com/kcopyd/kcopyd/device/nbd"
)

// TestConformance runs the device suite against an nbdkit memory export.
func TestConformance(t *testing.T) {
	devicetest.Run(t, func(t *testing.T, size int64) device.Device {
		s := nbdkit(t, "memory", strconv.FormatInt(size, 10))
		return open(t, s.URI, &nbd.Config{Connections: 2})
	})
}
