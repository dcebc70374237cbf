package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
)

// A child is a kcopyd binary running in the background, its stderr read
// line by line.
type child struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan string // stderr lines, as they come (dropped when full)
	stdout bytes.Buffer
	stderr []string      // every stderr line; read only after done
	done   chan struct{} // closed when the child exited and stderr was read
	err    error         // cmd.Wait's result, once done
}

// startChild starts the built binary with args.
func startChild(t *testing.T, bin string, args ...string) *child {
	t.Helper()
	c := &child{t: t, lines: make(chan string, 1024), done: make(chan struct{})}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stdout = &c.stdout
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.stderr = append(c.stderr, sc.Text())
			select {
			case c.lines <- sc.Text():
			default:
			}
		}
		close(c.lines)
		c.err = c.cmd.Wait()
	}()
	t.Cleanup(func() { c.wait(0) })
	return c
}

// waitLine waits up to limit for a stderr line containing s.
func (c *child) waitLine(s string, limit time.Duration) bool {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				return false
			}
			if strings.Contains(l, s) {
				return true
			}
		case <-timer.C:
			return false
		}
	}
}

// rss returns the child's resident set size in bytes (VmRSS).
func (c *child) rss() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		c.t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n << 10
		}
	}
	c.t.Fatalf("no VmRSS in /proc/%d/status", c.cmd.Process.Pid)
	return 0
}

// wait waits up to limit for the child to exit and returns its status.
// When it does not exit in time, wait kills it and returns -1.
func (c *child) wait(limit time.Duration) int {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-c.done:
	case <-timer.C:
		c.cmd.Process.Kill()
		<-c.done
		return -1
	}
	if ee, ok := c.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if c.err != nil {
		c.t.Fatal(c.err)
	}
	return 0
}

// startRunning starts the built binary running the command args[0] with
// plain progress lines every 100 ms, and waits until the first one shows
// the command is under way (20 s at most, for a busy machine).
func startRunning(t *testing.T, args ...string) *child {
	t.Helper()
	bin := buildBinary(t)
	c := startChild(t, bin, append([]string{args[0], "--progress-interval", "100ms"}, args[1:]...)...)
	if !c.waitLine("kcopyd: "+args[0]+": ", 20*time.Second) {
		c.wait(0)
		t.Fatalf("kcopyd %s did not start within 20 s\n%s", args[0], c.output())
	}
	return c
}

// interrupt sends SIGINT to the child and checks that it exits with
// status 130 within limit. It returns what the child printed.
func (c *child) interrupt(limit time.Duration) string {
	c.t.Helper()
	start := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil {
		c.t.Fatal(err)
	}
	if code := c.wait(limit); code != exitInterrupted {
		c.t.Fatalf("after SIGINT: status %d after %v; want 130 within %v\n%s", code, time.Since(start).Round(time.Millisecond), limit, c.output())
	}
	c.t.Logf("exited %v after SIGINT", time.Since(start).Round(time.Millisecond))
	return c.output()
}

// output returns what the child printed; call it after wait.
func (c *child) output() string {
	return "stdout: " + c.stdout.String() + "\nstderr: " + strings.Join(c.stderr, "\n")
}

// checkPlanningBounded runs a sparse copy of a huge or fragmented source
// and checks that progress starts at once (within 20 s, generous for a
// busy machine), the resident memory stays under 100 MiB while the copy
// runs, and SIGINT ends it within 10 s with status 130.
func checkPlanningBounded(t *testing.T, args ...string) {
	t.Helper()
	began := time.Now()
	c := startRunning(t, append([]string{"copy"}, args...)...)
	t.Logf("first progress line after %v", time.Since(began).Round(time.Millisecond))
	const limit = 100 << 20
	var peak int64
	for range 20 {
		peak = max(peak, c.rss())
		if peak > limit {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("peak RSS %d MiB", peak>>20)
	if peak > limit {
		t.Errorf("RSS reached %d MiB; want under %d MiB at any source size", peak>>20, limit>>20)
	}
	if out := c.interrupt(10 * time.Second); !strings.Contains(out, "to resume") {
		t.Errorf("the interrupted copy does not say how to resume:\n%s", out)
	}
}

// TestPlanningHugeSparseNBD copies a 1 TiB nbdkit sparse-random export
// (10 % data in 4 KiB runs: millions of extents) to nbdkit null.
func TestPlanningHugeSparseNBD(t *testing.T) {
	t.Parallel()
	src := nbdtest.Nbdkit(t, "sparse-random", "size=1T", "percent=10", "runlength=4096")
	dst := nbdtest.Nbdkit(t, "null", "size=1T")
	checkPlanningBounded(t, src.URI, dst.URI)
}

// TestPlanningHugeNullNBD copies a 2^62-byte export of holes (nbdkit
// null reports all of it as zeroes) to another.
func TestPlanningHugeNullNBD(t *testing.T) {
	t.Parallel()
	size := strconv.FormatInt(1<<62, 10)
	src := nbdtest.Nbdkit(t, "null", "size="+size)
	dst := nbdtest.Nbdkit(t, "null", "size="+size)
	checkPlanningBounded(t, src.URI, dst.URI)
}

// TestPlanningFragmentedFile copies a 16 GiB file holding 4 KiB of data
// every 128 KiB (256 Ki extents, 512 MiB of data) to nbdkit null.
func TestPlanningFragmentedFile(t *testing.T) {
	t.Parallel()
	const size, step = 16 << 30, 64 << 10
	dir := t.TempDir()
	p := filepath.Join(dir, "fragmented")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Skipf("cannot make a %d-byte sparse file here: %v", int64(size), err)
	}
	block := bytes.Repeat([]byte{0xa5}, 4096)
	for off := int64(0); off < size; off += step {
		if _, err := f.WriteAt(block, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	dst := nbdtest.Nbdkit(t, "null", "size="+strconv.FormatInt(size, 10))
	checkPlanningBounded(t, "--rate", "64M", p, dst.URI)
}
