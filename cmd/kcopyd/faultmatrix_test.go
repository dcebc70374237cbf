package main

// The fault matrix: read errors on the source and write errors on a
// destination, through the command, checked for the exit status, the
// message, the --json report, the bytes of every destination inside and
// outside the region, the --map file, and a rerun.
//
// Faults are real. On NBD: nbdkit's ddrescue filter fails reads of a byte
// range of the source with EIO, its protect filter fails writes to a byte
// range of a destination with EPERM. On local files: nbdfuse mounts an
// NBD export as a file on FUSE, and the export, served by the test from a
// faultdev-wrapped file, fails reads (of the source) or writes (to a
// destination) of a byte range with EIO, which kcopyd sees through the
// kernel's file path; a loop device over such a file gives a block device
// with read faults (fusefault_test.go). (device-mapper, for
// dm-error or dm-flakey, is not in this kernel.) A local file destination
// on a full tmpfs, allocated everywhere but in one chunk, fails there
// with ENOSPC.
//
// Every run keeps a --map, checked after it: its counts are the report's,
// every range it calls done is on every destination, byte for byte, the
// failed ranges are where the fault is (read failures for the source,
// write failures for the faulty destination only), the completed prefix
// of the report is done, and under --ignore-errors nothing is untried.
// The command does not retry a failed write, and a failed read without
// --ignore-errors ends the run, so a fault that fails once is a fault for
// the whole run: "once" ends the fault after the run (the same location
// without it: the NBD socket is a link pointed at a new nbdkit, the FUSE
// export stops failing, the tmpfs's filler is removed) and reruns the
// same command with the same map and --retry-failed, which must complete
// every destination and leave the map complete, and then once more, which
// must do nothing and say so. "permanent" reruns it the same way, which
// must fail the same way with the same failed ranges in a consistent
// map, and reruns what the report said remains (--regions, no map), which
// must fail the same way too.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
)

// The layout of every case: an 8-chunk region taken from the middle of
// the source and written into the middle of each destination, so that
// "first", "middle" and "last chunk" are real chunks and bytes outside
// the region can be checked.
const (
	fmChunk    = 64 << 10
	fmChunks   = 8
	fmLen      = fmChunks * fmChunk
	fmSrcOff   = fmChunk / 2
	fmSrcSize  = fmLen + fmChunk
	fmDstOff   = fmChunk
	fmDstSize  = fmLen + 2*fmChunk
	fmFaultOff = 16 << 10 // where in its chunk a fault is
	fmFaultLen = 4096
)

// The faults of the matrix. fmFaults get every combination of the other
// dimensions: "read" (source, NBD), "write" (destination, NBD), "enospc"
// (destination, file on a full file system). fmLocalFaults, the faults of
// local files and block devices, get the combinations of fmPairs: they
// differ from the others only in how the device reports the error, and
// what the command does next is the same code, which the others cover in
// full.
var (
	fmFaults      = []string{"read", "write", "enospc"}
	fmLocalFaults = []string{"fileread", "blockread", "filewrite"}
)

// Each dimension of a case but the fault, and its values.
var (
	fmDests      = []int{1, 2, 8}
	fmFaultChunk = []int{0, fmChunks / 2, fmChunks - 1}
	fmModes      = []string{"plain", "ignore", "seq"}
	fmLives      = []bool{false, true, true} // permanent, once; 3 values for fmPairs
)

// fmPairs are the indexes into fmDests, fmFaultChunk, fmModes and fmLives
// of 9 cases in which every pair of values of two dimensions occurs: the
// orthogonal array L9(3^4).
var fmPairs = [9][4]int{
	{0, 0, 0, 0}, {0, 1, 1, 1}, {0, 2, 2, 2},
	{1, 0, 1, 2}, {1, 1, 2, 0}, {1, 2, 0, 1},
	{2, 0, 2, 1}, {2, 1, 0, 2}, {2, 2, 1, 0},
}

// fmCase is one case of the matrix.
type fmCase struct {
	fault string // one of fmFaults or fmLocalFaults
	chunk int    // the chunk holding the fault
	dests int    // number of destinations; a destination fault is on the middle one
	once  bool   // transient: gone before the rerun (else permanent)
	mode  string // "plain", "ignore" (--ignore-errors) or "seq" (--write-seq)
}

// readFault reports whether c's fault is on the source.
func (c fmCase) readFault() bool { return strings.HasSuffix(c.fault, "read") }

func (c fmCase) name() string {
	where := map[int]string{0: "first", fmChunks / 2: "middle", fmChunks - 1: "last"}[c.chunk]
	life := "permanent"
	if c.once {
		life = "once"
	}
	return fmt.Sprintf("%s/%ddest/%s/%s/%s", c.fault, c.dests, where, life, c.mode)
}

// faultMatrix returns the cases: every combination for fmFaults, the
// pairs of fmPairs for fmLocalFaults.
func faultMatrix() []fmCase {
	var cs []fmCase
	for _, fault := range fmFaults {
		for _, n := range fmDests {
			for _, chunk := range fmFaultChunk {
				for _, once := range fmLives[:2] {
					for _, mode := range fmModes {
						cs = append(cs, fmCase{fault, chunk, n, once, mode})
					}
				}
			}
		}
	}
	for _, fault := range fmLocalFaults {
		for _, p := range fmPairs {
			cs = append(cs, fmCase{fault, fmFaultChunk[p[1]], fmDests[p[0]], fmLives[p[3]], fmModes[p[2]]})
		}
	}
	return cs
}

// fmDest is one destination of a case.
type fmDest struct {
	loc    string
	path   string // the file holding the destination's bytes
	old    []byte // its bytes before the copy
	faulty bool
	cure   func() string // ends the fault, returns the new location (faulty only)
}

// fmRig is the set-up of one case.
type fmRig struct {
	bin     string // the kcopyd binary
	mapPath string // the --map file of every run but a rerun of what remains
	src     string
	data    []byte        // the source's bytes
	srcCure func() string // ends a source fault, returns the new location
	dests   []*fmDest
	bad     int // the faulty destination, or -1
}

// faultAt returns the offset of the faulty bytes of chunk in the region.
func faultAt(chunk int) int64 { return int64(chunk)*fmChunk + fmFaultOff }

func TestFaultMatrix(t *testing.T) {
	nbdtest.NeedBin(t, "nbdkit")
	if testing.Short() {
		t.Skip("fault matrix: skipped under -short")
	}
	t.Parallel()
	runCases(t, faultMatrix(), fmCase.name, func(t *testing.T, c fmCase) {
		rig := newRig(t, c)
		r := runBinary(t, rig.bin, rig.args(c, "", rig.src, rig.dests, "--map", rig.mapPath)...)
		rep := parseReport(t, r)
		if c.readFault() {
			checkReadFault(t, c, rig, r, rep)
		} else {
			checkWriteFault(t, c, rig, r, rep)
		}
		fails, done := rig.checkMap(t, c, rep)
		if t.Failed() {
			return
		}
		if c.once {
			rig.checkMapRerunOnce(t, c)
			return
		}
		rig.checkMapRerunPermanent(t, c, fails, done)
		checkRerun(t, c, rig, rep)
	})
}

// fmWorkers is how many cases of a matrix run at once. A case mostly
// waits for processes (kcopyd, nbdkit, nbdfuse, losetup) and file
// systems, so more than go test's -parallel (GOMAXPROCS), which would
// leave the cores idle; each case has its own files, servers and mounts.
const fmWorkers = 6

// runCases runs run for every case as a subtest named name(c), fmWorkers
// at a time.
func runCases[C any](t *testing.T, cases []C, name func(C) string, run func(*testing.T, C)) {
	work := make(chan C)
	var wg sync.WaitGroup
	for range min(fmWorkers, len(cases)) {
		wg.Go(func() {
			for c := range work {
				t.Run(name(c), func(t *testing.T) { run(t, c) })
			}
		})
	}
	for _, c := range cases {
		work <- c
	}
	close(work)
	wg.Wait()
}

// newRig builds the source and destinations of c. Healthy destinations
// are local files and nbdkit file exports in turn.
func newRig(t *testing.T, c fmCase) *fmRig {
	t.Helper()
	rig := &fmRig{bin: buildBinary(t), data: fmData(), bad: -1, mapPath: filepath.Join(t.TempDir(), "copy.map")}
	srcAt := [2]int64{fmSrcOff + faultAt(c.chunk), fmFaultLen}
	switch c.fault {
	case "read":
		rig.src, _, rig.srcCure = faultyNBD(t, rig.data, "pread", srcAt)
	case "fileread", "blockread":
		f := newFuseFile(t, rig.data, device.OpRead, srcAt)
		rig.src = f.path
		if c.fault == "blockread" {
			rig.src = looptest.Attach(t, f.path, looptest.ReadOnly())
		}
		rig.srcCure = func() string { f.cure(); return rig.src }
	default:
		rig.src = writeFile(t, t.TempDir(), "src", rig.data)
		rig.bad = c.dests / 2
	}
	dstAt := [2]int64{fmDstOff + faultAt(c.chunk), fmFaultLen}
	// Healthy NBD destinations are exports of one nbdkit serving the
	// files of a directory.
	exports, served := t.TempDir(), []*fmDest{}
	for i := range c.dests {
		old := bytes.Repeat([]byte{byte(0x10 + i)}, fmDstSize)
		d := &fmDest{old: old, faulty: i == rig.bad}
		switch {
		case d.faulty && c.fault == "write":
			d.loc, d.path, d.cure = faultyNBD(t, old, "pwrite", dstAt)
		case d.faulty && c.fault == "filewrite":
			f := newFuseFile(t, old, device.OpWrite, dstAt)
			d.loc, d.path, d.cure = f.path, f.backing, f.cure
		case d.faulty:
			d = fullFSDest(t, old, c.chunk)
		case i%2 == 0:
			d.path = writeFile(t, t.TempDir(), "dst", old)
			d.loc = d.path
		default:
			d.path = writeFile(t, exports, "d"+strconv.Itoa(i), old)
			served = append(served, d)
		}
		rig.dests = append(rig.dests, d)
	}
	if len(served) > 0 {
		s := nbdtest.Nbdkit(t, "file", "dir="+exports)
		for _, d := range served {
			d.loc = s.ExportURI(filepath.Base(d.path))
		}
	}
	return rig
}

// fullFSDest makes a destination file on a small tmpfs that is full, the
// file allocated everywhere but in chunk: writing there fails with
// ENOSPC, overwriting elsewhere works. Its cure removes the file that
// fills the file system.
func fullFSDest(t *testing.T, old []byte, chunk int) *fmDest {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size="+strconv.Itoa(fmDstSize+fmChunk)); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		// MNT_DETACH: a child another test forks at that moment holds
		// a copy of the descriptor table until its exec, which made a
		// plain unmount fail with EBUSY now and then.
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	p := writeFile(t, mnt, "dst", old)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hole := int64(fmDstOff + chunk*fmChunk)
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, hole, fmChunk); err != nil {
		t.Fatalf("punching a hole: %v", err)
	}
	old = bytes.Clone(old)
	clear(old[hole : hole+fmChunk])
	filler := filepath.Join(mnt, "filler")
	fill(t, filler)
	return &fmDest{loc: p, path: p, old: old, faulty: true, cure: func() string {
		if err := os.Remove(filler); err != nil {
			t.Error(err)
		}
		return p
	}}
}

// fill writes to a new file path until its file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !strings.Contains(err.Error(), "no space left") {
				t.Fatalf("filling %s: %v", path, err)
			}
			return
		}
	}
}

// args returns the command line of c from src to dests: the region of
// the matrix, or the regions file regions when it is not "", and the
// options extra.
func (rig *fmRig) args(c fmCase, regions, src string, dests []*fmDest, extra ...string) []string {
	args := append([]string{"copy", "--json", "--sub-job-size", strconv.Itoa(fmChunk)}, extra...)
	if regions == "" {
		args = append(args, "--offset", strconv.Itoa(fmSrcOff), "--length", strconv.Itoa(fmLen), "--dest-offset", strconv.Itoa(fmDstOff))
	} else {
		args = append(args, "--regions", regions)
	}
	switch c.mode {
	case "ignore":
		args = append(args, "--ignore-errors")
	case "seq":
		args = append(args, "--write-seq")
	}
	args = append(args, src)
	for _, d := range dests {
		args = append(args, d.loc)
	}
	return args
}

// want returns what destination d must hold after a complete copy.
func (rig *fmRig) want(d *fmDest) []byte {
	w := bytes.Clone(d.old)
	copy(w[fmDstOff:fmDstOff+fmLen], rig.data[fmSrcOff:])
	return w
}

// checkReadFault checks a run with a read fault on the source: exit 2
// naming the source; without --ignore-errors every destination holds the
// source's bytes up to the reported completed prefix, and nothing was
// written where the report says so; with it, every destination holds the
// source's bytes but for the unreadable range, zeroed and reported.
func checkReadFault(t *testing.T, c fmCase, rig *fmRig, r result, rep jsonReport) {
	t.Helper()
	if r.code != exitReadError || rep.ExitCode != exitReadError || !rep.ReadError || !strings.Contains(r.stderr, "read error on "+rig.src) {
		t.Fatalf("copy = %v; want exit 2 naming the source", r)
	}
	at := faultAt(c.chunk)
	failed := [][2]int64{}
	if c.mode == "ignore" {
		failed = [][2]int64{{fmDstOff + at, fmFaultLen}}
	}
	limit := int64(c.chunk) * fmChunk // a job stops at its failed chunk
	if c.mode == "ignore" {
		limit = at // the engine narrows down the unreadable bytes
	}
	if rep.Completed == nil || *rep.Completed > limit || (c.mode == "ignore" && *rep.Completed != at) {
		t.Fatalf("completed = %s; want at most %d (exactly under --ignore-errors)", deref(rep.Completed), limit)
	}
	done := *rep.Completed
	if want := [3]int64{fmSrcOff + done, fmLen - done, fmDstOff + done}; len(rep.Remaining) != 1 || rep.Remaining[0] != want {
		t.Errorf("remaining = %v; want [%v]", rep.Remaining, want)
	}
	for i, d := range rep.Destinations {
		dd := rig.dests[i]
		if d.Location != dd.loc || d.Error != nil || fmt.Sprint(d.FailedRanges) != fmt.Sprint(failed) || d.Completed == nil || *d.Completed != done {
			t.Errorf("destination %d in the report: %+v; want %s, no error, failed_ranges %v, completed %d", i, d, dd.loc, failed, done)
		}
		got := readFile(t, dd.path)
		want := rig.want(dd)
		checkOutside(t, dd, got)
		if c.mode == "ignore" {
			clear(want[fmDstOff+at : fmDstOff+at+fmFaultLen])
			same(t, dd.loc+": the region (zero where failed_ranges says)", got, want)
			continue
		}
		same(t, dd.loc+": the completed prefix", got[fmDstOff:fmDstOff+done], want[fmDstOff:fmDstOff+done])
		checkUnwritten(t, dd, got, d.UnwrittenRanges)
	}
}

// checkWriteFault checks a run with a write fault on one destination:
// exit 3 naming it and the others as completed; the healthy ones
// identical to the source in the region; the faulty one reported with the
// failed chunk, holding the source's bytes up to its completed prefix
// and under --ignore-errors everywhere but in the failed chunk.
func checkWriteFault(t *testing.T, c fmCase, rig *fmRig, r result, rep jsonReport) {
	t.Helper()
	bad, msg := rig.dests[rig.bad], rig.failedMessage()
	if r.code != exitWriteError || rep.ExitCode != exitWriteError || rep.ReadError || !strings.Contains(r.stderr, "write error on "+bad.loc) || !strings.Contains(r.stderr, msg) {
		t.Fatalf("copy = %v; want exit 3, %q and %q", r, "write error on "+bad.loc, msg)
	}
	chunk := [2]int64{fmDstOff + int64(c.chunk)*fmChunk, fmChunk}
	rig.checkDests(t, rep, func(i int, d jsonDest, dd *fmDest, got, want []byte) {
		if d.Location != dd.loc || d.Error == nil || fmt.Sprint(d.FailedRanges) != fmt.Sprint([][2]int64{chunk}) || d.Completed == nil || *d.Completed > int64(c.chunk)*fmChunk {
			t.Fatalf("faulty destination %d in the report: %+v; want an error, failed_ranges [%v], completed at most %d", i, d, chunk, c.chunk*fmChunk)
		}
		done := *d.Completed
		if rem := [3]int64{fmSrcOff + done, fmLen - done, fmDstOff + done}; len(d.Remaining) != 1 || d.Remaining[0] != rem {
			t.Errorf("faulty destination's remaining = %v; want [%v]", d.Remaining, rem)
		}
		same(t, dd.loc+": the completed prefix", got[fmDstOff:fmDstOff+done], want[fmDstOff:fmDstOff+done])
		same(t, dd.loc+": the failed chunk", got[chunk[0]:chunk[0]+chunk[1]], dd.old[chunk[0]:chunk[0]+chunk[1]])
		checkUnwritten(t, dd, got, d.UnwrittenRanges)
		if c.mode == "ignore" {
			copy(want[chunk[0]:chunk[0]+chunk[1]], dd.old[chunk[0]:])
			same(t, dd.loc+": the region but the failed chunk (--ignore-errors)", got, want)
		}
	})
}

// failedMessage returns the summary the command prints when the faulty
// destination failed and the others completed.
func (rig *fmRig) failedMessage() string {
	var ok []string
	for _, d := range rig.dests {
		if !d.faulty {
			ok = append(ok, d.loc)
		}
	}
	if len(ok) == 0 {
		return "copy failed on every destination"
	}
	return "copy failed on " + rig.dests[rig.bad].loc + "; completed on " + strings.Join(ok, ", ")
}

// checkDests checks what every destination must satisfy: nothing
// outside the region changed, and a healthy one is reported complete and
// identical to the source; it calls faulty with the faulty one's report,
// its bytes and what it would hold after a complete copy.
func (rig *fmRig) checkDests(t *testing.T, rep jsonReport, faulty func(i int, d jsonDest, dd *fmDest, got, want []byte)) {
	t.Helper()
	if len(rep.Destinations) != len(rig.dests) {
		t.Fatalf("report has %d destinations; want %d", len(rep.Destinations), len(rig.dests))
	}
	for i, d := range rep.Destinations {
		dd := rig.dests[i]
		got := readFile(t, dd.path)
		checkOutside(t, dd, got)
		if dd.faulty {
			faulty(i, d, dd, got, rig.want(dd))
		} else {
			checkHealthy(t, d, dd, got, rig.want(dd))
		}
	}
}

// checkHealthy checks a destination without a fault: reported complete,
// identical to the source in the region.
func checkHealthy(t *testing.T, d jsonDest, dd *fmDest, got, want []byte) {
	t.Helper()
	if d.Location != dd.loc || d.Error != nil || len(d.FailedRanges) != 0 || d.Completed == nil || *d.Completed != fmLen || len(d.Remaining) != 0 || len(d.UnwrittenRanges) != 0 {
		t.Errorf("healthy destination in the report: %+v; want %s, no error, completed %d, nothing remaining", d, dd.loc, fmLen)
	}
	same(t, dd.loc+" (healthy)", got, want)
}

// checkOutside checks that nothing outside the region changed.
func checkOutside(t *testing.T, d *fmDest, got []byte) {
	t.Helper()
	same(t, d.loc+": before the region", got[:fmDstOff], d.old[:fmDstOff])
	same(t, d.loc+": after the region", got[fmDstOff+fmLen:], d.old[fmDstOff+fmLen:])
}

// checkUnwritten checks that the ranges reported unwritten are as they
// were.
func checkUnwritten(t *testing.T, d *fmDest, got []byte, unwritten [][2]int64) {
	t.Helper()
	for _, u := range unwritten {
		if u[0] < fmDstOff || u[0]+u[1] > fmDstOff+fmLen {
			t.Errorf("%s: unwritten range %v outside the region", d.loc, u)
			continue
		}
		same(t, fmt.Sprintf("%s: unwritten range %v", d.loc, u), got[u[0]:u[0]+u[1]], d.old[u[0]:u[0]+u[1]])
	}
}

// checkRerun copies again what the report says remains (the faulty
// destination's remaining for a write fault, the top-level one for a
// read fault), with the same mode and no map, while the fault is still
// there: the rerun fails the same way. (With a transient fault, the
// rerun that completes is the one with the map: checkMapRerunOnce.)
func checkRerun(t *testing.T, c fmCase, rig *fmRig, rep jsonReport) {
	t.Helper()
	dests, rem, code := rig.dests, rep.Remaining, exitReadError
	if !c.readFault() {
		dests, rem, code = []*fmDest{rig.dests[rig.bad]}, rep.Destinations[rig.bad].Remaining, exitWriteError
	}
	var lines strings.Builder
	for _, x := range rem {
		fmt.Fprintf(&lines, "%d %d %d\n", x[0], x[1], x[2])
	}
	regions := writeFile(t, t.TempDir(), "regions", []byte(lines.String()))
	r := runBinary(t, rig.bin, rig.args(c, regions, rig.src, dests)...)
	if r.code != code {
		t.Fatalf("rerun of the remaining %v with the fault still there = %v; want exit %d", rem, r, code)
	}
	rep2 := parseReport(t, r)
	if c.readFault() && !rep2.ReadError || !c.readFault() && len(rep2.Destinations[0].FailedRanges) != 1 {
		t.Errorf("rerun report %+v does not show the fault again", rep2)
	}
}

// TestFaultMatrixServerLost loses an NBD destination while the copy
// writes a given chunk to it: its server is killed (SIGKILL), or stops
// answering (SIGSTOP) and --nbd-timeout gives up on it. The moment is
// forced by a gate in the server that holds the chunk's write, not by
// timing. The others must complete, identical to the source.
func TestFaultMatrixServerLost(t *testing.T) {
	t.Parallel()
	nbdtest.NeedBin(t, "nbdkit")
	if testing.Short() {
		t.Skip("fault matrix: skipped under -short")
	}
	for _, how := range []string{"killed", "stalled"} {
		for _, n := range []int{2, 8} {
			for _, chunk := range fmFaultChunk {
				c := fmCase{fault: how, chunk: chunk, dests: n, mode: "plain"}
				t.Run(strings.Replace(c.name(), "/permanent/plain", "", 1), func(t *testing.T) {
					t.Parallel()
					checkServerLost(t, c)
				})
			}
		}
	}
}

// checkServerLost runs one case of TestFaultMatrixServerLost.
func checkServerLost(t *testing.T, c fmCase) {
	rig := newRig(t, fmCase{fault: "read", dests: c.dests}) // healthy destinations
	rig.src = writeFile(t, t.TempDir(), "src", rig.data)
	rig.bad = c.dests / 2
	old := rig.dests[rig.bad].old
	chunk := [2]int64{fmDstOff + int64(c.chunk)*fmChunk, fmChunk}
	g := newGatedNBD(t, old, [2]int64{chunk[0] + fmFaultOff, fmFaultLen})
	rig.dests[rig.bad] = &fmDest{loc: g.URI, path: g.backing, old: old, faulty: true}
	args := rig.args(c, "", rig.src, rig.dests, "--map", rig.mapPath)
	if c.fault == "stalled" {
		args = append([]string{args[0], "--nbd-timeout", "1s"}, args[1:]...)
	}
	done := make(chan result, 1)
	go func() { done <- runBinary(t, rig.bin, args...) }()
	g.gate.wait(t, done)
	if c.fault == "killed" {
		g.Kill()
	} else {
		g.signal(t, syscall.SIGSTOP)
		t.Cleanup(func() { g.signal(t, syscall.SIGCONT) })
		g.gate.open("go") // the write completes in the server, which never answers
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(hangGuard):
		t.Fatalf("kcopyd did not end within %v after its destination was %s", hangGuard, c.fault)
	}
	rep := checkLost(t, c, rig, r, chunk)
	rig.checkLostMap(t, rep, chunk)
}

// checkLost checks the outcome of a lost destination: exit 3 naming it
// and the others as completed, the others identical to the source, the
// lost one reported with the chunk held at the gate among its failed
// ranges and holding the source's bytes up to its completed prefix.
func checkLost(t *testing.T, c fmCase, rig *fmRig, r result, chunk [2]int64) jsonReport {
	t.Helper()
	bad, msg := rig.dests[rig.bad], rig.failedMessage()
	why := map[string]string{"killed": "connection", "stalled": "no progress"}[c.fault]
	if r.code != exitWriteError || !strings.Contains(r.stderr, "write error on "+bad.loc) || !strings.Contains(r.stderr, msg) || !strings.Contains(r.stderr, why) {
		t.Fatalf("copy = %v; want exit 3, %q, %q and %q", r, "write error on "+bad.loc, msg, why)
	}
	rep := parseReport(t, r)
	rig.checkDests(t, rep, func(i int, d jsonDest, dd *fmDest, got, want []byte) {
		held := false
		for _, f := range d.FailedRanges {
			held = held || f[0] <= chunk[0] && chunk[0]+chunk[1] <= f[0]+f[1]
		}
		if d.Error == nil || !held || d.Completed == nil || *d.Completed > int64(c.chunk)*fmChunk {
			t.Fatalf("lost destination %d in the report: %+v; want an error, %v among failed_ranges, completed at most %d\n%v", i, d, chunk, c.chunk*fmChunk, r)
		}
		done := *d.Completed
		same(t, dd.loc+": the completed prefix", got[fmDstOff:fmDstOff+done], want[fmDstOff:fmDstOff+done])
		checkUnwritten(t, dd, got, d.UnwrittenRanges)
	})
	return rep
}

// same is sameBytes with a fast path: under -race, comparing megabytes
// byte by byte takes seconds.
func same(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		sameBytes(t, what, got, want)
	}
}

// fmData is the source data of every case (read-only), made once:
// generating it under -race is slow too.
var fmData = sync.OnceValue(func() []byte { return randomBytes(1000, fmSrcSize) })
