package nbd_test

import (
	"bytes"
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/device/nbd"
)

// server is an NBD server process started by a test.
type server struct {
	URI    string // nbd+unix location of the default export
	Socket string
	Dir    string
	stderr *bytes.Buffer
}

// needBin skips the test when a program is missing.
func needBin(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		tb.Skipf("%s is not installed (Debian: apt-get install nbdkit qemu-utils libnbd-bin): %v", name, err)
	}
	return p
}

// shortDir returns a fresh directory with a short path: Unix socket paths
// are limited to 107 bytes, which t.TempDir can exceed.
func shortDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "nbdt")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startServer runs name with args (in which "SOCK" is replaced by a Unix
// socket path in a fresh directory) and waits until the socket accepts
// connections. The process is killed when the test ends.
func startServer(tb testing.TB, name string, args ...string) *server {
	tb.Helper()
	bin := needBin(tb, name)
	dir := shortDir(tb)
	sock := filepath.Join(dir, "s")
	for i, a := range args {
		if a == "SOCK" {
			args[i] = sock
		}
	}
	s := &server{Socket: sock, Dir: dir, stderr: new(bytes.Buffer),
		URI: "nbd+unix:///?socket=" + url.QueryEscape(sock)}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = s.stderr
	cmd.Stdout = s.stderr
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tb.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if tb.Failed() && s.stderr.Len() > 0 {
			tb.Logf("%s output:\n%s", name, s.stderr.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second) // readiness wait, not a timing assertion
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return s
		}
		select {
		case err := <-exited:
			exited <- err
			tb.Fatalf("%s %q exited before serving: %v\n%s", name, args, err, s.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s %q did not create its socket", name, args)
		}
	}
}

// nbdkit starts nbdkit on a Unix socket with the given arguments (plugin,
// filters, parameters).
func nbdkit(tb testing.TB, args ...string) *server {
	tb.Helper()
	return startServer(tb, "nbdkit", append([]string{"-f", "--exit-with-parent", "-U", "SOCK"}, args...)...)
}

// exportURI returns the location of a named export of s.
func (s *server) exportURI(name string) string {
	return "nbd+unix:///" + url.PathEscape(name) + "?socket=" + url.QueryEscape(s.Socket)
}

// open opens location and closes it when the test ends.
func open(tb testing.TB, location string, cfg *nbd.Config) *nbd.Device {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := nbd.Open(ctx, location, cfg)
	if err != nil {
		tb.Fatalf("Open(%q) = %v", location, err)
	}
	tb.Cleanup(func() {
		if err := d.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return d
}

// pattern fills p with bytes that depend on the absolute offset off and a
// seed, so that misplaced data is detected.
func pattern(p []byte, off int64, seed byte) {
	for i := range p {
		x := uint64(off+int64(i)) * 0x9E3779B97F4A7C15
		p[i] = byte(x>>56) ^ seed
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// waitTCP waits until addr accepts connections.
func waitTCP(tb testing.TB, addr string) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s does not accept connections: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mib(n int64) int64 { return n << 20 }

// execCommand is exec.Command; servers run with it die with the test
// binary where they support --exit-with-parent.
func execCommand(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }
