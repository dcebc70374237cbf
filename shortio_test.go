package kcopyd_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
)

// noZeroes hides a device's native write-zeroes, so that zeroing falls
// back to writing zeroes from memory.
type noZeroes struct{ device.Device }

// TestShortIO runs jobs on devices whose reads or writes transfer only
// part of their buffer, once with an error and once without (a device
// breaking the io.ReaderAt/io.WriterAt contract): a short transfer is
// never success. The failing device is reported with the range that
// failed; with IgnoreError, which tries every chunk, the healthy
// destination gets every byte.
func TestShortIO(t *testing.T) {
	const size = 256 << 10
	data := randomBytes(41, size)
	// The fault hits the chunk at [64K, 128K) only.
	short := func(cause error) faultdev.Injector {
		return faultdev.Range(64<<10, 64<<10, faultdev.ShortIO(cause))
	}
	for _, cause := range []error{nil, syscall.EIO} {
		name := fmt.Sprint(cause)
		t.Run("read "+name, func(t *testing.T) {
			c := newClient(t, &kcopyd.Options{SubJobSize: 64 << 10})
			src := faultdev.Wrap(device.NewMemFrom(append([]byte(nil), data...)), short(cause))
			dst := device.NewMem(size)
			job, err := c.Copy(t.Context(), kcopyd.Region{Dev: src, Len: size}, []kcopyd.Region{{Dev: dst, Len: size}}, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			var je *kcopyd.JobError
			if err := job.Wait(t.Context()); !errors.As(err, &je) || je.Read == nil {
				t.Fatalf("copy from a short-reading source = %v; want a read error", err)
			}
			if cause == nil && !errors.Is(je.Read, io.ErrUnexpectedEOF) {
				t.Errorf("read error = %v; want io.ErrUnexpectedEOF for a short read without an error", je.Read)
			}
			if je.Completed > 64<<10 {
				t.Errorf("Completed = %d; want at most the 64KiB before the short read", je.Completed)
			}
		})
		t.Run("write "+name, func(t *testing.T) {
			c := newClient(t, &kcopyd.Options{SubJobSize: 64 << 10})
			src := device.NewMemFrom(append([]byte(nil), data...))
			bad := faultdev.Wrap(device.NewMem(size), short(cause))
			good := device.NewMem(size)
			job, err := c.Copy(t.Context(), kcopyd.Region{Dev: src, Len: size},
				[]kcopyd.Region{{Dev: bad, Len: size}, {Dev: good, Len: size}}, kcopyd.IgnoreError, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkShortWrite(t, job, cause, good, data)
		})
		t.Run("zero fallback "+name, func(t *testing.T) {
			c := newClient(t, &kcopyd.Options{SubJobSize: 64 << 10})
			bad := faultdev.Wrap(noZeroes{device.NewMemFrom(append([]byte(nil), data...))}, short(cause))
			good := device.NewMemFrom(append([]byte(nil), data...))
			job, err := c.Zero(t.Context(), []kcopyd.Region{{Dev: bad, Len: size}, {Dev: good, Len: size}}, kcopyd.IgnoreError, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkShortWrite(t, job, cause, good, make([]byte, size))
		})
	}
}

// checkShortWrite checks that job failed on destination 0 with the range
// of the short chunk, and that destination 1 holds want.
func checkShortWrite(t *testing.T, job *kcopyd.Job, cause error, good device.Device, want []byte) {
	t.Helper()
	var je *kcopyd.JobError
	if err := job.Wait(t.Context()); !errors.As(err, &je) || je.Writes[0] == nil || je.Writes[1] != nil {
		t.Fatalf("job with a short-writing destination = %v; want a write error on destination 0 only", err)
	}
	if cause == nil && !errors.Is(je.Writes[0], io.ErrShortWrite) {
		t.Errorf("write error = %v; want io.ErrShortWrite for a short write without an error", je.Writes[0])
	}
	if r := je.WriteRanges[0]; len(r) != 1 || r[0] != (kcopyd.Range{Off: 64 << 10, Len: 64 << 10}) {
		t.Errorf("WriteRanges[0] = %v; want [{65536 65536}]", r)
	}
	if got := contents(t, good, 0, int64(len(want))); !bytes.Equal(got, want) {
		t.Errorf("the healthy destination differs at %d", firstDiff(got, want))
	}
}
