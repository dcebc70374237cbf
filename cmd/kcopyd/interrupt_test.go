package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/kcopyd/kcopyd/device"
)

// interruptVerifyAfter makes the next comparison (verify, --verify) cancel
// cancel once n chunks are compared: a gate inside the comparison, so the
// interruption lands in the verify phase without timing.
func interruptVerifyAfter(t *testing.T, n int, cancel context.CancelFunc) {
	t.Helper()
	var mu sync.Mutex // the engine's I/O goroutines read at once
	seen := 0
	wrapVerify = func(d device.Device) device.Device {
		return hookDev{d, func() {
			mu.Lock()
			defer mu.Unlock()
			seen++
			if seen == n {
				cancel()
			}
		}}
	}
	t.Cleanup(func() { wrapVerify = nil })
}

// hookDev calls after after each read.
type hookDev struct {
	device.Device
	after func()
}

func (d hookDev) ReadAt(p []byte, off int64) (int, error) {
	n, err := d.Device.ReadAt(p, off)
	d.after()
	return n, err
}

// Limits implements device.Limiter.
func (d hookDev) Limits() device.Limits { return device.LimitsOf(d.Device) }

// Unwrap returns the device compared.
func (d hookDev) Unwrap() device.Device { return d.Device }

// checkVerifyInterrupted checks the outcome of a verify that was
// interrupted: exit 130, never "identical" or "verified".
func checkVerifyInterrupted(t *testing.T, r result) {
	t.Helper()
	if r.code != exitInterrupted {
		t.Fatalf("interrupted verify = %v; want exit 130", r)
	}
	if strings.Contains(r.stderr, "verified") || strings.Contains(r.stdout, ": identical") {
		t.Errorf("interrupted verify claims success: %v", r)
	}
	var rep jsonReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("%v: %v", r, err)
	}
	if !rep.Interrupted {
		t.Errorf("report %s: interrupted is false", r.stdout)
	}
	for _, d := range rep.Destinations {
		if d.Verified != nil && *d.Verified || d.Identical != nil && *d.Identical {
			t.Errorf("report %s: destination %s verified or identical", r.stdout, d.Location)
		}
	}
}

// TestCopyVerifyInterrupted interrupts copy --verify after the first
// compared chunk of a destination whose last MiB differs (--dest-is-zero
// on a destination that is not zero).
func TestCopyVerifyInterrupted(t *testing.T) {
	dir := t.TempDir()
	const size = 8 << 20
	data := randomBytes(7, size)
	clear(data[size-1<<20:])
	src := writeFile(t, dir, "src", data)
	if err := os.Truncate(src, size-1<<20); err != nil { // the last MiB a hole
		t.Fatal(err)
	}
	if err := os.Truncate(src, size); err != nil {
		t.Fatal(err)
	}
	dst := writeFile(t, dir, "dst", randomBytes(8, size))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	interruptVerifyAfter(t, 1, cancel)
	r := runCLIContext(t, ctx, "", "copy", "--verify", "--dest-is-zero", "--jobs", "1", "--json", src, dst)
	checkVerifyInterrupted(t, r)
}

// TestZeroVerifyInterrupted interrupts zero --verify after its first
// compared chunk.
func TestZeroVerifyInterrupted(t *testing.T) {
	dir := t.TempDir()
	dst := writeFile(t, dir, "dst", randomBytes(9, 8<<20))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	interruptVerifyAfter(t, 1, cancel)
	r := runCLIContext(t, ctx, "", "zero", "--verify", "--jobs", "1", "--json", dst)
	checkVerifyInterrupted(t, r)
}

// TestVerifyInterrupted interrupts the verify command after its first
// compared chunk of identical files.
func TestVerifyInterrupted(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(10, 8<<20)
	a, b := writeFile(t, dir, "a", data), writeFile(t, dir, "b", data)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	interruptVerifyAfter(t, 1, cancel)
	r := runCLIContext(t, ctx, "", "verify", "--jobs", "1", "--json", a, b)
	checkVerifyInterrupted(t, r)
}
