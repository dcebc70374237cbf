package devicetest_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
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

// TestStrict runs the suite on a Mem that behaves like a block device
// opened with O_DIRECT, with small transfer limits.
func TestStrict(t *testing.T) {
	devicetest.Run(t, func(t *testing.T, size int64) device.Device {
		size = (size + 4095) / 4096 * 4096
		return devicetest.Strict(nil, openMem(t, size), device.Limits{
			LogicalBlockSize: 4096,
			OffsetAlign:      4096,
			MemAlign:         512,
			MaxTransfer:      128 << 10,
			MaxWriteZeroes:   64 << 10,
			MaxDiscard:       32 << 10,
		})
	})
}

func TestMinimal(t *testing.T) {
	devicetest.Run(t, func(t *testing.T, size int64) device.Device {
		d := devicetest.Minimal(openMem(t, size))
		for _, ok := range []bool{
			is[device.Limiter](d), is[device.WriteZeroer](d), is[device.Discarder](d),
			is[device.Flusher](d), is[device.Extenter](d), is[device.Identifier](d),
		} {
			if ok {
				t.Fatalf("Minimal(d) = %T has an optional capability", d)
			}
		}
		return d
	})
}

func is[T any](d device.Device) bool {
	_, ok := d.(T)
	return ok
}

// recorder is a testing.TB that records Errorf calls.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, format)
}

func TestStrictReports(t *testing.T) {
	r := &recorder{TB: t}
	d := devicetest.Strict(r, device.NewMem(1<<20), device.Limits{OffsetAlign: 512, MemAlign: 512, MaxTransfer: 4096, MaxWriteZeroes: 8192})
	p := device.AlignedBuf(8192, 4096)
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"aligned read", second(d.ReadAt(p[:4096], 512)), nil},
		{"misaligned offset", second(d.ReadAt(p[:512], 100)), device.ErrAlignment},
		{"misaligned length", second(d.WriteAt(p[:100], 0)), device.ErrAlignment},
		{"misaligned buffer", second(d.WriteAt(p[1:513], 0)), device.ErrAlignment},
		{"too long", second(d.ReadAt(p, 0)), devicetest.ErrLimit},
		{"zeroes too long", d.WriteZeroes(0, 16384), devicetest.ErrLimit},
		{"zeroes", d.WriteZeroes(0, 8192), nil},
		{"discard without MaxDiscard", d.Discard(0, 512), devicetest.ErrLimit},
	} {
		if !errors.Is(c.err, c.want) || (c.want == nil) != (c.err == nil) {
			t.Errorf("%s: err = %v; want %v", c.name, c.err, c.want)
		}
	}
	if len(r.errs) != 6 {
		t.Errorf("Strict reported %d violations to the test; want 6", len(r.errs))
	}
}

func second(_ int, err error) error { return err }

func TestShortIO(t *testing.T) {
	m := device.NewMem(1 << 16)
	d := devicetest.ShortIO(m, 4096)
	data := bytes.Repeat([]byte{7}, 3*4096)
	n, err := d.WriteAt(data, 100)
	if n != 4096 || !errors.Is(err, io.ErrShortWrite) {
		t.Errorf("WriteAt(%d bytes, 100) = %d, %v; want 4096, io.ErrShortWrite", len(data), n, err)
	}
	if got := m.Bytes(); !bytes.Equal(got[100:100+4096], data[:4096]) || got[100+4096] != 0 {
		t.Error("ShortIO wrote other than the first 4096 bytes")
	}
	p := make([]byte, 3*4096)
	if n, err := d.ReadAt(p, 100); n != 4096 || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("ReadAt(%d bytes, 100) = %d, %v; want 4096, io.ErrUnexpectedEOF", len(p), n, err)
	}
	if n, err := d.WriteAt(data, 1<<16-4096); n != 0 || !errors.Is(err, device.ErrOutOfRange) {
		t.Errorf("WriteAt(%d bytes crossing the end) = %d, %v; want 0, ErrOutOfRange", len(data), n, err)
	}
	if n, err := d.ReadAt(p[:4096], 0); n != 4096 || err != nil {
		t.Errorf("ReadAt(4096 bytes, 0) = %d, %v; want 4096, nil", n, err)
	}
}

// Broken devices: each breaks the contract in one way that Run must catch.
// TestRunCatches runs TestBrokenChild in a child process once per device
// and expects it to fail with a message naming the breach.

type eofNil struct{ *device.Mem }

func (d eofNil) ReadAt(p []byte, off int64) (int, error) {
	n, err := d.Mem.ReadAt(p, off)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

type partialWrite struct{ *device.Mem }

func (d partialWrite) WriteAt(p []byte, off int64) (int, error) {
	if off >= 0 && off < d.Size() && off+int64(len(p)) > d.Size() {
		n, _ := d.Mem.WriteAt(p[:d.Size()-off], off)
		return n, device.ErrOutOfRange
	}
	return d.Mem.WriteAt(p, off)
}

type lyingHoles struct{ *device.Mem }

func (d lyingHoles) Extents(off, length int64) ([]device.Extent, error) {
	return []device.Extent{{Off: off, Len: length, Hole: true, Zero: true}}, nil
}

type noopZeroes struct{ *device.Mem }

func (d noopZeroes) WriteZeroes(off, length int64) error { return nil }

type openAfterClose struct{ *device.Mem }

func (d openAfterClose) Close() error { return nil }

type spillingDiscard struct{ *device.Mem }

func (d spillingDiscard) Discard(off, length int64) error {
	return d.Mem.Discard(off, min(length+1, d.Size()-off))
}

type looseAlign struct{ *device.Mem }

func (d looseAlign) Limits() device.Limits {
	l := d.Mem.Limits()
	l.OffsetAlign = 512
	return l
}

type racy struct {
	*device.Mem
	calls *int
}

func (d racy) WriteAt(p []byte, off int64) (int, error) {
	*d.calls++
	return d.Mem.WriteAt(p, off)
}

var broken = map[string]struct {
	open func(size int64) device.Device
	want string // in the child's output
}{
	"eof-nil":       {func(s int64) device.Device { return eofNil{device.NewMem(s)} }, "want 1, io.EOF"},
	"partial-write": {func(s int64) device.Device { return partialWrite{device.NewMem(s)} }, "after rejected writes"},
	"lying-holes":   {func(s int64) device.Device { return lyingHoles{device.NewMem(s)} }, "covers data written"},
	"noop-zeroes":   {func(s int64) device.Device { return noopZeroes{device.NewMem(s)} }, "after WriteZeroes"},
	"open-after":    {func(s int64) device.Device { return openAfterClose{device.NewMem(s)} }, "ReadAt after Close"},
	"spill-discard": {func(s int64) device.Device { return spillingDiscard{device.NewMem(s)} }, "after Discard"},
	"loose-align":   {func(s int64) device.Device { return looseAlign{device.NewMem(s)} }, "want 0, ErrAlignment"},
	"racy-writeat":  {func(s int64) device.Device { return racy{device.NewMem(s), new(int)} }, "DATA RACE"},
}

func TestBrokenChild(t *testing.T) {
	name := os.Getenv("DEVICETEST_BROKEN")
	if name == "" {
		t.Skip("run by TestRunCatches")
	}
	devicetest.Run(t, func(t *testing.T, size int64) device.Device {
		return broken[name].open((size + 511) / 512 * 512)
	})
}

func TestRunCatches(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the suite in child processes")
	}
	for name, b := range broken {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if name == "racy-writeat" && !raceEnabled {
				t.Skip("needs -race")
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), "DEVICETEST_BROKEN="+name)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a device that breaks the contract (%s):\n%s", name, out)
			}
			if !strings.Contains(string(out), b.want) {
				t.Errorf("the suite failed on %s without mentioning %q:\n%s", name, b.want, out)
			}
		})
	}
}
