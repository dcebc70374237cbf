//go:build linux

package device_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/devicetest"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

// openFile returns a factory for devicetest.Run that creates a sparse file
// under t.TempDir and opens it with o. Sizes are rounded up to round.
func openFile(o device.FileOptions, round int64) devicetest.OpenFunc {
	return func(t *testing.T, size int64) device.Device {
		size = (size + round - 1) / round * round
		path := filepath.Join(t.TempDir(), "dev")
		f, err := device.CreateFile(path, size, o)
		if o.Direct && errors.Is(err, device.ErrNotSupported) {
			t.Skipf("CreateFile(%q, Direct) = %v: the filesystem refuses O_DIRECT", path, err)
		}
		if err != nil {
			t.Fatalf("CreateFile(%q, %d, %+v) = %v", path, size, o, err)
		}
		t.Cleanup(func() {
			if err := f.Close(); err != nil && !errors.Is(err, device.ErrClosed) {
				t.Errorf("Close() = %v", err)
			}
		})
		return f
	}
}

func TestFileConformance(t *testing.T) {
	devicetest.Run(t, openFile(device.FileOptions{}, 1))
}

func TestFileDirectConformance(t *testing.T) {
	devicetest.Run(t, openFile(device.FileOptions{Direct: true}, 4096))
}

// TestFileDirectUnalignedSize runs the suite on O_DIRECT files whose size
// is not a multiple of the direct I/O alignment: the tail goes through the
// page cache.
func TestFileDirectUnalignedSize(t *testing.T) {
	devicetest.Run(t, openFile(device.FileOptions{Direct: true}, 1))
}

func TestFileDirectLimits(t *testing.T) {
	f := openFile(device.FileOptions{Direct: true}, 4096)(t, 1<<20).(*device.File)
	lim := f.Limits()
	if lim.OffsetAlign < 1 || lim.MemAlign < 1 || lim.MemAlign > 4096 {
		t.Fatalf("Limits() = %+v; want positive OffsetAlign and MemAlign, MemAlign <= 4096", lim)
	}
	t.Logf("O_DIRECT limits under %s: %+v", os.TempDir(), lim)
	// A misaligned buffer is refused before any I/O.
	p := device.AlignedBuf(2*lim.OffsetAlign, 4096)
	if lim.MemAlign > 1 {
		if n, err := f.ReadAt(p[1:1+lim.OffsetAlign], 0); n != 0 || !errors.Is(err, device.ErrAlignment) {
			t.Errorf("ReadAt(misaligned buffer, 0) = %d, %v; want 0, ErrAlignment", n, err)
		}
	}
}

func TestFileOpenErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	if _, err := device.OpenFile(missing, device.FileOptions{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenFile(missing) = %v; want fs.ErrNotExist", err)
	} else if ioe := new(device.IOError); !errors.As(err, &ioe) || ioe.Op != device.OpOpen || ioe.Dev != missing {
		t.Errorf("OpenFile(missing) = %#v; want an *IOError with Op open and Dev %q", err, missing)
	}
	if _, err := device.OpenFile(dir, device.FileOptions{ReadOnly: true}); !errors.Is(err, device.ErrNotSupported) {
		t.Errorf("OpenFile(a directory) = %v; want ErrNotSupported", err)
	}
	path := filepath.Join(dir, "f")
	f, err := device.CreateFile(path, 4096, device.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := device.CreateFile(path, 4096, device.FileOptions{}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("CreateFile(existing) = %v; want fs.ErrExist", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("a failed CreateFile removed the existing file: %v", err)
	}
	if _, err := device.CreateFile(filepath.Join(dir, "neg"), -1, device.FileOptions{}); !errors.Is(err, device.ErrOutOfRange) {
		t.Errorf("CreateFile(size -1) = %v; want ErrOutOfRange", err)
	}
}

// TestFileOpenNotRegular checks that OpenFile refuses what is not a
// regular file, judged on the opened descriptor, without blocking on a
// FIFO that has no writer (a read-only open of one would wait forever).
func TestFileOpenNotRegular(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, kind string }{
		{fifo, "FIFO"},
		{"/dev/null", "character device"},
		{"/dev/zero", "character device"},
		{t.TempDir(), "directory"},
	} {
		for _, ro := range []bool{true, false} {
			f, err := device.OpenFile(tc.path, device.FileOptions{ReadOnly: ro})
			if err == nil {
				f.Close()
			}
			if !errors.Is(err, device.ErrNotSupported) || !strings.Contains(fmt.Sprint(err), tc.kind) {
				t.Errorf("OpenFile(%s, ReadOnly %v) = %v; want ErrNotSupported naming a %s", tc.path, ro, err, tc.kind)
			}
		}
	}
}

// TestNewFile checks that NewFile takes over an open descriptor: its
// identity is the descriptor's, whatever the path names now.
func TestNewFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	osf, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := device.OpenFile(path, device.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	// Swap the path for another file: the descriptor still names the first.
	if err := os.Rename(path, path+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := device.NewFile(osf, device.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Identity() != ref.Identity() || f.Size() != 8192 || f.String() != path {
		t.Errorf("NewFile = identity %q size %d name %q; want %q, 8192, %q", f.Identity(), f.Size(), f.String(), ref.Identity(), path)
	}
	if _, err := f.WriteAt([]byte("x"), 0); err != nil {
		t.Errorf("WriteAt on NewFile = %v", err)
	}
}

func TestFileReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	want := bytes.Repeat([]byte("0123456789abcdef"), 1024)
	if err := os.WriteFile(path, want, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := device.OpenFile(path, device.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := f.Size(); got != int64(len(want)) {
		t.Errorf("Size() = %d; want %d", got, len(want))
	}
	if lim := f.Limits(); lim.MaxWriteZeroes != 0 || lim.MaxDiscard != 0 {
		t.Errorf("Limits() = %+v; want no write-zeroes or discard on a read-only file", lim)
	}
	got := make([]byte, len(want))
	if n, err := f.ReadAt(got, 0); n != len(want) || err != nil || !bytes.Equal(got, want) {
		t.Errorf("ReadAt(all, 0) = %d, %v, equal %v; want %d, nil, true", n, err, bytes.Equal(got, want), len(want))
	}
	if n, err := f.WriteAt([]byte("x"), 0); n != 0 || !errors.Is(err, device.ErrReadOnly) {
		t.Errorf("WriteAt on a read-only file = %d, %v; want 0, ErrReadOnly", n, err)
	}
	if err := f.WriteZeroes(0, 16); !errors.Is(err, device.ErrReadOnly) {
		t.Errorf("WriteZeroes on a read-only file = %v; want ErrReadOnly", err)
	}
	if err := f.Discard(0, 16); !errors.Is(err, device.ErrReadOnly) {
		t.Errorf("Discard on a read-only file = %v; want ErrReadOnly", err)
	}
	if err := f.Flush(); err != nil {
		t.Errorf("Flush on a read-only file = %v; want nil", err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, want) {
		t.Error("the read-only file changed")
	}
}

func TestFileIdentity(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	a, err := device.CreateFile(path, 8192, device.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	link := filepath.Join(dir, "link")
	if err := os.Link(path, link); err != nil {
		t.Fatal(err)
	}
	b, err := device.OpenFile(link, device.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c, err := device.CreateFile(filepath.Join(dir, "other"), 8192, device.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if a.Identity() != b.Identity() {
		t.Errorf("Identity() of two opens of one file: %q != %q", a.Identity(), b.Identity())
	}
	if a.Identity() == c.Identity() {
		t.Errorf("Identity() of two files are both %q", a.Identity())
	}
	if got, want := device.Name(a), path; got != want {
		t.Errorf("Name(f) = %q; want %q", got, want)
	}
}

// TestFileWriteZeroesSparse checks that WriteZeroes leaves holes that
// Extents reports, and that the file stays its size.
func TestFileWriteZeroesSparse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	const size = 1 << 20
	f, err := device.CreateFile(path, size, device.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xff}, size), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteZeroes(256<<10, 512<<10); err != nil {
		t.Fatal(err)
	}
	list, err := f.Extents(0, size)
	if err != nil {
		t.Fatal(err)
	}
	want := []device.Extent{
		{Off: 0, Len: 256 << 10},
		{Off: 256 << 10, Len: 512 << 10, Hole: true, Zero: true},
		{Off: 768 << 10, Len: 256 << 10},
	}
	if !equalExtents(list, want) {
		t.Errorf("Extents(0, %d) after WriteZeroes(256K, 512K) = %+v; want %+v", size, list, want)
	}
	if st, err := os.Stat(path); err != nil || st.Size() != size {
		t.Errorf("file size after WriteZeroes = %v, %v; want %d", st.Size(), err, size)
	}
	// A fresh sparse file is one hole.
	g, err := device.CreateFile(path+"2", size, device.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	list, err = g.Extents(100, size-100)
	if want := []device.Extent{{Off: 100, Len: size - 100, Hole: true, Zero: true}}; err != nil || !equalExtents(list, want) {
		t.Errorf("Extents(100, %d) on a new sparse file = %+v, %v; want %+v", size-100, list, err, want)
	}
}

// TestFileWriteZeroesTmpfs runs WriteZeroes on tmpfs, which punches holes
// but has no FALLOC_FL_ZERO_RANGE.
func TestFileWriteZeroesTmpfs(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "devicetest")
	if err != nil {
		t.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	devicetest.Run(t, func(t *testing.T, size int64) device.Device {
		sub, err := os.MkdirTemp(dir, "dev") // the suite may open two devices per subtest
		if err != nil {
			t.Fatal(err)
		}
		f, err := device.CreateFile(filepath.Join(sub, "f"), size, device.FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	})
}

func TestFileGrownUnderneath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	f, err := device.CreateFile(path, 4096, device.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Truncate(path, 8192); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 8192)
	if n, err := f.ReadAt(p, 0); n != 4096 || err == nil {
		t.Errorf("ReadAt(8192 bytes, 0) after the file grew = %d, %v; want 4096, io.EOF", n, err)
	}
	if n, err := f.WriteAt(p[:10], 4096); n != 0 || !errors.Is(err, device.ErrOutOfRange) {
		t.Errorf("WriteAt(10 bytes, 4096) after the file grew = %d, %v; want 0, ErrOutOfRange", n, err)
	}
	// Shrinking it makes reads fail rather than come back short.
	if err := os.Truncate(path, 1024); err != nil {
		t.Fatal(err)
	}
	if n, err := f.ReadAt(p[:4096], 0); n != 1024 || err == nil || errors.Is(err, device.ErrOutOfRange) {
		t.Errorf("ReadAt(4096 bytes, 0) after the file shrank = %d, %v; want 1024 and an I/O error", n, err)
	}
}

func TestFileDirectReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	want := bytes.Repeat([]byte("direct!!"), 1024+1) // 8200 bytes: an unaligned tail
	if err := os.WriteFile(path, want, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := device.OpenFile(path, device.FileOptions{ReadOnly: true, Direct: true})
	if errors.Is(err, device.ErrNotSupported) {
		t.Skipf("OpenFile(Direct) = %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := device.AlignedBuf(3*4096, 4096)
	n, err := f.ReadAt(p, 0)
	if n != len(want) || err == nil || !bytes.Equal(p[:n], want) {
		t.Errorf("ReadAt(%d bytes, 0) = %d, %v, equal %v; want %d, io.EOF, true", len(p), n, err, bytes.Equal(p[:n], want), len(want))
	}
	if n, err := f.WriteAt(p[:4096], 0); n != 0 || !errors.Is(err, device.ErrReadOnly) {
		t.Errorf("WriteAt on a read-only direct file = %d, %v; want 0, ErrReadOnly", n, err)
	}
}

func benchmarkIO(b *testing.B, d device.Device, write bool) {
	const n = 512 << 10
	p := device.AlignedBuf(n, 4096)
	for i := range p {
		p[i] = byte(i)
	}
	slots := d.Size() / n
	if !write {
		for off := int64(0); off+n <= d.Size(); off += n {
			if _, err := d.WriteAt(p, off); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.SetBytes(n)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		off := int64(i) % slots * n
		var err error
		if write {
			_, err = d.WriteAt(p, off)
		} else {
			_, err = d.ReadAt(p, off)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIO(b *testing.B) {
	const size = 64 << 20
	open := map[string]func(b *testing.B) device.Device{
		"mem": func(b *testing.B) device.Device { return device.NewMem(size) },
		"file": func(b *testing.B) device.Device {
			f, err := device.CreateFile(filepath.Join(b.TempDir(), "f"), size, device.FileOptions{})
			if err != nil {
				b.Fatal(err)
			}
			return f
		},
		"file-direct": func(b *testing.B) device.Device {
			f, err := device.CreateFile(filepath.Join(b.TempDir(), "f"), size, device.FileOptions{Direct: true})
			if errors.Is(err, device.ErrNotSupported) {
				b.Skip(err)
			}
			if err != nil {
				b.Fatal(err)
			}
			return f
		},
	}
	for _, name := range []string{"mem", "file", "file-direct"} {
		for _, op := range []string{"write", "read"} {
			b.Run(name+"/"+op, func(b *testing.B) {
				d := open[name](b)
				defer d.Close()
				benchmarkIO(b, d, op == "write")
			})
		}
	}
}

func TestFileWriteBehindConformance(t *testing.T) {
	devicetest.Run(t, openFile(device.FileOptions{WriteBehind: 64 << 10}, 1))
}

// TestFileWriteBehind writes 8 MiB in ascending chunks with a
// write-behind of 2 MiB and checks with mincore that 1 MiB chunks behind
// the window left the page cache, that 64 KiB ones (below WriteBehind/16)
// were left to it, and that the data is intact.
func TestFileWriteBehind(t *testing.T) {
	const size = 8 << 20
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type == unix.TMPFS_MAGIC {
		t.Skipf("%s is on tmpfs (or statfs failed: %v): its pages cannot be dropped", dir, err)
	}
	const pages = 6 << 20 / 4096 // of the first 6 MiB, behind the window
	// Without write-behind the pages stay cached: that shows mincore
	// sees them, so that the first case cannot pass for want of a probe.
	for _, tc := range []struct {
		behind, chunk int64
		min, max      int // cached pages of the first 6 MiB
	}{
		{behind: 0, chunk: 1 << 20, min: pages * 3 / 4, max: pages},
		{behind: 2 << 20, chunk: 1 << 20, min: 0, max: pages / 16},
		{behind: 2 << 20, chunk: 64 << 10, min: pages * 3 / 4, max: pages},
	} {
		chunk := tc.chunk
		path := filepath.Join(dir, fmt.Sprintf("wb%d-%d", tc.behind, chunk))
		f, err := device.CreateFile(path, size, device.FileOptions{WriteBehind: tc.behind})
		if err != nil {
			t.Fatal(err)
		}
		want := testutil.Pattern(1, 0, size)
		for off := int64(0); off < size; off += chunk {
			if _, err := f.WriteAt(want[off:off+chunk], off); err != nil {
				t.Fatalf("WriteAt(%d) = %v", off, err)
			}
		}
		if n := testutil.CachedPages(t, path, 6<<20); n < tc.min || n > tc.max {
			t.Errorf("WriteBehind %d, %d-byte writes: %d of the first %d pages cached; want %d to %d", tc.behind, chunk, n, pages, tc.min, tc.max)
		}
		got := make([]byte, size)
		if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
			t.Errorf("WriteBehind %d: ReadAt(0) = %v, data equal %v; want the data written", tc.behind, err, bytes.Equal(got, want))
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFileDropBehindConformance(t *testing.T) {
	devicetest.Run(t, openFile(device.FileOptions{DropBehind: true}, 1))
}

// TestFileDropBehind reads an 8 MiB file whose first MiB is cached and
// the rest not, and checks with mincore that
// DropBehind left the cached pages cached and cached no other, where
// plain reads cache it all (which shows that the probe sees pages). The
// data must be intact.
func TestFileDropBehind(t *testing.T) {
	const size = 8 << 20
	dir := t.TempDir()
	want := testutil.Pattern(2, 0, size)
	for _, drop := range []bool{false, true} {
		path := testutil.WriteFile(t, dir, fmt.Sprintf("drop-%v", drop), want)
		testutil.SkipUnlessPageCache(t, path)
		testutil.Uncache(t, path)
		// Cache the first MiB, and nothing else: without readahead
		// (POSIX_FADV_RANDOM on this descriptor only), which would
		// still be bringing pages in when the cached pages are counted.
		// Such a page was counted but then dropped (510 of 512 pages,
		// in a run beside a CPU hog).
		raw := openRaw(t, path)
		if err := unix.Fadvise(int(raw.Fd()), 0, 0, unix.FADV_RANDOM); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(raw, make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		before := testutil.CachedPages(t, path, size)
		if before != 256 {
			t.Fatalf("%d pages cached after reading the first 256 without readahead; want 256", before)
		}
		f, err := device.OpenFile(path, device.FileOptions{ReadOnly: true, DropBehind: drop})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, size)
		for off := int64(0); off < size; off += 1 << 20 {
			if _, err := f.ReadAt(got[off:off+1<<20], off); err != nil {
				t.Fatalf("ReadAt(%d) = %v", off, err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Errorf("DropBehind %v: the data read differs from the file's", drop)
		}
		first, all := testutil.CachedPages(t, path, 1<<20), testutil.CachedPages(t, path, size)
		if first != 256 {
			t.Errorf("DropBehind %v: %d of the first 256 pages cached after the read; want all: pages cached before must stay", drop, first)
		}
		if drop && all != before || !drop && all < size/4096*3/4 {
			t.Errorf("DropBehind %v: %d of %d pages cached after the read, %d before", drop, all, size/4096, before)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFileDropBehindTmpfs reads with DropBehind on tmpfs, which refuses
// RWF_DONTCACHE: the reads go through the page cache and return the data.
func TestFileDropBehindTmpfs(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "kcopyd-test-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "f")
	want := testutil.Pattern(3, 0, 3<<20+100)
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := device.OpenFile(path, device.FileOptions{ReadOnly: true, DropBehind: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(want))
	for off := 0; off < len(want); off += 1 << 20 {
		end := min(off+1<<20, len(want))
		if n, err := f.ReadAt(got[off:end], int64(off)); err != nil || n != end-off {
			t.Fatalf("ReadAt(%d) = %d, %v; want %d, nil", off, n, err, end-off)
		}
	}
	if !bytes.Equal(got, want) {
		t.Error("the data read differs from the file's")
	}
}

// openRaw opens path read-only for the test's own use; it is closed at
// the test's end.
func openRaw(t *testing.T, path string) *os.File {
	t.Helper()
	fd, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fd.Close() })
	return fd
}

// TestFileKeepAllocation checks both zeroing orders on a written file: by
// default WriteZeroes punches a hole (the blocks are freed); with
// KeepAllocation it zeroes in place (the blocks stay allocated). Both read
// back as zeroes.
func TestFileKeepAllocation(t *testing.T) {
	for _, keep := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "f")
		const n = 4 << 20
		if err := os.WriteFile(path, bytes.Repeat([]byte{0xab}, n), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := device.OpenFile(path, device.FileOptions{KeepAllocation: keep})
		if err != nil {
			t.Fatal(err)
		}
		blocks := func() int64 {
			var st unix.Stat_t
			if err := unix.Stat(path, &st); err != nil {
				t.Fatal(err)
			}
			return st.Blocks
		}
		f.Flush()
		before := blocks()
		if err := f.WriteZeroes(1<<20, 2<<20); err != nil {
			if errors.Is(err, device.ErrNotSupported) {
				t.Skipf("%s: %v", path, err)
			}
			t.Fatal(err)
		}
		after := blocks()
		if !testutil.CheckZero(t, f, 1<<20, 2<<20) {
			t.Fatalf("KeepAllocation=%v: zeroed range does not read as zeroes", keep)
		}
		f.Close()
		if freed := after < before; freed == keep {
			t.Fatalf("KeepAllocation=%v: %d blocks before, %d after zeroing 2 MiB", keep, before, after)
		}
	}
}
