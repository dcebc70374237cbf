//go:build linux

package device_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

// newCopyPair returns a source file holding pattern seed 1 and a zeroed
// destination file, both of size bytes, in one directory.
func newCopyPair(t *testing.T, size int64, o device.FileOptions) (src, dst *device.File, data []byte) {
	t.Helper()
	dir := t.TempDir()
	data = testutil.Pattern(1, 0, int(size))
	src, err := device.CreateFile(filepath.Join(dir, "src"), size, device.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	src.Close()
	src, err = device.OpenFile(filepath.Join(dir, "src"), device.FileOptions{ReadOnly: true, Direct: o.Direct})
	if err != nil {
		t.Fatal(err)
	}
	dst, err = device.CreateFile(filepath.Join(dir, "dst"), size, o)
	if err != nil {
		src.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close(); dst.Close() })
	return src, dst, data
}

// TestFileCopyRange copies aligned and unaligned ranges between two files
// with CopyRange and checks every byte of the destination.
func TestFileCopyRange(t *testing.T) {
	const size = 3<<20 + 123
	for _, direct := range []bool{false, true} {
		src, dst, data := newCopyPair(t, size, device.FileOptions{Direct: direct})
		want := make([]byte, size)
		unit := int64(max(dst.Limits().OffsetAlign, 1))
		for _, r := range []struct{ src, dst, n int64 }{
			{0, 0, 1 << 20},                        // block-aligned: may clone
			{1 << 20, 2 << 20, 1<<20 + 123},        // ends at the source's end
			{2<<20 - unit, 1<<20 + unit, 3 * unit}, // aligned to the unit only
			{4097, 1<<20 + 8*unit + 5, 70001},      // unaligned (skipped under Direct)
			{size - 1000, size - 2000, 1000},       // unaligned tail
		} {
			if direct && (r.src%unit != 0 || r.dst%unit != 0 || r.n%unit != 0 && r.src+r.n != size) {
				continue
			}
			n, err := dst.CopyRange(src, r.src, r.dst, r.n)
			if err != nil || n != r.n {
				t.Fatalf("Direct %v: CopyRange(src, %d, %d, %d) = %d, %v; want %d, nil", direct, r.src, r.dst, r.n, n, err, r.n)
			}
			copy(want[r.dst:r.dst+r.n], data[r.src:r.src+r.n])
		}
		if err := dst.Flush(); err != nil {
			t.Fatal(err)
		}
		got := testutil.ReadRange(t, dst, 0, size)
		if i := testutil.FirstDiff(got, want); i >= 0 {
			t.Errorf("Direct %v: after CopyRange the destination differs from the model at byte %d", direct, i)
		}
	}
}

// TestFileCopyRangeErrors checks that bad CopyRange requests fail with the
// right sentinel and write nothing.
func TestFileCopyRangeErrors(t *testing.T) {
	const size = 1 << 20
	src, dst, _ := newCopyPair(t, size, device.FileOptions{})
	mem := device.NewMem(size)
	defer mem.Close()
	ro, err := device.OpenFile(filepath.Join(filepath.Dir(src.String()), "dst"), device.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	for _, tc := range []struct {
		name    string
		dst     *device.File
		src     device.Device
		s, d, n int64
		want    error
	}{
		{"source past the end", dst, src, size - 10, 0, 11, device.ErrOutOfRange},
		{"destination past the end", dst, src, 0, size - 10, 11, device.ErrOutOfRange},
		{"negative offset", dst, src, -1, 0, 10, device.ErrOutOfRange},
		{"source not a file", dst, mem, 0, 0, 4096, device.ErrNotSupported},
		{"source wrapped", dst, device.Device(wrapped{src}), 0, 0, 4096, device.ErrNotSupported},
		{"overlap in one file", dst, dst, 0, 4096, 8192, device.ErrNotSupported},
		{"read-only destination", ro, src, 0, 0, 4096, device.ErrReadOnly},
	} {
		n, err := tc.dst.CopyRange(tc.src, tc.s, tc.d, tc.n)
		var ioe *device.IOError
		if n != 0 || !errors.Is(err, tc.want) || !errors.As(err, &ioe) || ioe.Op != device.OpCopyRange {
			t.Errorf("%s: CopyRange(%s, %d, %d, %d) = %d, %v; want 0 and an *IOError wrapping %v", tc.name, device.Name(tc.src), tc.s, tc.d, tc.n, n, err, tc.want)
		}
	}
	if got := testutil.ReadRange(t, dst, 0, size); !bytes.Equal(got, make([]byte, size)) {
		t.Errorf("refused CopyRange calls wrote to the destination")
	}
	src.Close()
	if n, err := dst.CopyRange(src, 0, 0, 4096); n != 0 || !errors.Is(err, device.ErrClosed) {
		t.Errorf("CopyRange from a closed source = %d, %v; want 0, ErrClosed", n, err)
	}
}

// wrapped hides a *device.File behind a wrapper, which CopyRange must not
// look through (it would bypass what the wrapper does).
type wrapped struct{ device.Device }

func (w wrapped) Unwrap() device.Device { return w.Device }
