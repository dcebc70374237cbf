//go:build linux

package device

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
)

// copyFiles returns a source file of size bytes holding data and an empty
// destination of the same size, in the directories srcDir and dstDir.
func copyFiles(t *testing.T, srcDir, dstDir string, data []byte) (src, dst *File) {
	t.Helper()
	sp := filepath.Join(srcDir, "src")
	if err := os.WriteFile(sp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := OpenFile(sp, FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	dst, err = CreateFile(filepath.Join(dstDir, "dst"), int64(len(data)), FileOptions{})
	if err != nil {
		src.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close(); dst.Close() })
	return src, dst
}

func testData(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + i>>12)
	}
	return p
}

// checkCopied fails unless dst holds data.
func checkCopied(t *testing.T, dst *File, data []byte) {
	t.Helper()
	got := make([]byte, len(data))
	if _, err := dst.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after CopyRange, %s does not hold the source's data (read error %v)", dst, err)
	}
}

// TestFileCopyRangeModes forces each copy mode and checks that a copy
// still happens, through copy_file_range, or is refused without changing
// the destination.
func TestFileCopyRangeModes(t *testing.T) {
	data := testData(1 << 20)
	for _, mode := range []int32{copyClone, copyCFR, copyNone} {
		src, dst := copyFiles(t, t.TempDir(), t.TempDir(), data)
		dst.copyMode(src.fsDev).Store(mode)
		n, err := dst.CopyRange(src, 0, 0, int64(len(data)))
		if mode == copyNone {
			if n != 0 || !errors.Is(err, ErrNotSupported) {
				t.Errorf("CopyRange in mode %d = %d, %v; want 0, ErrNotSupported", mode, n, err)
			}
			checkCopied(t, dst, make([]byte, len(data)))
			continue
		}
		if n != int64(len(data)) || err != nil {
			t.Fatalf("CopyRange in mode %d = %d, %v; want %d, nil", mode, n, err, len(data))
		}
		checkCopied(t, dst, data)
		if got := dst.copyMode(src.fsDev).Load(); got == copyNone {
			t.Errorf("after a successful CopyRange in mode %d the mode is copyNone", mode)
		}
	}
}

// xfsReflink makes a loop-mounted XFS with reflink=1 (looptest.XFSReflink).
func xfsReflink(t *testing.T) string { return looptest.XFSReflink(t) }

// TestFileCopyRangeReflink clones between two files on XFS with reflink
// and checks that the destination shares the source's blocks; an
// unaligned copy on the same filesystem still works, and a copy from
// another filesystem is refused once and then at once.
func TestFileCopyRangeReflink(t *testing.T) {
	mnt := xfsReflink(t)
	data := testData(4 << 20)
	src, dst := copyFiles(t, mnt, mnt, data)
	if looptest.Shared(t, dst.path) {
		t.Fatalf("%s shares blocks before any copy", dst.path)
	}
	if n, err := dst.CopyRange(src, 0, 0, 2<<20); n != 2<<20 || err != nil {
		t.Fatalf("CopyRange(src, 0, 0, 2 MiB) = %d, %v; want 2 MiB, nil", n, err)
	}
	if !looptest.Shared(t, dst.path) {
		t.Errorf("after an aligned CopyRange on XFS with reflink, filefrag -v %s shows no shared extent", dst.path)
	}
	if got := dst.copyMode(src.fsDev).Load(); got != copyClone {
		t.Errorf("copy mode after a reflink = %d; want copyClone (%d)", got, copyClone)
	}
	if n, err := dst.CopyRange(src, 2<<20, 2<<20, 2<<20-100); n != 2<<20-100 || err != nil {
		t.Fatalf("unaligned CopyRange = %d, %v; want %d, nil", n, err, 2<<20-100)
	}
	if n, err := dst.CopyRange(src, 4<<20-100, 4<<20-100, 100); n != 100 || err != nil {
		t.Fatalf("CopyRange of the tail = %d, %v; want 100, nil", n, err)
	}
	checkCopied(t, dst, data)

	// From another filesystem: FICLONERANGE and copy_file_range both
	// refuse with EXDEV, and the refusal is remembered.
	other, _ := copyFiles(t, t.TempDir(), t.TempDir(), data)
	if n, err := dst.CopyRange(other, 0, 0, 1<<20); n != 0 || !errors.Is(err, ErrNotSupported) {
		t.Fatalf("CopyRange across filesystems = %d, %v; want 0, ErrNotSupported", n, err)
	}
	if got := dst.copyMode(other.fsDev).Load(); got != copyNone {
		t.Errorf("copy mode after a cross-filesystem refusal = %d; want copyNone (%d)", got, copyNone)
	}
	if got := dst.copyMode(src.fsDev).Load(); got != copyClone {
		t.Errorf("a refusal for another filesystem changed the mode for the source's own to %d", got)
	}
	checkCopied(t, dst, data)
}
