package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
)

// stalledCopy starts the built binary copying to an nbdkit export whose
// writes take two minutes (the delay filter), through sh when ignoreInt
// so that kcopyd starts with SIGINT ignored (as "cmd &" does in a
// non-interactive shell), and waits until a write has reached the server
// (nbdkit's log filter, in front of the delay, logs it as it starts), so
// that the interrupt always finds a job in flight.
func stalledCopy(t *testing.T, ignoreInt bool, extra ...string) *child {
	t.Helper()
	const size = 16 << 20
	dir := t.TempDir()
	src := writeFile(t, dir, "src", randomBytes(80, size))
	logfile := filepath.Join(dir, "nbdkit.log")
	s := nbdtest.Nbdkit(t, "--filter=log", "--filter=delay", "memory", strconv.Itoa(size), "delay-write=120", "logfile="+logfile)
	args := append(append([]string{"copy", "--no-sparse"}, extra...), src, s.URI)
	var c *child
	if !ignoreInt {
		c = startRunning(t, args...)
	} else {
		bin := buildBinary(t)
		c = startChild(t, "sh", append([]string{"-c", `trap "" INT; exec "$0" "$@"`, bin, args[0], "--progress-interval", "100ms"}, args[1:]...)...)
		if !c.waitLine("kcopyd: copy: ", 20*time.Second) {
			c.wait(0)
			t.Fatalf("the copy did not start within 20 s\n%s", c.output())
		}
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(logfile); strings.Contains(string(b), " Write id=") {
			return c
		}
		if time.Now().After(deadline) {
			c.wait(0)
			t.Fatalf("no write reached the server within 20 s\n%s", c.output())
		}
	}
}

// TestSecondInterruptIgnoredAtStart starts kcopyd with SIGINT ignored
// and stalls its destination: after the first SIGINT, a second one must
// end it at once.
func TestSecondInterruptIgnoredAtStart(t *testing.T) {
	t.Parallel()
	c := stalledCopy(t, true, "--interrupt-wait", "10m")
	if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if !c.waitLine("interrupted", 10*time.Second) {
		c.wait(0)
		t.Fatalf("no acknowledgement of the first SIGINT within 10 s\n%s", c.output())
	}
	start := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := c.wait(10 * time.Second); code != exitInterrupted {
		t.Fatalf("after a second SIGINT: status %d after %v; want 130 within 10 s\n%s", code, time.Since(start).Round(time.Millisecond), c.output())
	}
}

// TestInterruptBoundedWait interrupts a copy whose NBD destination does
// not answer, without --nbd-timeout: kcopyd must say what it waits for
// and give up after --interrupt-wait.
func TestInterruptBoundedWait(t *testing.T) {
	t.Parallel()
	c := stalledCopy(t, false, "--interrupt-wait", "2s")
	out := c.interrupt(30 * time.Second)
	for _, want := range []string{"waiting for 1 job", "nbd+unix://", "gave up", "not flushed", "to resume"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestVerifyInterruptBoundedWait interrupts verify while its NBD
// destination does not answer reads: it gives up after --interrupt-wait.
func TestVerifyInterruptBoundedWait(t *testing.T) {
	t.Parallel()
	const size = 16 << 20
	src := writeFile(t, t.TempDir(), "src", make([]byte, size))
	s := nbdtest.Nbdkit(t, "--filter=delay", "memory", strconv.Itoa(size), "delay-read=120")
	c := startRunning(t, "verify", "--interrupt-wait", "2s", src, s.URI)
	if out := c.interrupt(30 * time.Second); !strings.Contains(out, "gave up") || strings.Contains(out, "identical") {
		t.Errorf("output does not say it gave up, or claims identical:\n%s", out)
	}
}

// TestInterruptStalledAllocationMap interrupts a sparse copy whose NBD
// source does not answer block-status requests: the planner is stuck, and
// kcopyd must still end within --interrupt-wait.
func TestInterruptStalledAllocationMap(t *testing.T) {
	t.Parallel()
	const size = 16 << 20
	s := nbdtest.Nbdkit(t, "--filter=delay", "memory", strconv.Itoa(size), "delay-extents=120")
	dst := writeFile(t, t.TempDir(), "dst", make([]byte, size))
	c := startRunning(t, "copy", "--interrupt-wait", "2s", s.URI, dst)
	if out := c.interrupt(30 * time.Second); !strings.Contains(out, "allocation map") {
		t.Errorf("output does not say what it gave up on:\n%s", out)
	}
}
