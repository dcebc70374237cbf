// Package testutil holds helpers for the project's tests: deterministic
// data patterns that can be checked one range at a time, devices filled
// with them, range comparison that names the first differing byte, a
// goroutine-leak check, and (on Linux) probes of a file's pages in the
// page cache.
//
// Helpers that touch devices respect the device's Limits: buffers are
// aligned to MemAlign and transfers stay within MaxTransfer. Offsets and
// lengths given to them must follow OffsetAlign; a request that breaks it
// fails the test with the device's ErrAlignment.
package testutil

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/devicetest"
)

// chunk is the largest transfer the helpers issue in one call.
const chunk = 1 << 20

// Pattern and FillPattern are devicetest's pattern generator, the one the
// conformance suite writes: Pattern(seed, off, n) is the pattern for seed as
// it lies at byte offset off, so any range can be generated and checked on
// its own.
var (
	Pattern     = devicetest.Pattern
	FillPattern = devicetest.FillPattern
)

// FirstDiff is device.FirstDiff: the index of the first byte where a and b
// differ, -1 when they are equal, the shorter length when one is a prefix
// of the other.
var FirstDiff = device.FirstDiff

// chunkLen returns the transfer size for d: 1 MiB or MaxTransfer, rounded
// down to OffsetAlign.
func chunkLen(d device.Device) int64 {
	lim := device.LimitsOf(d)
	n := int64(chunk)
	if lim.MaxTransfer > 0 {
		n = min(n, lim.MaxTransfer)
	}
	if a := int64(lim.OffsetAlign); a > 1 {
		n = max(n/a*a, a)
	}
	return n
}

// WriteRange writes data to d at off, in aligned chunks, and fails the test
// on any error.
func WriteRange(tb testing.TB, d device.Device, off int64, data []byte) {
	tb.Helper()
	n := chunkLen(d)
	p := device.AlignedBuf(int(min(n, int64(len(data)))), device.LimitsOf(d).MemAlign)
	for done := 0; done < len(data); {
		c := p[:copy(p, data[done:])]
		if m, err := d.WriteAt(c, off+int64(done)); m != len(c) || err != nil {
			tb.Fatalf("%s: WriteAt(%d bytes, %d) = %d, %v; want %d, nil", device.Name(d), len(c), off+int64(done), m, err, len(c))
		}
		done += len(c)
	}
}

// ReadRange reads n bytes of d at off, in aligned chunks, and fails the
// test on any error or short read.
func ReadRange(tb testing.TB, d device.Device, off, n int64) []byte {
	tb.Helper()
	out := make([]byte, n)
	c := chunkLen(d)
	p := device.AlignedBuf(int(min(c, n)), device.LimitsOf(d).MemAlign)
	for done := int64(0); done < n; {
		q := p[:min(c, n-done)]
		m, err := d.ReadAt(q, off+done)
		if m != len(q) || err != nil && (err != io.EOF || off+done+int64(m) != d.Size()) {
			tb.Fatalf("%s: ReadAt(%d bytes, %d) = %d, %v; want %d, nil", device.Name(d), len(q), off+done, m, err, len(q))
		}
		copy(out[done:], q)
		done += int64(m)
	}
	return out
}

// WritePattern writes the pattern for seed over [off, off+n) of d, so that
// CheckPattern can verify any part of it later.
func WritePattern(tb testing.TB, d device.Device, seed uint64, off, n int64) {
	tb.Helper()
	c := chunkLen(d)
	for done := int64(0); done < n; done += c {
		m := min(c, n-done)
		WriteRange(tb, d, off+done, Pattern(seed, off+done, int(m)))
	}
}

// CheckPattern reports, with tb.Errorf, whether [off, off+n) of d holds
// the pattern for seed, naming the first byte that differs.
func CheckPattern(tb testing.TB, d device.Device, seed uint64, off, n int64) bool {
	tb.Helper()
	c := chunkLen(d)
	for done := int64(0); done < n; done += c {
		m := min(c, n-done)
		got := ReadRange(tb, d, off+done, m)
		want := Pattern(seed, off+done, int(m))
		if i := FirstDiff(got, want); i >= 0 {
			tb.Errorf("%s: byte at %d = %#02x; want %#02x of pattern %d", device.Name(d), off+done+int64(i), got[i], want[i], seed)
			return false
		}
	}
	return true
}

// CheckZero reports, with tb.Errorf, whether [off, off+n) of d reads as
// zeroes, naming the first byte that does not.
func CheckZero(tb testing.TB, d device.Device, off, n int64) bool {
	tb.Helper()
	c := chunkLen(d)
	for done := int64(0); done < n; done += c {
		m := min(c, n-done)
		got := ReadRange(tb, d, off+done, m)
		if i := bytes.IndexFunc(got, func(r rune) bool { return r != 0 }); i >= 0 {
			tb.Errorf("%s: byte at %d is not zero", device.Name(d), off+done+int64(i))
			return false
		}
	}
	return true
}

// RandomDevice returns an in-memory device of size bytes holding the
// pattern for seed. It is closed when the test ends.
func RandomDevice(tb testing.TB, size int64, seed uint64) *device.Mem {
	tb.Helper()
	m := device.NewMem(size)
	tb.Cleanup(func() { m.Close() })
	WritePattern(tb, m, seed, 0, size)
	return m
}

// EqualRange reports, with tb.Errorf, whether n bytes of a at aoff equal n
// bytes of b at boff. On a difference it names the first differing byte
// by its offset in both devices.
func EqualRange(tb testing.TB, a device.Device, aoff int64, b device.Device, boff int64, n int64) bool {
	tb.Helper()
	c := min(chunkLen(a), chunkLen(b))
	for done := int64(0); done < n; done += c {
		m := min(c, n-done)
		x := ReadRange(tb, a, aoff+done, m)
		y := ReadRange(tb, b, boff+done, m)
		if i := FirstDiff(x, y); i >= 0 {
			tb.Errorf("%s at %d = %#02x, %s at %d = %#02x: the ranges [%d, +%d) and [%d, +%d) differ first at byte %d",
				device.Name(a), aoff+done+int64(i), x[i], device.Name(b), boff+done+int64(i), y[i],
				aoff, n, boff, n, done+int64(i))
			return false
		}
	}
	return true
}

// WriteFile writes data to a new file name in dir (0644) and returns its
// path, failing the test on an error.
func WriteFile(tb testing.TB, dir, name string, data []byte) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// CheckLeaks fails the test if it leaves goroutines running that were not
// running when CheckLeaks was called. Call it first in the test, so that
// its cleanup runs after every other cleanup (t.Cleanup runs last in,
// first out) and after, for example, a client's Close. goleak retries for
// a while, so goroutines that are about to exit do not count. opts add to
// the default goleak.IgnoreCurrent(). Do not use it in parallel tests:
// their goroutines look like leaks to each other.
func CheckLeaks(tb testing.TB, opts ...goleak.Option) {
	tb.Helper()
	opts = append([]goleak.Option{goleak.IgnoreCurrent()}, opts...)
	tb.Cleanup(func() {
		goleak.VerifyNone(tb, opts...)
	})
}

// VerifyTestMain runs the package's tests and then fails the run if any
// goroutine is left over. Call it from TestMain:
//
//	func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	goleak.VerifyTestMain(m, opts...)
}
