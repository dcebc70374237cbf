package mapfile

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSaveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "copy.map")
	m := docMap(t)
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Check(m.Job()); err != nil {
		t.Error(err)
	}
	if got, want := rangesString(back), rangesString(m); got != want {
		t.Errorf("loaded ranges = %s; want %s", got, want)
	}
	if back.Saved() == "" || back.Saved() != m.Saved() {
		t.Errorf("Saved() = %q after Load; %q after Save", back.Saved(), m.Saved())
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temporary file left after Save: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v; want fs.ErrNotExist", err)
	}
	if _, err := Load(t.TempDir()); err == nil {
		t.Errorf("Load(a directory) = nil error")
	}
	if err := m.Save(filepath.Join(t.TempDir(), "no", "dir")); err == nil {
		t.Errorf("Save into a missing directory = nil error")
	}
}

func TestLoadNamesFileAndProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "copy.map")
	data := docMap(t).encode(testTime)
	if err := os.WriteFile(path, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("Load(truncated) = %v; want ErrCorrupt naming %s and truncation", err, path)
	}
}

// TestSaveCrashBeforeRename stops Save after the temporary file is
// written and synced, as a crash before the rename would: the map file
// still holds the previous map, whole, and the next Save succeeds.
func TestSaveCrashBeforeRename(t *testing.T) {
	path := filepath.Join(t.TempDir(), "copy.map")
	m := mustNew(t, copyJob(1<<20, 2))
	m.MarkDone(0, 4096)
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	old := rangesString(m)
	m.MarkDone(4096, 1<<19)
	crash := errors.New("crash")
	testHookBeforeRename = func() error { return crash }
	t.Cleanup(func() { testHookBeforeRename = nil })
	if err := m.Save(path); !errors.Is(err, crash) {
		t.Fatalf("Save = %v; want the crash", err)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatalf("Load after a crash before the rename: %v", err)
	}
	if got := rangesString(back); got != old {
		t.Errorf("after a crash before the rename: ranges = %s; want the old %s", got, old)
	}
	if _, err := Load(path + ".tmp"); err != nil {
		t.Errorf("the temporary file is not the whole new map: %v", err)
	}
	testHookBeforeRename = nil
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	if back, err = Load(path); err != nil || rangesString(back) != rangesString(m) {
		t.Errorf("after the next Save: Load = %v, %v; want the new map", back, err)
	}
}

// killEnv names the environment variable that makes TestSaveKilledHelper
// the child process of TestSaveKilled: "PATH SEED".
const killEnv = "MAPFILE_KILL_CHILD"

// killJob is the job of TestSaveKilled: 1 GiB to two destinations.
func killJob() Job { return copyJob(1<<30, 2) }

// killStep is how far the child's done prefix grows per Save.
const killStep = 1 << 20

// TestSaveKilled kills a child process that loads the map (or starts a new
// one), then marks and saves it in a loop, with SIGKILL at seeded random
// moments, 25 times. After every kill the map must load, belong to the
// job, and be at least as far as the last Save the child reported done.
func TestSaveKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("kills 25 child processes; skipped under -short")
	}
	rng := seededRand(t, 2) // the kill points

	path := filepath.Join(t.TempDir(), "copy.map")
	var acked int64       // done bytes of the last Save the child reported
	var midSave, torn int // kills that left a temporary file, a torn one
	for kill := range 25 {
		saves := 1 + rng.IntN(8)
		delay := time.Duration(rng.Int64N(int64(5 * time.Millisecond)))
		last := runAndKill(t, path, rng.Uint64(), saves, delay)
		acked = max(acked, last)
		if _, err := os.Stat(path + ".tmp"); err == nil {
			midSave++
			if _, err := Load(path + ".tmp"); err != nil {
				torn++
			}
		}
		m, err := Load(path)
		if err != nil {
			t.Fatalf("kill %d (after %d saves + %v): Load: %v", kill, saves, delay, err)
		}
		if err := m.Check(killJob()); err != nil {
			t.Fatalf("kill %d: %v", kill, err)
		}
		checkInvariants(t, m)
		done, _, _ := m.Counts()
		if done < acked || done%killStep != 0 {
			t.Fatalf("kill %d: %d bytes done; the child reported %d saved", kill, done, acked)
		}
		acked = done
	}
	t.Logf("%d bytes done after 25 kills; %d kills inside a Save, %d left a torn temporary file", acked, midSave, torn)
}

// runAndKill starts the child, waits for it to report saves Saves, waits
// delay more, kills it with SIGKILL and returns the done bytes of the last
// Save it reported.
func runAndKill(t *testing.T, path string, seed uint64, saves int, delay time.Duration) int64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSaveKilledHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d", killEnv, path, seed))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var last int64
	for n := 0; n < saves && sc.Scan(); n++ {
		last, _ = strconv.ParseInt(strings.TrimPrefix(sc.Text(), "saved "), 10, 64)
	}
	time.Sleep(delay) // the random crash point, not an ordering
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() { // reports that raced with the kill
		last, _ = strconv.ParseInt(strings.TrimPrefix(sc.Text(), "saved "), 10, 64)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("child ended with %v before the kill; want killed", err)
	}
	return last
}

// TestSaveKilledHelper is the child of TestSaveKilled; it does nothing in
// a normal test run.
func TestSaveKilledHelper(t *testing.T) {
	env := os.Getenv(killEnv)
	if env == "" {
		t.Skip("the child process of TestSaveKilled")
	}
	path, seedText, _ := strings.Cut(env, " ")
	seed, _ := strconv.ParseUint(seedText, 10, 64)
	rng := rand.New(rand.NewPCG(seed, 3))
	m, err := Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		m, err = New(killJob())
	}
	if err == nil {
		err = m.Check(killJob())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	done, _, _ := m.Counts()
	total := killJob().Length()
	for done < total {
		// Failures past the done prefix make the file large, so that
		// kills land inside writes; the prefix then grows by a step.
		for range 20 {
			off := done + killStep + rng.Int64N(total-done-killStep)
			m.MarkFailed(off, 1+rng.Int64N(min(4096, total-off)), rng.IntN(2))
		}
		done += killStep
		m.MarkDone(0, done)
		if err := m.Save(path); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		fmt.Printf("saved %d\n", done)
	}
	select {} // wait for the kill
}

// TestCheckpointerOrdering checks the crash-safety rule: ranges added to a
// Checkpointer are neither done in the map nor in the file while flush
// runs, are done in both after Checkpoint, and are never marked done when
// flush fails.
func TestCheckpointerOrdering(t *testing.T) {
	path := filepath.Join(t.TempDir(), "copy.map")
	m := mustNew(t, copyJob(1<<20, 2))
	ck := NewCheckpointer(m, path)
	ck.Add(0, 4096)
	ck.Add(4096, 4096)
	ck.Add(65536, 4096)
	if ck.Pending() != 3*4096 {
		t.Errorf("Pending() = %d; want %d", ck.Pending(), 3*4096)
	}
	flushed := false
	err := ck.Checkpoint(func() error {
		if d, _, _ := m.Counts(); d != 0 {
			t.Errorf("during flush: %d bytes done in the map; want 0", d)
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("during flush: the map file exists (%v)", err)
		}
		ck.Add(1<<19, 4096) // added during the flush: not covered by it
		flushed = true
		return nil
	})
	if err != nil || !flushed {
		t.Fatalf("Checkpoint = %v, flushed %v", err, flushed)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "0 8192 done; 8192 57344 untried; 65536 4096 done; 69632 978944 untried"
	if got := rangesString(back); got != want {
		t.Errorf("after Checkpoint: file ranges = %s; want %s", got, want)
	}
	// A failed flush drops the batch, the late Add included.
	flushErr := errors.New("EIO")
	err = ck.Checkpoint(func() error { return flushErr })
	if !errors.Is(err, flushErr) {
		t.Errorf("Checkpoint with a failed flush = %v; want the flush error", err)
	}
	if back, err = Load(path); err != nil || rangesString(back) != want || rangesString(m) != want {
		t.Errorf("after a failed flush: file %v (%v), map %s; want %s in both", back, err, rangesString(m), want)
	}
	if ck.Pending() != 0 {
		t.Errorf("after a failed flush: Pending() = %d; want 0", ck.Pending())
	}
	if err := ck.Checkpoint(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if got := rangesString(m); got != want {
		t.Errorf("the failed flush's ranges came back: %s", got)
	}
	// A range marked failed after its Add stays failed.
	ck.Add(8192, 8192)
	m.MarkFailed(12288, 512, 1)
	if err := ck.Checkpoint(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	want = "0 12288 done; 12288 512 failed write=1; 12800 3584 done; 16384 49152 untried; 65536 4096 done; 69632 978944 untried"
	if got := rangesString(m); got != want {
		t.Errorf("after a failure since Add: ranges = %s; want %s", got, want)
	}
}

// TestSaveStaleTempNotFollowed plants a symbolic link where Save writes its
// temporary file: Save replaces it and leaves the link's target alone.
func TestSaveStaleTempNotFollowed(t *testing.T) {
	dir := t.TempDir()
	path, victim := filepath.Join(dir, "copy.map"), filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, path+".tmp"); err != nil {
		t.Fatal(err)
	}
	m := docMap(t)
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep" {
		t.Errorf("the link's target = %q, %v; want it untouched", b, err)
	}
	if _, err := Load(path); err != nil {
		t.Errorf("Load: %v", err)
	}
}
