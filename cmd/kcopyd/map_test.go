package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
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

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
	"github.com/kcopyd/kcopyd/mapfile"
)

// mapSeed returns the seed of a randomized --map test: KCOPYD_MAP_SEED
// when set, else the time. It is logged so that a failure can be rerun.
func mapSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("KCOPYD_MAP_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KCOPYD_MAP_SEED=%q: %v", s, err)
		}
		seed = n
	}
	t.Logf("seed %d (rerun with KCOPYD_MAP_SEED=%d)", seed, seed)
	return seed
}

// writeSparseSource writes a file of size bytes of seeded random data
// with a few holes punched in it (so that resumed runs must zero holes on
// destinations that do not read zeroes) and returns its path.
func writeSparseSource(t *testing.T, path string, seed uint64, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	gen := rand.NewChaCha8(key) // fast also under -race
	buf := make([]byte, 4<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		n := min(int64(len(buf)), size-off)
		_, _ = gen.Read(buf[:n])
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(seed, 1))
	for range 8 {
		off := r.Int64N(size/(1<<20)) << 20
		n := min(int64(1+r.IntN(8))<<20, size-off)
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
			t.Skipf("cannot punch holes here: %v", err)
		}
	}
}

// checkDoneRanges loads the map at path, if there is one, and checks that
// every range it calls done holds the source's bytes on every
// destination file. It returns the map (nil when none was saved yet).
func checkDoneRanges(t *testing.T, path, src string, dests []string) *mapfile.Map {
	t.Helper()
	m, err := mapfile.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("the map after a kill: %v", err)
	}
	job := m.Job()
	s, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var files []*os.File
	for _, d := range dests {
		f, err := os.Open(d)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	const block = 4 << 20
	want, got := make([]byte, block), make([]byte, block)
	for r := range m.Ranges() {
		if r.State != mapfile.Done {
			continue
		}
		for _, p := range job.Split(r.Off, r.Len) {
			for off := int64(0); off < p.Length; off += block {
				n := min(block, p.Length-off)
				if _, err := s.ReadAt(want[:n], p.SrcOffset+off); err != nil {
					t.Fatal(err)
				}
				for i, f := range files {
					if _, err := f.ReadAt(got[:n], p.DestOffset+off); err != nil {
						t.Fatalf("%s: %v", dests[i], err)
					}
					if !bytes.Equal(want[:n], got[:n]) {
						t.Fatalf("the map calls job bytes [%d, +%d) done, but destination %s differs from the source within [%d, +%d)", r.Off, r.Len, dests[i], p.DestOffset+off, n)
					}
				}
			}
		}
	}
	return m
}

// killRun starts the binary and kills it with SIGKILL after delay. It
// returns false when the run exited by itself first, with its result.
func killRun(t *testing.T, bin string, delay time.Duration, args ...string) (killed bool, out string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("kcopyd %s: %v\n%s", strings.Join(args, " "), err, b.String())
		}
		return false, b.String()
	case <-time.After(delay):
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	return true, b.String()
}

// crashResume runs the copy in args (which must include --map mapPath)
// killed with SIGKILL kills times at seeded random moments, checking the
// map after each kill, then reruns it to completion and checks that the
// destinations equal the source. destFiles are the files holding the
// destinations' bytes.
func crashResume(t *testing.T, bin string, seed uint64, kills int, maxDelay time.Duration, mapPath, src string, destFiles []string, args ...string) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 2))
	done := int64(0)
	for k := 0; k < kills; k++ {
		delay := time.Duration(r.Int64N(int64(maxDelay)))
		killed, out := killRun(t, bin, delay, args...)
		m := checkDoneRanges(t, mapPath, src, destFiles)
		if m != nil {
			d, _, _ := m.Counts()
			if d < done {
				t.Fatalf("kill %d: done went down from %d to %d bytes", k, done, d)
			}
			done = d
		}
		if !killed {
			t.Logf("run %d completed before its kill at %v:\n%s", k, delay, out)
			break
		}
		t.Logf("kill %d after %v: %d bytes done", k, delay, done)
	}
	res := runBinary(t, bin, args...)
	if res.code != 0 {
		t.Fatalf("the final run: %v", res)
	}
	// A complete map whose done ranges all match compares every byte.
	m := checkDoneRanges(t, mapPath, src, destFiles)
	if m == nil || !m.Complete() {
		t.Fatalf("the map is not complete after the final run: %v", res)
	}
	st, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	if m.Job().Length() != st.Size() {
		t.Fatalf("the map covers %d bytes of a %d-byte source", m.Job().Length(), st.Size())
	}
	again := runBinary(t, bin, args...)
	if again.code != 0 || !strings.Contains(again.stderr, "complete already") {
		t.Errorf("a rerun after completion = %v; want exit 0 and \"complete already\"", again)
	}
}

// crashSetup prepares a crash test: the binary, the seed, the size (small
// under -short), and in a fresh directory a source file "src" with holes
// and a file "other" of as many bytes of 0xa5.
func crashSetup(t *testing.T, size, shortSize int64) (bin string, seed uint64, n int64, dir string) {
	t.Helper()
	bin, seed, n = kcopydBinary(t), mapSeed(t), size
	if testing.Short() {
		n = shortSize
	}
	dir = t.TempDir()
	writeSparseSource(t, filepath.Join(dir, "src"), seed, n)
	// Not zeroes, so that the source's holes must be zeroed on it.
	other, err := os.Create(filepath.Join(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	buf := bytes.Repeat([]byte{0xa5}, 4<<20)
	for off := int64(0); off < n; off += int64(len(buf)) {
		if _, err := other.WriteAt(buf[:min(int64(len(buf)), n-off)], off); err != nil {
			t.Fatal(err)
		}
	}
	return bin, seed, n, dir
}

// crashKills is the number of kills of a crash test.
func crashKills() int {
	if testing.Short() {
		return 5
	}
	return 20
}

// TestMapResumeCrash copies a 1 GiB file with holes to two destinations
// (one created, one full of other data), kills the copy with SIGKILL at
// 20 seeded random moments, reruns it with the same --map each time, and
// checks after every kill that each range the map calls done is on both
// destinations, and at the end that both equal the source.
func TestMapResumeCrash(t *testing.T) {
	t.Parallel()
	bin, seed, size, dir := crashSetup(t, 1<<30, 128<<20)
	src, a, b := filepath.Join(dir, "src"), filepath.Join(dir, "a"), filepath.Join(dir, "other")
	mp := filepath.Join(dir, "copy.map")
	// About 16 s of copying in all, in jobs of 4 MiB (16 chunks), so
	// that each killed run gets some of it done.
	rate := strconv.FormatInt(size/16, 10)
	crashResume(t, bin, seed, crashKills(), 1500*time.Millisecond, mp, src, []string{a, b},
		"copy", "-q", "--map", mp, "--create", "--rate", rate, "--sub-job-size", "256K", "--checkpoint-interval", "200ms", src, a, b)
}

// TestMapResumeCrashNBD is TestMapResumeCrash with one destination on an
// nbdkit file export (its flush is an fdatasync on the server) and one
// local file.
func TestMapResumeCrashNBD(t *testing.T) {
	t.Parallel()
	bin, seed, size, dir := crashSetup(t, 256<<20, 64<<20)
	src, backing, local := filepath.Join(dir, "src"), filepath.Join(dir, "other"), filepath.Join(dir, "local")
	srv := nbdtest.Nbdkit(t, "file", backing)
	mp := filepath.Join(dir, "copy.map")
	rate := strconv.FormatInt(size/12, 10)
	crashResume(t, bin, seed, crashKills(), 1200*time.Millisecond, mp, src, []string{backing, local},
		"copy", "-q", "--map", mp, "--create", "--rate", rate, "--sub-job-size", "256K", "--checkpoint-interval", "200ms", src, srv.URI, local)
}

// TestMapForeignRefused refuses a map that belongs to another job (other
// source, region or destination) with exit 1, nothing written and the
// map unchanged.
func TestMapForeignRefused(t *testing.T) {
	t.Parallel()
	bin := kcopydBinary(t)
	dir := t.TempDir()
	src := writeFile(t, dir, "src", randomBytes(1, 4<<20))
	other := writeFile(t, dir, "other", randomBytes(2, 4<<20))
	dst := writeFile(t, dir, "dst", randomBytes(3, 4<<20))
	mp := filepath.Join(dir, "m.map")
	if r := runBinary(t, bin, "copy", "--map", mp, "--length", "2M", src, dst); r.code != 0 {
		t.Fatal(r)
	}
	snap := takeSnapshot(t, dst, mp)
	newDst := filepath.Join(dir, "new")
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"other source", []string{other, dst}, "source identity"},
		{"other length", []string{"--length", "3M", src, dst}, "region 0"},
		{"other offset", []string{"--length", "2M", "--offset", "1M", src, dst}, "region 0"},
		{"other destination", []string{"--length", "2M", "--create", src, newDst}, "destination 0 identity"},
		{"more destinations", []string{"--length", "2M", src, dst, other}, "number of destinations"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runBinary(t, bin, append([]string{"copy", "--map", mp}, tt.args...)...)
			if r.code != exitUsage || !strings.Contains(r.stderr, "belongs to another job") || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("copy --map with %s = %v; want exit 1 naming %q", tt.name, r, tt.want)
			}
			snap.unchanged(t)
			if _, err := os.Stat(newDst); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s exists after a refused run: %v", newDst, err)
			}
		})
	}
	if r := runBinary(t, bin, "zero", "--map", mp, "--length", "2M", dst); r.code != exitUsage || !strings.Contains(r.stderr, "kind") {
		t.Errorf("zero with a copy's map = %v; want exit 1 naming the kind", r)
	}
	snap.unchanged(t)
}

// TestMapRetryFailed copies from an nbdkit source whose reads fail at
// random while an error file exists, with --ignore-errors: the map holds
// the failed ranges, a rerun does not retry them, and --retry-failed
// after the errors are switched off completes the copy.
func TestMapRetryFailed(t *testing.T) {
	t.Parallel()
	bin := kcopydBinary(t)
	dir := t.TempDir()
	const size = 16 << 20
	data := randomBytes(11, size)
	srcFile := writeFile(t, dir, "src", data)
	errFile := writeFile(t, dir, "errors-on", nil)
	srv := nbdtest.Nbdkit(t, "--filter=error", "file", srcFile, "error-pread=EIO", "error-pread-rate=20%", "error-file="+errFile)
	dst := filepath.Join(dir, "dst")
	mp := filepath.Join(dir, "m.map")
	args := []string{"copy", "--json", "--map", mp, "--create", "--ignore-errors", "--sub-job-size", "64K", srv.URI, dst}
	r := runBinary(t, bin, args...)
	var rep jsonReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != exitReadError {
		t.Fatalf("copy with read errors = %v (%v); want exit 2 and JSON", r, err)
	}
	var failed int64
	for _, fr := range rep.Destinations[0].FailedRanges {
		failed += fr[1]
	}
	if rep.Map == nil || rep.Map.Path != mp || rep.Map.Failed != failed || failed == 0 || rep.Map.Untried != 0 || rep.Map.Complete {
		t.Fatalf("map report %+v; want %d failed bytes (the failed_ranges), none untried", rep.Map, failed)
	}
	m, err := mapfile.Load(mp)
	if err != nil {
		t.Fatal(err)
	}
	for fr := range m.Failed() {
		if fr.Dests != 0 {
			t.Errorf("failed range %+v: want a read failure", fr)
		}
	}
	if err := os.Remove(errFile); err != nil { // the source reads fine from now on
		t.Fatal(err)
	}
	r = runBinary(t, bin, args...)
	if r.code != exitReadError || !strings.Contains(r.stderr, "--retry-failed") {
		t.Errorf("rerun without --retry-failed = %v; want exit 2 suggesting --retry-failed", r)
	}
	if bytes.Equal(readFile(t, dst), data) {
		t.Fatal("the rerun without --retry-failed retried the failed ranges")
	}
	r = runBinary(t, bin, append([]string{"copy", "--retry-failed"}, args[1:]...)...)
	if r.code != 0 {
		t.Fatalf("--retry-failed = %v", r)
	}
	if !bytes.Equal(readFile(t, dst), data) {
		t.Fatal("the destination differs from the source after --retry-failed")
	}
	rep = jsonReport{}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || rep.Map == nil || !rep.Map.Complete || rep.Map.Done != size {
		t.Errorf("map report after --retry-failed: %+v (%v); want complete", rep.Map, err)
	}
	r = runBinary(t, bin, args...)
	if r.code != 0 || !strings.Contains(r.stderr, "complete already") {
		t.Errorf("rerun after completion = %v; want a no-op saying so", r)
	}
}

// TestMapRegionsAndZero runs --map with --regions and with zero: the map
// covers the regions laid end to end, a rerun after completion is a no-op
// that writes nothing.
func TestMapRegionsAndZero(t *testing.T) {
	t.Parallel()
	bin := kcopydBinary(t)
	dir := t.TempDir()
	data := randomBytes(21, 8<<20)
	src := writeFile(t, dir, "src", data)
	dst := writeFile(t, dir, "dst", make([]byte, 8<<20))
	regs := writeFile(t, dir, "regs", []byte("0 1M 4M\n6M 2M 0\n"))
	mp := filepath.Join(dir, "copy.map")
	if r := runBinary(t, bin, "copy", "--map", mp, "--regions", regs, src, dst); r.code != 0 {
		t.Fatal(r)
	}
	got := readFile(t, dst)
	if !bytes.Equal(got[4<<20:5<<20], data[:1<<20]) || !bytes.Equal(got[:2<<20], data[6<<20:]) {
		t.Fatal("the regions were not copied")
	}
	m, err := mapfile.Load(mp)
	if err != nil || !m.Complete() || m.Job().Length() != 3<<20 || len(m.Job().Regions) != 2 {
		t.Fatalf("map %v after --regions: want 2 regions of 3 MiB, complete (%v)", m, err)
	}
	snap := takeSnapshot(t, dst, mp)
	if r := runBinary(t, bin, "copy", "--map", mp, "--regions", regs, src, dst); r.code != 0 || !strings.Contains(r.stderr, "complete already") {
		t.Errorf("rerun = %v; want a no-op", r)
	}
	snap.unchanged(t)

	zmp := filepath.Join(dir, "zero.map")
	if r := runBinary(t, bin, "zero", "--map", zmp, "--length", "3M", dst); r.code != 0 {
		t.Fatal(r)
	}
	if !bytes.Equal(readFile(t, dst)[:3<<20], make([]byte, 3<<20)) {
		t.Error("zero --map did not zero")
	}
	writeFile(t, dir, "dst", data) // the rerun must not zero again
	if r := runBinary(t, bin, "zero", "--map", zmp, "--length", "3M", dst); r.code != 0 || !strings.Contains(r.stderr, "complete already") {
		t.Errorf("zero rerun = %v; want a no-op", r)
	}
	if !bytes.Equal(readFile(t, dst), data) {
		t.Error("the zero rerun after completion wrote")
	}
}

// TestMapBadOptions refuses option combinations that cannot work.
func TestMapBadOptions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := writeFile(t, dir, "src", randomBytes(31, 1<<20))
	dst := writeFile(t, dir, "dst", make([]byte, 1<<20))
	for _, args := range [][]string{
		{"copy", "--retry-failed", src, dst},
		{"copy", "--map", filepath.Join(dir, "m"), "--no-flush", src, dst},
	} {
		if r := runCLI(t, "", args...); r.code != exitUsage {
			t.Errorf("kcopyd %s = %v; want exit 1", strings.Join(args, " "), r)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "m")); err == nil {
		t.Error("a refused run created the map")
	}
}

// TestMapInterruptCheckpoint interrupts a --map copy whose periodic
// checkpoints are too far apart to happen: what the map calls done then
// comes from the checkpoint made after SIGINT, once the chunks in flight
// finished. The rerun completes the copy.
func TestMapInterruptCheckpoint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeSparseSource(t, src, 41, 64<<20)
	dst := filepath.Join(dir, "dst")
	mp := filepath.Join(dir, "m.map")
	args := []string{"copy", "--map", mp, "--create", "--rate", "16M", "--sub-job-size", "256K", "--checkpoint-interval", "1h", src, dst}
	c := startRunning(t, args...)
	// At least a MiB written: some jobs are under way or done.
	if !c.waitLine(" MiB of ", 20*time.Second) {
		t.Fatalf("no progress within 20 s\n%s", c.output())
	}
	out := c.interrupt(20 * time.Second)
	if !strings.Contains(out, "rerun the same command") {
		t.Errorf("the interrupted run does not say how to resume:\n%s", out)
	}
	m := checkDoneRanges(t, mp, src, []string{dst})
	if m == nil {
		t.Fatal("no map after the interrupt")
	}
	if done, _, _ := m.Counts(); done == 0 {
		t.Errorf("the map has nothing done after the interrupt:\n%s", out)
	}
	if r := runBinary(t, buildBinary(t), args...); r.code != 0 {
		t.Fatal(r)
	}
	if fingerprint(t, dst) != fingerprint(t, src) {
		t.Error("the destination differs from the source after the resumed run")
	}
}
