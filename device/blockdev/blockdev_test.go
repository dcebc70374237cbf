//go:build linux

package blockdev_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/blockdev"
	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
)

const (
	KiB = 1 << 10
	MiB = 1 << 20
	GiB = 1 << 30
)

// pattern returns n bytes that depend on their offset and on seed, so that
// misplaced data is noticed.
func pattern(n int, off int64, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		p := off + int64(i)
		b[i] = byte(p) ^ byte(p>>9) ^ byte(p>>17) ^ seed ^ 0x5a
		if b[i] == 0 {
			b[i] = 1 // never zero, so zeroing is visible
		}
	}
	return b
}

// open opens path with opts and closes it in t.Cleanup unless the test
// closed it already.
func open(t testing.TB, path string, opts blockdev.Options) *blockdev.Device {
	t.Helper()
	d, err := blockdev.Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s, %+v): %v", path, opts, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil && !errors.Is(err, device.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// readAll reads the whole range [off, off+n) of d through a buffer aligned
// for d.
func readAll(t testing.TB, d device.Device, off int64, n int) []byte {
	t.Helper()
	l := device.LimitsOf(d)
	b := device.AlignedBuf(n, max(l.MemAlign, 1))
	if got, err := d.ReadAt(b, off); got != n || err != nil {
		t.Fatalf("ReadAt(%d bytes, %d) = %d, %v; want %d, nil", n, off, got, err, n)
	}
	return b
}

// writeAll writes p at off through a buffer aligned for d.
func writeAll(t testing.TB, d device.Device, p []byte, off int64) {
	t.Helper()
	b := device.AlignedBuf(len(p), max(device.LimitsOf(d).MemAlign, 1))
	copy(b, p)
	if got, err := d.WriteAt(b, off); got != len(p) || err != nil {
		t.Fatalf("WriteAt(%d bytes, %d) = %d, %v; want %d, nil", len(p), off, got, err, len(p))
	}
}

// fileBytes reads n bytes at off from a regular file.
func fileBytes(t testing.TB, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("reading backing file at %d: %v", off, err)
	}
	return b
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func TestOpenNotBlockDevice(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{file, dir, fifo, "/dev/null"} {
		d, err := blockdev.Open(path, blockdev.Options{})
		if !errors.Is(err, blockdev.ErrNotBlockDevice) {
			if d != nil {
				d.Close()
			}
			t.Errorf("Open(%s) = %v; want ErrNotBlockDevice", path, err)
			continue
		}
		var ioe *device.IOError
		if !errors.As(err, &ioe) || ioe.Op != device.OpOpen || ioe.Dev != path {
			t.Errorf("Open(%s) error %#v; want *device.IOError{Op: open, Dev: %s}", path, err, path)
		}
		if ok, err := blockdev.IsBlockDevice(path); ok || err != nil {
			t.Errorf("IsBlockDevice(%s) = %v, %v; want false, nil", path, ok, err)
		}
		if _, err := blockdev.InUse(path); !errors.Is(err, blockdev.ErrNotBlockDevice) {
			t.Errorf("InUse(%s) = %v; want ErrNotBlockDevice", path, err)
		}
	}
	missing := filepath.Join(dir, "missing")
	if _, err := blockdev.Open(missing, blockdev.Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open(%s) = %v; want ErrNotExist", missing, err)
	}
	if ok, err := blockdev.IsBlockDevice(missing); ok || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("IsBlockDevice(%s) = %v, %v; want false, ErrNotExist", missing, ok, err)
	}
}

// sysfsQueue reads a queue attribute of the whole-disk device dev (such as
// /dev/loop3) through /sys/block, a different path from the one blockdev
// uses.
func sysfsQueue(t testing.TB, dev, name string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "queue", name))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestGeometryAndLimits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sector int
		opts   []looptest.Option
		direct bool
	}{
		{"512/buffered", 512, nil, false},
		{"512/direct", 512, nil, true},
		{"4096/buffered", 4096, []looptest.Option{looptest.SectorSize(4096)}, false},
		{"4096/direct", 4096, []looptest.Option{looptest.SectorSize(4096)}, true},
		{"4096/direct/loop-dio", 4096, []looptest.Option{looptest.SectorSize(4096), looptest.DirectIO()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const size = 64 * MiB
			path := looptest.New(t, size, tc.opts...)
			d := open(t, path, blockdev.Options{Direct: tc.direct})

			if got := d.Size(); got != size {
				t.Errorf("Size() = %d; want %d", got, size)
			}
			if got := d.String(); got != path {
				t.Errorf("String() = %q; want %q", got, path)
			}
			var st unix.Stat_t
			if err := unix.Stat(path, &st); err != nil {
				t.Fatal(err)
			}
			if got, want := d.Identity(), fmt.Sprintf("blk:%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)); got != want {
				t.Errorf("Identity() = %q; want %q", got, want)
			}

			l := d.Limits()
			t.Logf("Limits() = %+v", l)
			t.Logf("Info() = %+v", d.Info())
			if l.LogicalBlockSize != tc.sector {
				t.Errorf("LogicalBlockSize = %d; want %d", l.LogicalBlockSize, tc.sector)
			}
			if info := d.Info(); info.PhysicalBlockSize < tc.sector || info.Partition || info.Size != size {
				t.Errorf("Info() = %+v; want PhysicalBlockSize >= %d, not a partition, Size %d", info, tc.sector, size)
			}
			if tc.direct {
				if l.OffsetAlign != tc.sector {
					t.Errorf("direct: OffsetAlign = %d; want the logical block size %d", l.OffsetAlign, tc.sector)
				}
				if l.MemAlign < 1 || l.MemAlign > 4096 || l.MemAlign&(l.MemAlign-1) != 0 {
					t.Errorf("direct: MemAlign = %d; want a power of two in [1, 4096]", l.MemAlign)
				}
				if info := d.Info(); info.DioMemAlign != 0 && l.MemAlign != min(info.DioMemAlign, 4096) {
					t.Errorf("direct: MemAlign = %d; want statx's %d", l.MemAlign, info.DioMemAlign)
				}
			} else if l.OffsetAlign != 1 || l.MemAlign != 1 {
				t.Errorf("buffered: OffsetAlign, MemAlign = %d, %d; want 1, 1", l.OffsetAlign, l.MemAlign)
			}

			// Queue limits, checked against /sys/block/<name>/queue.
			info := d.Info()
			if got, want := info.MaxSectorsBytes, sysfsQueue(t, path, "max_sectors_kb")*KiB; got != want {
				t.Errorf("Info().MaxSectorsBytes = %d; want max_sectors_kb = %d", got, want)
			}
			if l.MaxTransfer != 0 {
				t.Errorf("MaxTransfer = %d; want 0 (the kernel splits long requests)", l.MaxTransfer)
			}
			if got, want := info.WriteZeroesMaxBytes, sysfsQueue(t, path, "write_zeroes_max_bytes"); got != want {
				t.Errorf("Info().WriteZeroesMaxBytes = %d; want %d", got, want)
			}
			if got, want := info.DiscardMaxBytes, sysfsQueue(t, path, "discard_max_bytes"); got != want {
				t.Errorf("Info().DiscardMaxBytes = %d; want %d", got, want)
			}
			if l.MaxWriteZeroes <= 0 || l.MaxWriteZeroes%int64(tc.sector) != 0 {
				t.Errorf("MaxWriteZeroes = %d; want > 0, a multiple of %d", l.MaxWriteZeroes, tc.sector)
			}
			if want := min(info.DiscardMaxBytes, 1*GiB); l.MaxDiscard != want {
				t.Errorf("MaxDiscard = %d; want %d", l.MaxDiscard, want)
			}
			if l.Zoned != device.ZoneNone {
				t.Errorf("Zoned = %v; want none", l.Zoned)
			}
		})
	}
}

func TestReadWriteRoundTrip(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			const size = 16 * MiB
			path, backing := looptest.NewWithFile(t, size)
			d := open(t, path, blockdev.Options{Direct: direct})

			want := pattern(3*MiB, 5*MiB, 1)
			writeAll(t, d, want, 5*MiB)
			if got := readAll(t, d, 5*MiB, 3*MiB); !bytes.Equal(got, want) {
				t.Fatalf("ReadAt after WriteAt returned other data")
			}
			// Around the write the device still reads zeroes.
			if !isZero(readAll(t, d, 5*MiB-4096, 4096)) || !isZero(readAll(t, d, 8*MiB, 4096)) {
				t.Errorf("bytes around the written range are not zero")
			}
			// The data really reached the device: after Flush the loop
			// driver has written it into the backing file.
			if err := d.Flush(); err != nil {
				t.Fatalf("Flush: %v", err)
			}
			if got := fileBytes(t, backing, 5*MiB, 3*MiB); !bytes.Equal(got, want) {
				t.Errorf("backing file does not hold the written data after Flush")
			}
			// And a second, independent handle sees it.
			d2 := open(t, path, blockdev.Options{ReadOnly: true, Direct: true})
			if got := readAll(t, d2, 5*MiB, 3*MiB); !bytes.Equal(got, want) {
				t.Errorf("second handle reads other data")
			}
			if d2.Identity() != d.Identity() {
				t.Errorf("Identity() of two handles = %q, %q; want equal", d.Identity(), d2.Identity())
			}
		})
	}
}

func TestPastTheEnd(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			const size = 4 * MiB
			path := looptest.New(t, size, looptest.SectorSize(4096))
			d := open(t, path, blockdev.Options{Direct: direct})
			last := pattern(8192, size-8192, 2)
			writeAll(t, d, last, size-8192)

			b := device.AlignedBuf(8192, 4096)
			// A read crossing Size returns the bytes before it and EOF.
			if n, err := d.ReadAt(b, size-4096); n != 4096 || err != io.EOF {
				t.Errorf("ReadAt(8192, size-4096) = %d, %v; want 4096, EOF", n, err)
			} else if !bytes.Equal(b[:4096], last[4096:]) {
				t.Errorf("ReadAt(8192, size-4096) returned other data")
			}
			for _, off := range []int64{size, size + 4096} {
				if n, err := d.ReadAt(b, off); n != 0 || err != io.EOF {
					t.Errorf("ReadAt(8192, %d) = %d, %v; want 0, EOF", off, n, err)
				}
			}
			if n, err := d.ReadAt(b, -4096); n != 0 || !errors.Is(err, device.ErrOutOfRange) {
				t.Errorf("ReadAt(8192, -4096) = %d, %v; want 0, ErrOutOfRange", n, err)
			}
			// A write crossing Size writes nothing.
			junk := device.AlignedBuf(8192, 4096)
			copy(junk, pattern(8192, 0, 3))
			for _, off := range []int64{size - 4096, size, -4096} {
				n, err := d.WriteAt(junk, off)
				var ioe *device.IOError
				if n != 0 || !errors.Is(err, device.ErrOutOfRange) || !errors.As(err, &ioe) || ioe.Op != device.OpWrite {
					t.Errorf("WriteAt(8192, %d) = %d, %v; want 0, *IOError wrapping ErrOutOfRange", off, n, err)
				}
			}
			if got := readAll(t, d, size-8192, 8192); !bytes.Equal(got, last) {
				t.Errorf("a refused write changed the end of the device")
			}
			if err := d.WriteZeroes(size-4096, 8192); !errors.Is(err, device.ErrOutOfRange) {
				t.Errorf("WriteZeroes(size-4096, 8192) = %v; want ErrOutOfRange", err)
			}
			if err := d.Discard(size-4096, 8192); !errors.Is(err, device.ErrOutOfRange) {
				t.Errorf("Discard(size-4096, 8192) = %v; want ErrOutOfRange", err)
			}
			if got := readAll(t, d, size-8192, 8192); !bytes.Equal(got, last) {
				t.Errorf("a refused WriteZeroes or Discard changed the end of the device")
			}
		})
	}
}

// TestDirectAlignment4Kn checks that a 4Kn device opened with O_DIRECT
// refuses 512-byte aligned requests with ErrAlignment, and that this limit
// is the kernel's own: the same requests on a raw O_DIRECT descriptor fail
// with EINVAL.
func TestDirectAlignment4Kn(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []looptest.Option
	}{
		{"loop", []looptest.Option{looptest.SectorSize(4096)}},
		{"loop-dio", []looptest.Option{looptest.SectorSize(4096), looptest.DirectIO()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := looptest.New(t, 8*MiB, tc.opts...)
			d := open(t, path, blockdev.Options{Direct: true})
			l := d.Limits()
			if l.OffsetAlign != 4096 {
				t.Fatalf("OffsetAlign = %d; want 4096", l.OffsetAlign)
			}
			data := pattern(16*KiB, 64*KiB, 4)
			writeAll(t, d, data, 64*KiB)

			raw, err := unix.Open(path, unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(raw)

			page := device.AlignedBuf(64*KiB, 4096)
			misalignedMem := page[l.MemAlign/2 : l.MemAlign/2+8192]
			for _, tc := range []struct {
				name string
				buf  []byte
				off  int64
			}{
				{"offset 512", page[:8192], 64*KiB + 512},
				{"length 512", page[:512], 64 * KiB},
				{"length 4096+512", page[:4096+512], 64 * KiB},
				{"memory", misalignedMem, 64 * KiB},
			} {
				if tc.name == "memory" && l.MemAlign <= 1 {
					continue
				}
				if n, err := d.ReadAt(tc.buf, tc.off); n != 0 || !errors.Is(err, device.ErrAlignment) {
					t.Errorf("%s: ReadAt(%d bytes, %d) = %d, %v; want 0, ErrAlignment", tc.name, len(tc.buf), tc.off, n, err)
				}
				if n, err := d.WriteAt(tc.buf, tc.off); n != 0 || !errors.Is(err, device.ErrAlignment) {
					t.Errorf("%s: WriteAt(%d bytes, %d) = %d, %v; want 0, ErrAlignment", tc.name, len(tc.buf), tc.off, n, err)
				}
				// The kernel agrees that the request is invalid.
				if n, err := unix.Pread(raw, tc.buf, tc.off); err != unix.EINVAL {
					t.Errorf("%s: kernel pread(O_DIRECT, %d bytes, %d) = %d, %v; want EINVAL", tc.name, len(tc.buf), tc.off, n, err)
				}
			}
			if err := d.WriteZeroes(64*KiB+512, 4096); !errors.Is(err, device.ErrAlignment) {
				t.Errorf("WriteZeroes(+512, 4096) = %v; want ErrAlignment", err)
			}
			if err := d.Discard(64*KiB, 512); !errors.Is(err, device.ErrAlignment) {
				t.Errorf("Discard(64K, 512) = %v; want ErrAlignment", err)
			}
			// Nothing was written by the refused requests.
			if got := readAll(t, d, 64*KiB, 16*KiB); !bytes.Equal(got, data) {
				t.Errorf("refused misaligned requests changed the device")
			}
			// Aligned requests at the stated alignment work.
			if n, err := d.ReadAt(page[l.MemAlign%4096:][:4096], 68*KiB); n != 4096 || err != nil {
				t.Errorf("ReadAt(4096 bytes at MemAlign, 68K) = %d, %v; want 4096, nil", n, err)
			}
		})
	}
}

func TestBufferedUnaligned(t *testing.T) {
	path := looptest.New(t, 4*MiB, looptest.SectorSize(4096))
	d := open(t, path, blockdev.Options{})
	want := pattern(1000, 12345, 5)
	writeAll(t, d, want, 12345)
	b := make([]byte, 1001)
	if n, err := d.ReadAt(b[1:], 12345); n != 1000 || err != nil || !bytes.Equal(b[1:], want) {
		t.Errorf("buffered ReadAt(1000 bytes at odd address, 12345) = %d, %v (equal %v); want 1000, nil, equal", n, err, bytes.Equal(b[1:], want))
	}
}

func TestWriteZeroes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		direct   bool
		off, len int64
	}{
		{"direct/aligned", true, 1 * MiB, 2 * MiB},
		{"buffered/aligned", false, 1 * MiB, 2 * MiB},
		{"buffered/unaligned", false, 1*MiB + 100, 2*MiB + 3000},
		{"buffered/inside one block", false, 1*MiB + 100, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const size = 8 * MiB
			path, backing := looptest.NewWithFile(t, size, looptest.SectorSize(4096))
			d := open(t, path, blockdev.Options{Direct: tc.direct})
			all := pattern(size, 0, 6)
			writeAll(t, d, all, 0)
			if err := d.WriteZeroes(tc.off, tc.len); err != nil {
				t.Fatalf("WriteZeroes(%d, %d): %v", tc.off, tc.len, err)
			}
			got := readAll(t, d, 0, size)
			want := bytes.Clone(all)
			clear(want[tc.off : tc.off+tc.len])
			if i := device.FirstDiff(got, want); i >= 0 {
				t.Fatalf("after WriteZeroes(%d, %d) byte %d = %#x; want %#x", tc.off, tc.len, i, got[i], want[i])
			}
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			if got := fileBytes(t, backing, 0, size); device.FirstDiff(got, want) >= 0 {
				t.Errorf("backing file after WriteZeroes and Flush differs at byte %d", device.FirstDiff(got, want))
			}
			if err := d.WriteZeroes(0, 0); err != nil {
				t.Errorf("WriteZeroes(0, 0) = %v; want nil", err)
			}
		})
	}
}

// TestWriteZeroesHuge zeroes more than one 1 GiB ioctl piece on a sparse
// 3 GiB loop device and checks the piece boundaries.
func TestWriteZeroesHuge(t *testing.T) {
	if testing.Short() {
		t.Skip("zeroes 2.5 GiB of a loop device; skipped with -short")
	}
	const size = 3 * GiB
	path := looptest.New(t, size)
	d := open(t, path, blockdev.Options{Direct: true})
	marks := []int64{0, 1*GiB - 4096, 1 * GiB, 2*GiB - 4096, 2 * GiB, 5 * GiB / 2, 5*GiB/2 + 4096, size - 4096}
	for _, off := range marks {
		writeAll(t, d, pattern(4096, off, 7), off)
	}
	const zlen = 5*GiB/2 + 4096 // ends just after the 2.5 GiB mark
	if err := d.WriteZeroes(0, zlen); err != nil {
		t.Fatalf("WriteZeroes(0, %d): %v", zlen, err)
	}
	for _, off := range marks {
		got := readAll(t, d, off, 4096)
		if off < zlen && !isZero(got) {
			t.Errorf("block at %d not zeroed", off)
		}
		if off >= zlen && !bytes.Equal(got, pattern(4096, off, 7)) {
			t.Errorf("block at %d, after the zeroed range, changed", off)
		}
	}
}

func TestDiscard(t *testing.T) {
	const size = 8 * MiB
	path, backing := looptest.NewWithFile(t, size)
	d := open(t, path, blockdev.Options{Direct: true})
	if d.Limits().MaxDiscard == 0 {
		t.Skipf("%s cannot discard (discard_max_bytes = 0)", path)
	}
	writeAll(t, d, pattern(size, 0, 8), 0)
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.Discard(2*MiB, 3*MiB); err != nil {
		t.Fatalf("Discard(2M, 3M): %v", err)
	}
	// A file-backed loop device punches a hole in its backing file: the
	// range reads zeroes and is no longer allocated there.
	if !isZero(readAll(t, d, 2*MiB, 3*MiB)) {
		t.Errorf("discarded range of a loop device does not read zeroes")
	}
	if got, want := readAll(t, d, 5*MiB, 4096), pattern(4096, 5*MiB, 8); !bytes.Equal(got, want) {
		t.Errorf("Discard changed data after the range")
	}
	f, err := os.Open(backing)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if data, err := unix.Seek(int(f.Fd()), 2*MiB, unix.SEEK_DATA); err != nil || data < 5*MiB {
		t.Errorf("SEEK_DATA(2M) in the backing file = %d, %v; want a hole up to 5M", data, err)
	}
}

func TestReadOnly(t *testing.T) {
	path := looptest.New(t, 4*MiB)
	d := open(t, path, blockdev.Options{ReadOnly: true})
	if l := d.Limits(); l.MaxWriteZeroes != 0 || l.MaxDiscard != 0 {
		t.Errorf("read-only Limits() MaxWriteZeroes, MaxDiscard = %d, %d; want 0, 0", l.MaxWriteZeroes, l.MaxDiscard)
	}
	if n, err := d.WriteAt(make([]byte, 4096), 0); n != 0 || !errors.Is(err, device.ErrReadOnly) {
		t.Errorf("WriteAt on read-only = %d, %v; want 0, ErrReadOnly", n, err)
	}
	if err := d.WriteZeroes(0, 4096); !errors.Is(err, device.ErrReadOnly) {
		t.Errorf("WriteZeroes on read-only = %v; want ErrReadOnly", err)
	}
	if err := d.Discard(0, 4096); !errors.Is(err, device.ErrReadOnly) {
		t.Errorf("Discard on read-only = %v; want ErrReadOnly", err)
	}
	if err := d.Flush(); err != nil {
		t.Errorf("Flush on read-only = %v; want nil", err)
	}

	// A device the kernel marks read-only cannot be opened read-write.
	ro := looptest.New(t, 4*MiB, looptest.ReadOnly())
	if d, err := blockdev.Open(ro, blockdev.Options{}); !errors.Is(err, device.ErrReadOnly) {
		if d != nil {
			d.Close()
		}
		t.Errorf("Open(read-only loop, read-write) = %v; want ErrReadOnly", err)
	}
	open(t, ro, blockdev.Options{ReadOnly: true})
}

func TestExclusive(t *testing.T) {
	path := looptest.New(t, 4*MiB)
	if u, err := blockdev.InUse(path); err != nil || u.Busy() {
		t.Fatalf("InUse(fresh loop) = %v, %v; want not in use", u, err)
	}
	d := open(t, path, blockdev.Options{Exclusive: true})

	d2, err := blockdev.Open(path, blockdev.Options{Exclusive: true})
	if !errors.Is(err, blockdev.ErrBusy) || !errors.Is(err, unix.EBUSY) {
		if d2 != nil {
			d2.Close()
		}
		t.Fatalf("second exclusive Open = %v; want ErrBusy wrapping EBUSY", err)
	}
	var ioe *device.IOError
	if !errors.As(err, &ioe) || ioe.Op != device.OpOpen {
		t.Errorf("second exclusive Open error %#v; want *device.IOError with Op open", err)
	}
	t.Logf("exclusive open error: %v", err)
	if u, err := blockdev.InUse(path); err != nil || !u.Claimed {
		t.Errorf("InUse(claimed loop) = %v, %v; want claimed", u, err)
	}
	// A shared open still works, as the kernel allows it.
	open(t, path, blockdev.Options{ReadOnly: true})

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d3 := open(t, path, blockdev.Options{Exclusive: true})
	if err := d3.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestMounted mounts an ext4 file system on a loop device and checks that
// InUse sees the mount and an exclusive Open is refused.
func TestMounted(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	path := looptest.New(t, 32*MiB)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "ext4", path, dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount in this environment: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})

	u, err := blockdev.InUse(path)
	if err != nil {
		t.Fatal(err)
	}
	if !u.Claimed || len(u.Mounts) != 1 || u.Mounts[0] != dir {
		t.Errorf("InUse(mounted) = %+v; want mounted on %s and claimed", u, dir)
	}
	t.Logf("InUse: %v", u)
	if d, err := blockdev.Open(path, blockdev.Options{Exclusive: true}); !errors.Is(err, blockdev.ErrBusy) {
		if d != nil {
			d.Close()
		}
		t.Errorf("exclusive Open of a mounted device = %v; want ErrBusy", err)
	}
}

// TestPartition checks that a partition takes its limits from its disk's
// queue and that claiming it makes its disk busy.
func TestPartition(t *testing.T) {
	disk := looptest.New(t, 32*MiB, looptest.PartScan())
	part := looptest.AddPartition(t, disk, 1, 1*MiB, 16*MiB)

	dd := open(t, disk, blockdev.Options{Direct: true})
	p := open(t, part, blockdev.Options{Direct: true, Exclusive: true})
	if got := p.Size(); got != 16*MiB {
		t.Errorf("partition Size() = %d; want %d", got, 16*MiB)
	}
	if !p.Info().Partition || dd.Info().Partition {
		t.Errorf("Info().Partition: partition %v, disk %v; want true, false", p.Info().Partition, dd.Info().Partition)
	}
	if got, want := p.Limits(), dd.Limits(); got != want {
		t.Errorf("partition Limits() = %+v; want the disk's %+v", got, want)
	}
	if got := p.Info().MaxSectorsBytes; got != sysfsQueue(t, disk, "max_sectors_kb")*KiB {
		t.Errorf("partition MaxSectorsBytes = %d; want the disk's max_sectors_kb", got)
	}
	if p.Identity() == dd.Identity() {
		t.Errorf("partition and disk have the same Identity %q", p.Identity())
	}
	// Placement puts the partition 1 MiB into the store its disk starts
	// (the loop's backing file), so overlap between the two can be
	// detected.
	store, base := dd.Placement()
	if id, off := p.Placement(); id != store || off != base+1*MiB {
		t.Errorf("partition Placement() = %q, %d; want %q, %d", id, off, store, base+1*MiB)
	}

	// Data written to the partition lands 1 MiB into the disk.
	want := pattern(64*KiB, 0, 9)
	writeAll(t, p, want, 0)
	if got := readAll(t, dd, 1*MiB, 64*KiB); !bytes.Equal(got, want) {
		t.Errorf("partition data is not at the partition's offset on the disk")
	}

	// The exclusively open partition makes the whole disk busy.
	u, err := blockdev.InUse(disk)
	if err != nil {
		t.Fatal(err)
	}
	if !u.Claimed {
		t.Errorf("InUse(disk with claimed partition) = %+v; want claimed", u)
	}
	if d, err := blockdev.Open(disk, blockdev.Options{Exclusive: true}); !errors.Is(err, blockdev.ErrBusy) {
		if d != nil {
			d.Close()
		}
		t.Errorf("exclusive Open(disk with claimed partition) = %v; want ErrBusy", err)
	}
}

func TestClose(t *testing.T) {
	path := looptest.New(t, 4*MiB)
	d, err := blockdev.Open(path, blockdev.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := d.Close(); !errors.Is(err, device.ErrClosed) {
		t.Errorf("second Close = %v; want ErrClosed", err)
	}
	b := make([]byte, 4096)
	if _, err := d.ReadAt(b, 0); !errors.Is(err, device.ErrClosed) {
		t.Errorf("ReadAt after Close = %v; want ErrClosed", err)
	}
	if _, err := d.WriteAt(b, 0); !errors.Is(err, device.ErrClosed) {
		t.Errorf("WriteAt after Close = %v; want ErrClosed", err)
	}
	if err := d.WriteZeroes(0, 4096); !errors.Is(err, device.ErrClosed) {
		t.Errorf("WriteZeroes after Close = %v; want ErrClosed", err)
	}
	if err := d.Discard(0, 4096); !errors.Is(err, device.ErrClosed) {
		t.Errorf("Discard after Close = %v; want ErrClosed", err)
	}
	if err := d.Flush(); !errors.Is(err, device.ErrClosed) {
		t.Errorf("Flush after Close = %v; want ErrClosed", err)
	}
	// Close released the exclusive claim.
	open(t, path, blockdev.Options{Exclusive: true})
}

// TestConcurrent runs writers, readers, zeroers and a Close in parallel;
// run it with -race. Every call either succeeds or, after Close, fails with
// ErrClosed.
func TestConcurrent(t *testing.T) {
	const size = 16 * MiB
	path := looptest.New(t, size)
	d, err := blockdev.Open(path, blockdev.Options{Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	const workers, chunk = 8, 64 * KiB
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			buf := device.AlignedBuf(chunk, 4096)
			for i := range 32 {
				off := int64((i*workers+w)*chunk) % size
				copy(buf, pattern(chunk, off, byte(w)))
				var err error
				switch i % 3 {
				case 0:
					_, err = d.WriteAt(buf, off)
				case 1:
					_, err = d.ReadAt(buf, off)
				case 2:
					err = d.WriteZeroes(off, chunk)
				}
				if err != nil && !errors.Is(err, device.ErrClosed) {
					t.Errorf("worker %d op %d at %d: %v", w, i, off, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close during I/O: %v", err)
		}
	})
	wg.Wait()
}
