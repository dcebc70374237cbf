package devicetest_test

import (
	"errors"
	"testing"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/devicetest"
)

// openMem opens a Mem and closes it when the test ends.
func openMem(t *testing.T, size int64) device.Device {
	d := device.NewMem(size)
	t.Cleanup(func() {
		if err := d.Close(); err != nil && !errors.Is(err, device.ErrClosed) {
			t.Errorf("Close() = %v", err)
		}
	})
	return d
}

func TestMem(t *testing.T) {
	devicetest.Run(t, openMem)
}
