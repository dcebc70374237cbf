package clone_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/clone"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

// TestKill runs a clone of real files in a child process that hydrates in
// the background while it writes, flushes and reads, kills it with
// SIGKILL at a seeded random point, and checks, after every kill, that the
// clone reads as SOURCE with every flushed write (and possibly some
// unflushed ones), then that DEST ends up equal to it.
func TestKill(t *testing.T) {
	if testing.Short() {
		t.Skip("kill test skipped in -short mode")
	}
	seed := crashSeed(t)
	t.Logf("seed %d (rerun with CLONE_CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 4))
	dir := t.TempDir()
	const size = 8 << 20
	src := testutil.RandomDevice(t, size, seed)
	m := &model{base: src.Bytes()}
	writeFile(t, filepath.Join(dir, "src"), m.base)
	writeFile(t, filepath.Join(dir, "dst"), testutil.RandomDevice(t, size, seed+1).Bytes())
	rounds := 16
	if raceEnabled {
		rounds = 6
	}
	for round := range rounds {
		lines, err := runAndKill(t, dir, rng.Uint64(), rng.IntN(120), time.Duration(rng.IntN(3000))*time.Microsecond, m)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		c, err := openKillClone(dir, clone.Options{NoHydration: true})
		if err != nil {
			t.Fatalf("round %d: reopening after the kill: %v", round, err)
		}
		got := testutil.ReadRange(t, c, 0, size)
		st := c.Status()
		closeClone(t, c)
		if err := m.check(got); err != nil {
			t.Fatalf("round %d, killed after %d lines: %v", round, lines, err)
		}
		t.Logf("round %d: killed after %d lines; %d of %d regions hydrated", round, lines, st.HydratedRegions, st.Regions)
	}
	c, err := openKillClone(dir, clone.Options{})
	if err != nil {
		t.Fatal(err)
	}
	waitHydrated(t, c)
	closeClone(t, c)
	got, err := os.ReadFile(filepath.Join(dir, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, m.base) {
		t.Fatalf("DEST differs from SOURCE with the writes at byte %d", testutil.FirstDiff(got, m.base))
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// runAndKill starts a child with seed, feeds its report into m, and kills
// it after it printed after lines (and delay more), or when it is done.
func runAndKill(t *testing.T, dir string, seed uint64, after int, delay time.Duration, m *model) (int, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CLONE_KILL_DIR="+dir, "CLONE_KILL_SEED="+strconv.FormatUint(seed, 10))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	lines, killed := 0, false
	kill := func() {
		if !killed {
			time.Sleep(delay) // a random point, not a synchronization
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	sc := bufio.NewScanner(out)
	idx := map[int]int{}
	for sc.Scan() {
		if err := feed(m, seed, sc.Text(), idx); err != nil {
			kill()
			cmd.Wait()
			return lines, err
		}
		if lines++; lines >= after || sc.Text() == "DONE" {
			kill()
		}
	}
	kill()
	io.Copy(io.Discard, out)
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		return lines, fmt.Errorf("child: %v; stderr: %s", err, stderr.String())
	}
	return lines, nil
}

// feed applies one line of a child's report to m.
func feed(m *model, seed uint64, line string, idx map[int]int) error {
	f := strings.Fields(line)
	num := func(k int) int64 {
		v, _ := strconv.ParseInt(f[k], 10, 64)
		return v
	}
	switch {
	case len(f) == 4 && f[0] == "W":
		i, off, n := int(num(1)), num(2), num(3)
		idx[i] = m.issue(off, killData(seed, i, off, n))
	case len(f) == 2 && f[0] == "A":
		m.ack(idx[int(num(1))])
	case len(f) == 2 && f[0] == "F":
		m.flushDone(m.flushStart())
	case line == "DONE":
	default:
		return fmt.Errorf("bad line from the child: %q", line)
	}
	return nil
}
