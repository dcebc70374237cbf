//go:build linux

package device

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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

// xfsReflink makes a loop-mounted XFS with reflink=1 and returns its mount
// point; the test skips when that cannot be done here.
func xfsReflink(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting an XFS image needs root")
	}
	for _, tool := range []string{"mkfs.xfs", "losetup", "mount", "umount", "filefrag"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found (Debian xfsprogs, util-linux, mount, e2fsprogs)", tool)
		}
	}
	img := filepath.Join(t.TempDir(), "xfs.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 512<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.xfs", "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Skipf("mkfs.xfs -m reflink=1: %v: %s", err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Skipf("losetup: %v (no loop devices here)", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "xfs", loop, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount -t xfs %s: %v: %s (no XFS in this kernel?)", loop, err, out)
	}
	// Cleanups run last-in first-out: unmount before detaching the loop.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

// shared reports whether filefrag -v lists any extent of path as shared.
func shared(t *testing.T, path string) bool {
	t.Helper()
	out, err := exec.Command("filefrag", "-v", path).CombinedOutput()
	if err != nil {
		t.Fatalf("filefrag -v %s: %v: %s", path, err, out)
	}
	return strings.Contains(string(out), "shared")
}

// TestFileCopyRangeReflink clones between two files on XFS with reflink
// and checks that the destination shares the source's blocks; an
// unaligned copy on the same filesystem still works, and a copy from
// another filesystem is refused once and then at once.
func TestFileCopyRangeReflink(t *testing.T) {
	mnt := xfsReflink(t)
	data := testData(4 << 20)
	src, dst := copyFiles(t, mnt, mnt, data)
	if shared(t, dst.path) {
		t.Fatalf("%s shares blocks before any copy", dst.path)
	}
	if n, err := dst.CopyRange(src, 0, 0, 2<<20); n != 2<<20 || err != nil {
		t.Fatalf("CopyRange(src, 0, 0, 2 MiB) = %d, %v; want 2 MiB, nil", n, err)
	}
	if !shared(t, dst.path) {
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
