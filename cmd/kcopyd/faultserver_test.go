package main

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
)

// faultyNBD serves data from a backing file with nbdkit's file plugin,
// with a fault at the byte range at: for op "pread", reads touching it
// fail with EIO (the ddrescue filter with a map marking it bad); for
// "pwrite", writes that would change it fail with EPERM (the protect
// filter). The location is stable: its socket is a symbolic link to the
// server's. cure serves the same file without the fault, points the link
// at the new server, kills the old one and returns the location, which
// is unchanged (an NBD export's identity is its URI, so that a --map made
// with the fault matches the rerun).
func faultyNBD(t *testing.T, data []byte, op string, at [2]int64) (uri, backing string, cure func() string) {
	t.Helper()
	dir := t.TempDir()
	backing = writeFile(t, dir, "backing", data)
	var s *nbdtest.Server
	switch op {
	case "pread":
		end := at[0] + at[1]
		m := fmt.Sprintf("# Mapfile. Created by faultyNBD\n0x0 +\n0x0 %#x +\n%#x %#x -\n%#x %#x +\n", at[0], at[0], at[1], end, int64(len(data))-end)
		s = nbdtest.Nbdkit(t, "--filter=ddrescue", "file", backing, "ddrescue-mapfile="+writeFile(t, dir, "map", []byte(m)))
	case "pwrite":
		s = nbdtest.Nbdkit(t, "--filter=protect", "file", backing, fmt.Sprintf("protect=%d-%d", at[0], at[0]+at[1]-1))
	default:
		panic("faultyNBD: op " + op)
	}
	link := filepath.Join(nbdtest.ShortDir(t), "s")
	if err := os.Symlink(s.Socket, link); err != nil {
		t.Fatal(err)
	}
	return "nbd+unix:///?socket=" + url.QueryEscape(link), backing, func() string {
		cured := nbdtest.Nbdkit(t, "file", backing)
		if err := os.Symlink(cured.Socket, link+".new"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(link+".new", link); err != nil {
			t.Fatal(err)
		}
		s.Kill()
		return "nbd+unix:///?socket=" + url.QueryEscape(link)
	}
}

// gatedNBD is an NBD export served by nbdkit's sh plugin from a backing
// file, whose first write touching one byte range is held at a gate. The
// script is a file in the test's directory, so that a failing test can be
// replayed by hand.
type gatedNBD struct {
	*nbdtest.Server
	backing string // the file behind the export
	pidFile string // nbdkit's -P file
	gate    *gate
}

// gate holds the first write that touches a range until the test lets
// it go: the script writes a line to reached (a FIFO the test reads, so
// that the test learns the write is in flight without polling) and then
// waits for a line on release: "go" lets the write happen, anything else
// (or end of file) fails it.
type gate struct {
	at               [2]int64
	reached, release string
}

// newGatedNBD serves a copy of data with a gate on the first write
// touching at.
func newGatedNBD(t *testing.T, data []byte, at [2]int64) *gatedNBD {
	t.Helper()
	nbdtest.NeedBin(t, "nbdkit")
	dir := t.TempDir()
	g := &gatedNBD{
		backing: writeFile(t, dir, "backing", data),
		pidFile: filepath.Join(dir, "pid"),
		gate:    newGate(t, dir, at),
	}
	script := writeFile(t, dir, "plugin.sh", []byte(g.script(int64(len(data)))))
	if err := os.Chmod(script, 0o755); err != nil {
		t.Fatal(err)
	}
	g.Server = nbdtest.Nbdkit(t, "-P", g.pidFile, "sh", script)
	return g
}

// script returns the sh plugin script.
func (g *gatedNBD) script(size int64) string {
	r := g.gate.at
	return fmt.Sprintf(`#!/bin/sh
# nbdkit sh plugin written by newGatedNBD.
case "$1" in
get_size) echo %d ;;
can_write|can_flush|can_multi_conn) exit 0 ;;
flush) exit 0 ;;
pread) exec dd if=%[2]s skip=$4 count=$3 iflag=skip_bytes,count_bytes status=none ;;
pwrite)
	if [ $4 -lt %[3]d ] && [ $(($4+$3)) -gt %[4]d ] && mkdir %[5]s.taken 2>/dev/null; then
		echo reached >%[5]s
		read -r verdict <%[6]s
		[ "$verdict" = go ] || { cat >/dev/null; echo "EIO dropped at the gate" >&2; exit 1; }
	fi
	exec dd of=%[2]s seek=$4 bs=64K iflag=fullblock oflag=seek_bytes conv=notrunc status=none ;;
*) exit 2 ;;
esac
`, size, g.backing, r[0]+r[1], r[0], g.gate.reached, g.gate.release)
}

// signal sends sig to the nbdkit process; after SIGSTOP it returns once
// the process has stopped.
func (g *gatedNBD) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	b, err := os.ReadFile(g.pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("nbdkit pid file %q: %v", b, err)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("kill(%d, %v): %v", pid, sig, err)
	}
	if sig == syscall.SIGSTOP {
		// kill returns before the process stops; nbdkit is a child of
		// the test process, so waitid can wait for the stop itself
		// (WNOWAIT leaves the state for later waits).
		var info unix.Siginfo
		if err := unix.Waitid(unix.P_PID, pid, &info, unix.WSTOPPED|unix.WNOWAIT, nil); err != nil {
			t.Fatalf("waiting for nbdkit (%d) to stop: %v", pid, err)
		}
	}
}

// newGate makes the two FIFOs of a gate in dir. When the test ends, a
// script still held fails its write, so that it ends without touching
// the backing file.
func newGate(t *testing.T, dir string, at [2]int64) *gate {
	t.Helper()
	g := &gate{at: at, reached: filepath.Join(dir, "reached"), release: filepath.Join(dir, "release")}
	for _, p := range []string{g.reached, g.release} {
		if err := unix.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { g.open("drop") })
	return g
}

// wait blocks until a write reaches the gate, or done is closed first (it
// then fails the test).
func (g *gate) wait(t *testing.T, done <-chan result) {
	t.Helper()
	reached := make(chan error, 1)
	go func() {
		// Opening a FIFO for reading blocks until the script opens it
		// for writing.
		_, err := os.ReadFile(g.reached)
		reached <- err
	}()
	select {
	case err := <-reached:
		if err != nil {
			t.Fatal(err)
		}
	case r := <-done:
		// Unblock the reader above.
		if w, err := os.OpenFile(g.reached, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		t.Fatalf("the command ended before a write reached the gate: %v", r)
	}
}

// open lets a held write go on: the script writes the data when verdict
// is "go" and fails the write otherwise. It does nothing when no script
// waits.
func (g *gate) open(verdict string) {
	w, err := os.OpenFile(g.release, os.O_WRONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return // ENXIO: no reader
	}
	defer w.Close()
	w.Write([]byte(verdict + "\n"))
}
