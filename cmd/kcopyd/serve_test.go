package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
)

// serveProc is a running "kcopyd serve".
type serveProc struct {
	cmd    *exec.Cmd
	url    string
	stderr bytes.Buffer
}

// startServe starts the binary with args and waits for the URL it prints
// once listening.
func startServe(t *testing.T, bin string, args ...string) *serveProc {
	t.Helper()
	return startServer(t, bin, append([]string{"serve"}, args...)...)
}

// startServer starts the binary with a command line that serves (serve,
// clone) and waits for the URL it prints once listening.
func startServer(t *testing.T, bin string, args ...string) *serveProc {
	t.Helper()
	p := &serveProc{cmd: exec.Command(bin, args...)}
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		p.cmd.Wait()
		t.Fatalf("kcopyd serve %q printed no URL: %v\n%s", args, err, p.stderr.String())
	}
	p.url = strings.TrimSpace(line)
	go io.Copy(io.Discard, out)
	return p
}

// stop sends sig and returns the exit status.
func (p *serveProc) stop(t *testing.T, sig os.Signal) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	err := p.cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0
}

func tool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(nbdtest.NeedBin(t, name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func TestBinaryServe(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	nbdtest.NeedBin(t, "nbdcopy")
	dir := nbdtest.ShortDir(t)
	data := randomBytes(21, 8<<20)
	img := writeFile(t, dir, "disk.img", data)
	sock := filepath.Join(dir, "s")
	p := startServe(t, bin, img, "--socket", sock, "--export", "disk")
	if want := "nbd+unix:///disk?socket=" + strings.ReplaceAll(sock, "/", "%2F"); p.url != want {
		t.Errorf("printed URL %q; want %q", p.url, want)
	}
	// Read it out with nbdcopy, write new data in, patch with qemu-io.
	out := filepath.Join(dir, "out.img")
	tool(t, "nbdcopy", p.url, out)
	if !bytes.Equal(readFile(t, out), data) {
		t.Fatal("nbdcopy from kcopyd serve differs from the image")
	}
	data2 := randomBytes(22, 8<<20)
	src2 := writeFile(t, dir, "src2.img", data2)
	tool(t, "nbdcopy", src2, p.url)
	tool(t, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 64k", p.url)
	copy(data2[1<<20:], bytes.Repeat([]byte{0x5a}, 64<<10))
	// Our own client, through the command.
	back := filepath.Join(dir, "back.img")
	if r := runBinary(t, bin, "copy", "--create", p.url, back); r.code != 0 {
		t.Fatalf("kcopyd copy from the export = %v", r)
	}
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("kcopyd serve after SIGTERM exited %d\n%s", code, p.stderr.String())
	}
	if !bytes.Equal(readFile(t, img), data2) || !bytes.Equal(readFile(t, back), data2) {
		t.Fatal("the image (or the copy read back) does not hold what the clients wrote")
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("the socket is still there after exit: %v", err)
	}
}

func TestBinaryServeReadOnlyTCP(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	dir := t.TempDir()
	data := randomBytes(23, 1<<20)
	img := writeFile(t, dir, "disk.img", data)
	p := startServe(t, bin, "--read-only", "--listen", "127.0.0.1:0", img)
	if !strings.HasPrefix(p.url, "nbd://127.0.0.1:") || !strings.HasSuffix(p.url, "/") {
		t.Fatalf("printed URL %q", p.url)
	}
	if out := tool(t, "nbdinfo", "--json", p.url); !strings.Contains(out, `"is_read_only": true`) {
		t.Errorf("nbdinfo:\n%s", out)
	}
	out, err := exec.Command(nbdtest.NeedBin(t, "qemu-io"), "-f", "raw", "-c", "write -P 1 0 4096", p.url).CombinedOutput()
	if err == nil && !strings.Contains(string(out), "ermission") && !strings.Contains(string(out), "read-only") {
		t.Errorf("qemu-io wrote to a read-only export:\n%s", out)
	}
	if code := p.stop(t, syscall.SIGINT); code != 0 {
		t.Fatalf("kcopyd serve after SIGINT exited %d\n%s", code, p.stderr.String())
	}
	if !bytes.Equal(readFile(t, img), data) {
		t.Fatal("a read-only export was changed")
	}
}

func TestServeUsageErrors(t *testing.T) {
	t.Parallel()
	dir := nbdtest.ShortDir(t)
	img := writeFile(t, dir, "disk.img", make([]byte, 4096))
	notSock := writeFile(t, dir, "file", nil)
	sock := filepath.Join(dir, "s")
	busy := filepath.Join(dir, "busy")
	l, err := net.Listen("unix", busy)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--socket", sock}, "exactly one DEVICE"},
		{[]string{"serve", img}, "exactly one of --socket and --listen"},
		{[]string{"serve", img, "--socket", sock, "--listen", "127.0.0.1:0"}, "exactly one of --socket and --listen"},
		{[]string{"serve", filepath.Join(dir, "missing"), "--socket", sock}, "existing file or block device"},
		{[]string{"serve", dir, "--socket", sock}, "is a directory"},
		{[]string{"serve", "nbd://localhost/x", "--socket", sock}, "existing file or block device"},
		{[]string{"serve", img, "--socket", notSock}, "is not a socket"},
		{[]string{"serve", img, "--socket", busy}, "in use by another server"},
		{[]string{"serve", img, "--socket", sock, "--tls-verify-peer"}, "--tls-verify-peer needs --tls-certificates"},
		{[]string{"serve", img, "--socket", sock, "--tls-certificates", dir}, "--tls-certificates"},
		{[]string{"serve", img, "--listen", "no-such-host.invalid:1"}, "no-such-host"},
	} {
		r := runCLI(t, "", tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("kcopyd %q = %v; want exit 1 mentioning %q", tc.args, r, tc.want)
		}
		if _, err := os.Lstat(sock); !os.IsNotExist(err) {
			t.Fatalf("kcopyd %q left %s behind", tc.args, sock)
		}
	}
	if !bytes.Equal(readFile(t, img), make([]byte, 4096)) {
		t.Error("a refused serve changed the image")
	}
}

// TestServeReplacesStaleSocket serves with a context that is already
// cancelled: kcopyd listens, prints the URL, stops at once and exits 0,
// having replaced the socket a killed server left behind.
func TestServeReplacesStaleSocket(t *testing.T) {
	t.Parallel()
	dir := nbdtest.ShortDir(t)
	img := writeFile(t, dir, "disk.img", make([]byte, 4096))
	sock := filepath.Join(dir, "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := runCLIContext(t, ctx, "", "serve", img, "--socket", sock)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "nbd+unix:///?socket=") {
		t.Fatalf("serve over a stale socket = %v", r)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("the socket is still there after exit: %v", err)
	}
}

// TestBinaryServeBlockDevice serves a loop device: data written by nbdcopy
// reaches the device, flushed at exit.
func TestBinaryServeBlockDevice(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	nbdtest.NeedBin(t, "nbdcopy")
	dev := looptest.New(t, 4<<20)
	dir := nbdtest.ShortDir(t)
	data := randomBytes(24, 4<<20)
	src := writeFile(t, dir, "src.img", data)
	p := startServe(t, bin, dev, "--socket", filepath.Join(dir, "s"))
	tool(t, "nbdcopy", src, p.url)
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("kcopyd serve after SIGTERM exited %d\n%s", code, p.stderr.String())
	}
	if !bytes.Equal(readFile(t, dev), data) {
		t.Fatal("the loop device does not hold what nbdcopy wrote")
	}
}
