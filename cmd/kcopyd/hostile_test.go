package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRateFileFIFO gives --rate-file a FIFO that nobody writes: start-up
// must not block on it (exit 1 at once, nothing written).
func TestRateFileFIFO(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	dir := t.TempDir()
	src := writeFile(t, dir, "src", randomBytes(70, 1<<20))
	dst := filepath.Join(dir, "dst")
	fifo := filepath.Join(dir, "rate")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	c := startChild(t, bin, "copy", "--create", "--rate-file", fifo, src, dst)
	code := c.wait(10 * time.Second)
	if code != exitUsage || !strings.Contains(c.output(), "not a regular file") {
		t.Fatalf("copy --rate-file FIFO: status %d; want 1 within 10 s naming the FIFO\n%s", code, c.output())
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Errorf("%s was created (%v)", dst, err)
	}
}

// TestRateFileBecomesFIFO replaces the rate file with a FIFO while the
// copy runs: the watcher must say so and go on, and apply the next
// regular file.
func TestRateFileBecomesFIFO(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	dir := t.TempDir()
	data := randomBytes(71, 16<<20)
	src := writeFile(t, dir, "src", data)
	dst := filepath.Join(dir, "dst")
	rate := writeFile(t, dir, "rate", []byte("1M\n"))
	c := startChild(t, bin, "copy", "--create", "--no-sparse", "--progress-interval", "100ms", "--rate-file", rate, src, dst)
	if !c.waitLine("kcopyd: copy: ", 20*time.Second) {
		c.wait(0)
		t.Fatalf("the copy did not start within 20 s\n%s", c.output())
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fifo, rate); err != nil {
		t.Fatal(err)
	}
	if !c.waitLine("not a regular file", 10*time.Second) {
		c.wait(0)
		t.Fatalf("the watcher did not report the FIFO within 10 s\n%s", c.output())
	}
	next := writeFile(t, dir, "next", []byte("unlimited\n"))
	if err := os.Rename(next, rate); err != nil {
		t.Fatal(err)
	}
	if code := c.wait(time.Minute); code != 0 {
		t.Fatalf("copy: status %d\n%s", code, c.output())
	}
	if !bytes.Equal(readFile(t, dst), data) {
		t.Errorf("copy differs")
	}
}

// TestStderrClosedPipe runs a copy whose stderr is a pipe nobody reads:
// kcopyd must not die of SIGPIPE, and its status still tells the outcome.
func TestStderrClosedPipe(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	dir := t.TempDir()
	data := randomBytes(72, 4<<20)
	src := writeFile(t, dir, "src", data)
	dst := filepath.Join(dir, "dst")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	// Progress lines every 10 ms for about half a second: several writes
	// to the broken pipe.
	cmd := exec.Command(bin, "copy", "--create", "--no-sparse", "--rate", "8M", "--progress-interval", "10ms", src, dst)
	cmd.Stderr = w
	err = cmd.Run()
	w.Close()
	if err != nil {
		t.Fatalf("copy with a broken stderr: %v (%v); want exit 0", err, cmd.ProcessState)
	}
	if !bytes.Equal(readFile(t, dst), data) {
		t.Errorf("copy differs")
	}
	// A failing run keeps its status too.
	cmd = exec.Command(bin, "copy", filepath.Join(dir, "missing"), dst)
	r, w, err = os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	cmd.Stderr = w
	err = cmd.Run()
	w.Close()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitUsage {
		t.Errorf("failing copy with a broken stderr: %v; want exit 1", err)
	}
}

// TestVerifyLargerDestination compares a source with a destination that
// has more bytes after it: identical over the source, and it says so.
func TestVerifyLargerDestination(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := randomBytes(73, 1<<20)
	src := writeFile(t, dir, "src", data)
	dst := writeFile(t, dir, "dst", append(append([]byte(nil), data...), 1, 2, 3))
	r := runCLI(t, "", "verify", src, dst)
	if r.code != 0 || !strings.Contains(r.stdout, "identical") || !strings.Contains(r.stdout+r.stderr, "3 bytes") {
		t.Errorf("verify against a longer destination = %v; want exit 0 saying its last 3 bytes were not compared", r)
	}
	r = runCLI(t, "", "verify", "--json", src, dst)
	rep := parseReport(t, r)
	if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "3 bytes") {
		t.Errorf("verify --json warnings = %q; want one about the 3 bytes not compared", rep.Warnings)
	}
	// An explicit --length is what the user asked for: no remark.
	r = runCLI(t, "", "verify", "--length", "1M", src, dst)
	if r.code != 0 || strings.Contains(r.stdout+r.stderr, "not compared") {
		t.Errorf("verify --length 1M = %v; want no remark", r)
	}
}

// TestCreateDanglingSymlink names a dangling symbolic link as a --create
// destination: the message must say what it is, not "file exists".
func TestCreateDanglingSymlink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := writeFile(t, dir, "src", randomBytes(74, 64<<10))
	link := filepath.Join(dir, "link")
	target := filepath.Join(dir, "nowhere", "img")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, "", "copy", "--create", src, link)
	if r.code != exitUsage || !strings.Contains(r.stderr, "symbolic link") || !strings.Contains(r.stderr, target) || strings.Contains(r.stderr, "file exists") {
		t.Errorf("copy --create to a dangling symlink = %v; want exit 1 naming the link and its target", r)
	}
	if got, err := os.Readlink(link); err != nil || got != target {
		t.Errorf("the link changed: %q, %v", got, err)
	}
}
