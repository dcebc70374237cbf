package looptest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// XFSReflink makes a loop-mounted XFS with reflink=1 and returns its mount
// point; the test skips when that cannot be done here.
func XFSReflink(t testing.TB) string {
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

// Shared reports whether filefrag -v lists any extent of path as shared.
func Shared(t testing.TB, path string) bool {
	t.Helper()
	out, err := exec.Command("filefrag", "-v", path).CombinedOutput()
	if err != nil {
		t.Fatalf("filefrag -v %s: %v: %s", path, err, out)
	}
	return strings.Contains(string(out), "shared")
}
