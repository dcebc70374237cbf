package task_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
	"github.com/kcopyd/kcopyd/device/faultdev"
	"github.com/kcopyd/kcopyd/internal/testutil"
	"github.com/kcopyd/kcopyd/location"
	"github.com/kcopyd/kcopyd/task"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }

// openFile opens path (a file or block device) for reading or writing.
func openFile(t testing.TB, path string, o *location.Options) *location.Location {
	t.Helper()
	l, err := location.Open(context.Background(), path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// inspect inspects a path that may not exist yet.
func inspect(t testing.TB, path string) *location.Location {
	t.Helper()
	l, err := location.Inspect(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// sparseFile writes data at 0 and at hole+len(data), leaving a hole of
// hole bytes between, and returns the path and the full contents.
func sparseFile(t testing.TB, dir, name string, data []byte, hole int64) (string, []byte) {
	t.Helper()
	path := testutil.WriteFile(t, dir, name, data)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, int64(len(data))+hole); err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte(nil), data...), make([]byte, hole)...), data...)
	return path, want
}

func sameFile(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes, first difference at %d; want %d bytes", path, len(got), device.FirstDiff(got, want), len(want))
	}
}

// TestCopySparseToNewFiles copies a sparse file to a new file and to a
// short one that is grown: both get the data, the hole stays a hole in the
// new file, and the verify reads them back identical.
func TestCopySparseToNewFiles(t *testing.T) {
	dir := t.TempDir()
	src, want := sparseFile(t, dir, "src", testutil.Pattern(1, 0, 2<<20), 8<<20)
	short := testutil.WriteFile(t, dir, "short", bytes.Repeat([]byte{0xAA}, 1<<20))
	var started, progressed bool
	rep := task.Run(context.Background(), &task.Options{
		Src:     openFile(t, src, nil),
		Dests:   []*location.Location{inspect(t, filepath.Join(dir, "new")), inspect(t, short)},
		Regions: []task.Region{task.Whole(int64(len(want)))},
		Create:  &location.Options{},
		MaxJobs: 4, Sparse: true, Verify: true,
		Events: task.Events{Start: func(int64) { started = true }, Progress: func(int64) { progressed = true }},
	})
	if rep.Refused != nil {
		t.Fatal(rep.Refused)
	}
	if !started || !progressed {
		t.Errorf("events: Start %v, Progress %v; want both", started, progressed)
	}
	for i, d := range rep.Dests {
		if d.Failed() || d.Verify == nil || d.Verify.FirstDiff >= 0 || d.Verify.Err != nil {
			t.Errorf("destination %d: %+v, verify %+v; want written and verified", i, d, d.Verify)
		}
	}
	if !rep.Verify.Ran || rep.Result.Completed != int64(len(want)) {
		t.Errorf("verify ran %v, completed %d; want true, %d", rep.Verify.Ran, rep.Result.Completed, len(want))
	}
	sameFile(t, filepath.Join(dir, "new"), want)
	sameFile(t, short, want)
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "new"), &st); err != nil {
		t.Fatal(err)
	}
	if alloc := st.Blocks * 512; alloc >= int64(len(want))-4<<20 {
		t.Errorf("new file has %d bytes allocated; want the 8 MiB hole left out", alloc)
	}
}

// TestRefusedUndoesCreate: a map of another job is refused after the
// destination files were created and grown; they are removed and
// truncated back, and nothing was written.
func TestRefusedUndoesCreate(t *testing.T) {
	dir := t.TempDir()
	data := testutil.Pattern(2, 0, 1<<20)
	src := testutil.WriteFile(t, dir, "src", data)
	other := testutil.WriteFile(t, dir, "other", data)
	mapPath := filepath.Join(dir, "map")
	// A map of a copy from another source.
	rep := task.Run(context.Background(), &task.Options{
		Src: openFile(t, other, nil), Dests: []*location.Location{inspect(t, filepath.Join(dir, "first"))},
		Regions: []task.Region{task.Whole(1 << 20)}, Create: &location.Options{}, Map: &task.MapOptions{Path: mapPath},
	})
	if rep.Refused != nil || rep.Map == nil || !rep.Map.Complete {
		t.Fatalf("first run: refused %v, map %+v", rep.Refused, rep.Map)
	}
	short := testutil.WriteFile(t, dir, "short", []byte("old"))
	rep = task.Run(context.Background(), &task.Options{
		Src:     openFile(t, src, nil),
		Dests:   []*location.Location{inspect(t, filepath.Join(dir, "new")), inspect(t, short)},
		Regions: []task.Region{task.Whole(1 << 20)}, Create: &location.Options{},
		Map: &task.MapOptions{Path: mapPath}, Names: task.Names{Map: "--map"},
	})
	if rep.Refused == nil || !strings.Contains(rep.Refused.Error(), "nothing was written (give another --map FILE for this copy)") {
		t.Fatalf("Refused = %v; want the map of another job refused", rep.Refused)
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("created destination left behind: %v", err)
	}
	sameFile(t, short, []byte("old"))
}

// TestDropFailedDestination fails every write to one destination: it is
// dropped and reported with its failed range, and the other completes.
func TestDropFailedDestination(t *testing.T) {
	dir := t.TempDir()
	data := testutil.Pattern(3, 0, 4<<20)
	src := testutil.WriteFile(t, dir, "src", data)
	good := testutil.WriteFile(t, dir, "good", make([]byte, 4<<20))
	badPath := testutil.WriteFile(t, dir, "bad", make([]byte, 4<<20))
	f, err := device.OpenFile(badPath, device.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bad := &location.Location{Spec: "bad", Kind: location.File, Exists: true, Size: 4 << 20,
		Dev: faultdev.Wrap(f, faultdev.Writes(faultdev.Range(1<<20, 4096, faultdev.Always(nil))))}
	var dropped []int
	rep := task.Run(context.Background(), &task.Options{
		Src: openFile(t, src, nil), Dests: []*location.Location{bad, openFile(t, good, &location.Options{Write: true})},
		Regions: []task.Region{task.Whole(4 << 20)}, SubJobSize: 256 << 10, NoFlush: true,
		Events: task.Events{Dropped: func(i int) { dropped = append(dropped, i) }},
	})
	if rep.Refused != nil {
		t.Fatal(rep.Refused)
	}
	if len(dropped) != 1 || dropped[0] != 0 {
		t.Errorf("Dropped told %v; want [0]", dropped)
	}
	if d := rep.Dests[0]; !d.Failed() || len(d.Ranges) == 0 || !errors.Is(d.Errs[0], faultdev.ErrInjected) {
		t.Errorf("bad destination %+v; want its injected write error and failed range", d)
	}
	if rep.Dests[1].Failed() {
		t.Errorf("good destination failed: %v", rep.Dests[1].Errs)
	}
	if err := rep.Err(); !errors.Is(err, task.ErrWrite) || !strings.Contains(err.Error(), "copy failed on bad; completed on "+good) {
		t.Errorf("Err() = %v; want ErrWrite naming the bad destination and the good one", err)
	}
	if p := rep.Result.Dests[0].Prefixes[0]; p > 1<<20 {
		t.Errorf("bad destination prefix %d; want at most the failure at %d", p, 1<<20)
	}
	sameFile(t, good, data)
}

// TestMapResume: a run with a map records the job done; a second run of
// the same job does nothing (Map.AlreadyComplete), and with a region left
// untried by an interrupt, the rerun copies only the rest.
func TestMapResume(t *testing.T) {
	dir := t.TempDir()
	data := testutil.Pattern(4, 0, 2<<20)
	src := testutil.WriteFile(t, dir, "src", data)
	dst := testutil.WriteFile(t, dir, "dst", make([]byte, 2<<20))
	mapPath := filepath.Join(dir, "map")
	run := func(ctx context.Context) *task.Report {
		return task.Run(ctx, &task.Options{
			Src: openFile(t, src, nil), Dests: []*location.Location{openFile(t, dst, &location.Options{Write: true})},
			Regions: []task.Region{task.Whole(2 << 20)}, Map: &task.MapOptions{Path: mapPath},
		})
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	rep := run(canceled)
	if rep.Refused != nil || !rep.Interrupted() || rep.Map == nil || rep.Map.Complete || rep.Map.Untried != 2<<20 {
		t.Fatalf("canceled run: refused %v, interrupted %v, map %+v; want everything untried", rep.Refused, rep.Interrupted(), rep.Map)
	}
	rep = run(context.Background())
	if rep.Refused != nil || rep.Map == nil || !rep.Map.Complete || rep.Map.AlreadyComplete {
		t.Fatalf("resumed run: refused %v, map %+v", rep.Refused, rep.Map)
	}
	sameFile(t, dst, data)
	if err := os.WriteFile(dst, make([]byte, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	rep = run(context.Background())
	if rep.Refused != nil || rep.Map == nil || !rep.Map.AlreadyComplete || rep.Result != nil {
		t.Fatalf("third run: refused %v, map %+v; want nothing to do", rep.Refused, rep.Map)
	}
	sameFile(t, dst, make([]byte, 2<<20)) // not written again
}

// TestZeroVerify zeroes part of a file and reads it back as zeroes.
func TestZeroVerify(t *testing.T) {
	dir := t.TempDir()
	data := testutil.Pattern(5, 0, 1<<20)
	dst := testutil.WriteFile(t, dir, "dst", data)
	rg := task.Whole(256 << 10)
	rg.Dest = 512 << 10
	rep := task.Run(context.Background(), &task.Options{
		Dests: []*location.Location{openFile(t, dst, &location.Options{Write: true})}, Regions: []task.Region{rg}, Verify: true,
	})
	if rep.Refused != nil || rep.Dests[0].Failed() || rep.Dests[0].Verify == nil || rep.Dests[0].Verify.FirstDiff >= 0 {
		t.Fatalf("zero: refused %v, dest %+v", rep.Refused, rep.Dests)
	}
	clear(data[512<<10 : 768<<10])
	sameFile(t, dst, data)
}

// TestRefusals: bad input is refused before anything is written.
func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	src := testutil.WriteFile(t, dir, "src", testutil.Pattern(6, 0, 1<<20))
	dst := testutil.WriteFile(t, dir, "dst", make([]byte, 1<<20))
	beyond := task.Whole(1 << 20)
	beyond.Dest = 4096
	for _, tc := range []struct {
		name    string
		src     bool
		regions []task.Region
		want    string
		// seqIgnore sets WriteSeq and IgnoreErrors, which cannot be
		// combined.
		seqIgnore bool
	}{
		{"beyond the destination", true, []task.Region{beyond}, "the region: destination range [4096, +1048576) ends at 1052672, beyond the end of", false},
		{"named by its line", true, []task.Region{{Region: beyond.Region, Line: 3}}, "regions line 3: destination range", false},
		{"zero beyond the end", false, []task.Region{beyond}, "the region: range [4096, +1048576)", false},
		{"source aliased", true, []task.Region{task.Whole(1 << 20)}, "is the source", false},
		{"write-seq with ignore-errors", true, []task.Region{task.Whole(1 << 20)}, "WriteSeq cannot be combined with IgnoreErrors", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &task.Options{Dests: []*location.Location{openFile(t, dst, &location.Options{Write: true})}, Regions: tc.regions,
				WriteSeq: tc.seqIgnore, IgnoreErrors: tc.seqIgnore}
			if tc.src {
				o.Src = openFile(t, src, nil)
			}
			if tc.name == "source aliased" {
				o.Src = openFile(t, dst, nil)
			}
			rep := task.Run(context.Background(), o)
			if rep.Refused == nil || !strings.Contains(rep.Refused.Error(), tc.want) {
				t.Errorf("Refused = %v; want %q", rep.Refused, tc.want)
			}
			if tc.seqIgnore && !errors.Is(rep.Refused, task.ErrOptions) {
				t.Errorf("Refused = %v; want an error wrapping ErrOptions", rep.Refused)
			}
			sameFile(t, dst, make([]byte, 1<<20))
		})
	}
}

// TestLoopUnalignedReopensBuffered: a block device opened with O_DIRECT
// by default (BlockDirect) is reopened through the page cache for a
// region O_DIRECT cannot serve, instead of refusing it; asked for
// (Direct), the same region is refused naming the option.
func TestLoopUnalignedReopensBuffered(t *testing.T) {
	loop := looptest.New(t, 8<<20, looptest.SectorSize(4096))
	dir := t.TempDir()
	data := testutil.Pattern(7, 0, 1<<20)
	src := testutil.WriteFile(t, dir, "src", data)
	rg := task.Whole(512)
	rg.Src, rg.Dest = 512, 1024+512

	l := openFile(t, loop, &location.Options{Write: true, BlockDirect: true, Force: true})
	if !l.AutoDirect {
		t.Skipf("%s was not opened with O_DIRECT", loop)
	}
	rep := task.Run(context.Background(), &task.Options{Src: openFile(t, src, nil), Dests: []*location.Location{l}, Regions: []task.Region{rg}, Verify: true})
	if rep.Refused != nil || rep.Dests[0].Failed() || rep.Dests[0].Verify == nil || rep.Dests[0].Verify.FirstDiff >= 0 {
		t.Fatalf("unaligned copy to %s: refused %v, dest %+v", loop, rep.Refused, rep.Dests)
	}
	d := openFile(t, loop, nil)
	got := make([]byte, 512)
	if _, err := d.Dev.ReadAt(got, 1024+512); err != nil || !bytes.Equal(got, data[512:1024]) {
		t.Fatalf("loop device bytes at 1536: err %v, equal %v", err, bytes.Equal(got, data[512:1024]))
	}

	l = openFile(t, loop, &location.Options{Write: true, Direct: true, Force: true})
	rep = task.Run(context.Background(), &task.Options{Src: openFile(t, src, nil), Dests: []*location.Location{l}, Regions: []task.Region{rg}, Direct: true, Names: task.Names{Direct: "--direct"}})
	if rep.Refused == nil || !strings.Contains(rep.Refused.Error(), "is not a multiple of 4096 bytes, as "+loop+" requires under --direct") {
		t.Fatalf("Refused = %v; want the alignment named", rep.Refused)
	}
}

// TestCompare compares a file with two copies, one differing in its
// second and fourth chunks, and one unreadable device: the first
// difference and the differing chunks are found, the read error is kept
// on its destination, and the others are compared to the end.
func TestCompare(t *testing.T) {
	dir := t.TempDir()
	data := testutil.Pattern(8, 0, 4<<20)
	src := openFile(t, testutil.WriteFile(t, dir, "src", data), nil)
	same := openFile(t, testutil.WriteFile(t, dir, "same", data), nil)
	changed := append([]byte(nil), data...)
	changed[1<<20+17] ^= 1
	changed[3<<20] ^= 1
	diff := openFile(t, testutil.WriteFile(t, dir, "diff", changed), nil)
	broken := faultdev.Wrap(device.NewMem(4<<20), faultdev.Reads(faultdev.Always(nil)))
	res, err := task.Compare(context.Background(), &task.CompareOptions{
		Src: src.Dev, Dests: []device.Device{same.Dev, diff.Dev, broken},
		Regions: []task.Region{task.Whole(4 << 20)}, ChunkSize: 1 << 20, MaxJobs: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := res.Dests[0]; d.FirstDiff != -1 || d.Err != nil {
		t.Errorf("identical copy: %+v", d)
	}
	if d := res.Dests[1]; d.FirstDiff != 1<<20+17 || d.Chunks != 2 || d.Err != nil {
		t.Errorf("changed copy: %+v; want first difference at %d in 2 chunks", d, 1<<20+17)
	}
	if d := res.Dests[2]; !errors.Is(d.Err, faultdev.ErrInjected) {
		t.Errorf("unreadable destination: %+v; want its read error", d)
	}
	if res.Canceled || res.ReadErr != nil || res.Compared != 4<<20 {
		t.Errorf("result %+v; want everything compared", res)
	}
}

// TestMapRegionsOutOfOrder: regions listed out of their offsets' order
// are recorded in the map at their own job offsets, so the map ends
// complete (a job joining two regions must not be charged to the first
// one's offsets).
func TestMapRegionsOutOfOrder(t *testing.T) {
	dir := t.TempDir()
	data := testutil.Pattern(9, 0, 2<<20)
	src := testutil.WriteFile(t, dir, "src", data)
	dst := testutil.WriteFile(t, dir, "dst", make([]byte, 2<<20))
	second, first := task.Whole(1<<20), task.Whole(1<<20)
	second.Src, second.Dest, second.Line = 1<<20, 1<<20, 1
	first.Line = 2
	rep := task.Run(context.Background(), &task.Options{
		Src: openFile(t, src, nil), Dests: []*location.Location{openFile(t, dst, &location.Options{Write: true})},
		Regions: []task.Region{second, first}, SubJobSize: 256 << 10, MaxJobs: 2, Map: &task.MapOptions{Path: filepath.Join(dir, "map")},
	})
	if rep.Refused != nil || rep.Dests[0].Failed() {
		t.Fatalf("refused %v, dest %+v", rep.Refused, rep.Dests[0])
	}
	if m := rep.Map; m == nil || !m.Complete || m.Done != 2<<20 {
		t.Fatalf("map %+v; want 2 MiB done", m)
	}
	sameFile(t, dst, data)
}
