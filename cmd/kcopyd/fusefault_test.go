package main

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
	"github.com/kcopyd/kcopyd/device/nbd/nbdserver"
	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
)

// fuseFile is a local file whose reads or writes of one byte range fail
// with EIO while a fault is on: nbdfuse (libnbd-bin) mounts an NBD export
// as a file on a FUSE mount, and the export is served by this process
// (package nbdserver) from a backing file wrapped in a fault device
// (package faultdev) that fails the reads or writes touching the range
// while its toggle is on. Reads and writes of the file go through the
// kernel's normal file path (and, under a loop device, its block path),
// so kcopyd sees the error a failing disk gives. Ending the fault (cure)
// turns the toggle off: the file keeps its identity (device and inode),
// so a --map made with the fault matches the rerun (see the pin in
// newFuseFile). (An nbdkit sh plugin would do as well, but it forks a
// shell and dd for each request, which made the cases several times
// slower.) Unmounting needs no fusermount3: as root, umount2 does it.
type fuseFile struct {
	path    string // the file on the FUSE mount
	backing string // the file behind the export
	fault   *faultdev.Toggle
}

// needFUSE skips the test unless nbdfuse can mount here: root, /dev/fuse
// and nbdfuse.
func needFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("FUSE faults: mounting needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("FUSE faults: no /dev/fuse (CONFIG_FUSE_FS): %v", err)
	}
	if _, err := exec.LookPath("nbdfuse"); err != nil {
		t.Skipf("FUSE faults: nbdfuse is not installed (Debian: apt-get install libnbd-bin): %v", err)
	}
}

// newFuseFile serves a copy of data as a file on a fresh FUSE mount,
// failing op (device.OpRead or device.OpWrite) on any request that
// touches at, with the fault on. A file with read faults is read-only.
// The mount is unmounted when the test ends (nbdfuse then exits); close
// every handle on it, and detach loop devices over it, in cleanups
// registered later.
func newFuseFile(t *testing.T, data []byte, op device.Op, at [2]int64) *fuseFile {
	t.Helper()
	needFUSE(t)
	dir := t.TempDir()
	f := &fuseFile{backing: writeFile(t, dir, "backing", data)}
	readOnly := op == device.OpRead
	dev, err := device.OpenFile(f.backing, device.FileOptions{ReadOnly: readOnly})
	if err != nil {
		t.Fatal(err)
	}
	f.fault = faultdev.NewToggle(faultdev.Ops(faultdev.Range(at[0], at[1], faultdev.Always(syscall.EIO)), op))
	f.fault.On()
	srv, err := nbdserver.New(faultdev.Wrap(dev, f.fault), &nbdserver.Options{ReadOnly: readOnly})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(nbdtest.ShortDir(t), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { // after the unmount, registered below
		srv.Close()
		dev.Close()
	})
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f.path = filepath.Join(mnt, "disk")
	pidFile := filepath.Join(dir, "nbdfuse.pid")
	args := []string{"-P", pidFile}
	if readOnly {
		args = append(args, "-r")
	}
	mountFUSE(t, mnt, pidFile, append(args, f.path, "--unix", sock))
	// FUSE numbers inodes as it looks them up: once the kernel forgets
	// the file, its next lookup gets another inode number, and a --map
	// would take the file for another. An open handle keeps it.
	pin, err := os.Open(f.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pin.Close() })
	return f
}

// mountFUSE runs nbdfuse with args, which mounts on mnt, waits until it
// wrote pidFile (it is serving) and registers the unmount.
func mountFUSE(t *testing.T, mnt, pidFile string, args []string) {
	t.Helper()
	var out strings.Builder
	cmd := exec.Command("nbdfuse", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("nbdfuse: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { unmountFUSE(t, mnt, cmd, exited, &out) })
	// A readiness wait, not a timing assertion: nbdfuse writes its pid
	// file once the mount serves.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(pidFile); err == nil && len(b) > 0 {
			return
		}
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("nbdfuse %q exited before serving: %v\n%s", args, err, out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nbdfuse %q did not serve within 30s\n%s", args, out.String())
		}
	}
}

// unmountFUSE unmounts mnt (as root, umount2 does what fusermount3 -u
// does) and waits for nbdfuse to exit, which it does when its mount goes.
// A mount still busy is detached lazily; an nbdfuse that does not exit is
// killed, and the test fails.
func unmountFUSE(t *testing.T, mnt string, cmd *exec.Cmd, exited chan error, out *strings.Builder) {
	err := unix.Unmount(mnt, 0)
	if errors.Is(err, unix.EBUSY) {
		t.Logf("unmount %s: %v; detaching it lazily", mnt, err)
		err = unix.Unmount(mnt, unix.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: not mounted (nbdfuse failed to mount)
		t.Errorf("unmount %s: %v", mnt, err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Errorf("nbdfuse on %s did not exit within 30s of the unmount; killed\n%s", mnt, out.String())
	}
}

// cure ends the fault and returns the file's path, which is unchanged.
func (f *fuseFile) cure() string {
	f.fault.Off()
	return f.path
}
