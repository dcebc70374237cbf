package nbd_test

import (
	"os/exec"
	"testing"

	"github.com/kcopyd/kcopyd/device/devicetest"
	"github.com/kcopyd/kcopyd/device/nbd"
	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
)

// nbdkit starts nbdkit on a Unix socket with the given arguments (plugin,
// filters, parameters).
func nbdkit(tb testing.TB, args ...string) *nbdtest.Server {
	tb.Helper()
	return nbdtest.Nbdkit(tb, args...)
}

// open opens location and closes it when the test ends.
func open(tb testing.TB, location string, cfg *nbd.Config) *nbd.Device {
	tb.Helper()
	return nbdtest.Open(tb, location, cfg)
}

// pattern fills p with the test pattern for seed at the absolute offset
// off (devicetest.FillPattern), so that misplaced data is detected.
func pattern(p []byte, off int64, seed byte) { devicetest.FillPattern(p, uint64(seed), off) }

func mib(n int64) int64 { return n << 20 }

// execCommand is exec.Command; servers run with it die with the test
// binary where they support --exit-with-parent.
func execCommand(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }
