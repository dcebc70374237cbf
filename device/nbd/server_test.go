package nbd_test

import (
	"os/exec"
	"testing"

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

// pattern fills p with bytes that depend on the absolute offset off and a
// seed, so that misplaced data is detected.
func pattern(p []byte, off int64, seed byte) {
	for i := range p {
		x := uint64(off+int64(i)) * 0x9E3779B97F4A7C15
		p[i] = byte(x>>56) ^ seed
	}
}

func mib(n int64) int64 { return n << 20 }

// execCommand is exec.Command; servers run with it die with the test
// binary where they support --exit-with-parent.
func execCommand(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }
