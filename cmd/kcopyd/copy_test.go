package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
)

func TestCopyDestinations(t *testing.T) {
	t.Parallel()
	const size = 3<<20 + 12345 // not a multiple of the sub-job size
	for _, n := range []int{1, 3, 8} {
		for _, create := range []bool{true, false} {
			t.Run(fmt.Sprintf("%d dests create=%v", n, create), func(t *testing.T) {
				dir := t.TempDir()
				data := randomBytes(uint64(n), size)
				src := writeFile(t, dir, "src", data)
				args := []string{"copy", "--sub-job-size", "64K", "--json"}
				if create {
					args = append(args, "--create")
				}
				args = append(args, src)
				var dests []string
				for i := range n {
					p := filepath.Join(dir, fmt.Sprintf("d%d", i))
					if !create {
						writeFile(t, dir, filepath.Base(p), randomBytes(uint64(100+i), size+5000))
					}
					dests = append(dests, p)
				}
				r := runCLI(t, "", append(args, dests...)...)
				if r.code != 0 {
					t.Fatalf("copy = %v; want exit 0", r)
				}
				for i, p := range dests {
					got := readFile(t, p)
					if create && len(got) != size {
						t.Errorf("created %s has %d bytes; want %d", p, len(got), size)
					}
					if !bytes.Equal(got[:size], data) {
						t.Errorf("destination %d differs from the source", i)
					}
				}
				var rep jsonReport
				if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
					t.Fatalf("--json output %q: %v", r.stdout, err)
				}
				if rep.Bytes != size || rep.ReadError || len(rep.Destinations) != n || rep.ExitCode != 0 {
					t.Errorf("report = %+v; want %d bytes, no read error, %d destinations", rep, size, n)
				}
				for i, d := range rep.Destinations {
					if d.Location != dests[i] || d.Error != nil || len(d.FailedRanges) != 0 {
						t.Errorf("report destination %d = %+v; want %s without errors", i, d, dests[i])
					}
				}
			})
		}
	}
}

func TestCopyRegionOptions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := randomBytes(7, 1<<20)
	src := writeFile(t, dir, "src", data)
	old := randomBytes(8, 1<<20)
	dst := writeFile(t, dir, "dst", old)
	r := runCLI(t, "", "copy", "-q", "--offset", "1000", "--length", "2s", "--dest-offset", "7", src, dst)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("copy = %v; want exit 0 and nothing on stderr under -q", r)
	}
	want := append([]byte(nil), old...)
	copy(want[7:7+1024], data[1000:2024])
	if !bytes.Equal(readFile(t, dst), want) {
		t.Errorf("destination is not the old contents with source [1000, +1024) at 7")
	}
	// --length defaults to the end of the source.
	r = runCLI(t, "", "copy", "--offset", "1M", "--dest-offset", "0", src, dst)
	if r.code != exitUsage || !strings.Contains(r.stderr, "at or beyond the end of the source") {
		t.Errorf("copy --offset 1M of a 1MiB source = %v; want exit 1 naming the end of the source", r)
	}
	r = runCLI(t, "", "copy", "--offset", "1020K", src, dst)
	if r.code != 0 || !bytes.Equal(readFile(t, dst)[:4096], data[1020<<10:]) {
		t.Errorf("copy --offset 1020K = %v; want the last 4KiB at offset 0", r)
	}
}

// holeSpans returns the data ranges of a file found with SEEK_DATA and
// SEEK_HOLE.
func dataSpans(t testing.TB, path string) [][2]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	var out [][2]int64
	for off := int64(0); off < st.Size(); {
		d, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			break // ENXIO: no more data
		}
		h, err := unix.Seek(int(f.Fd()), d, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, [2]int64{d, h - d})
		off = h
	}
	return out
}

func allocated(t testing.TB, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// makeSparse writes a 16MiB file with data at [1M, +512K) and [9M, +1M+4K)
// and all-zero but allocated bytes at [12M, +1M).
func makeSparse(t testing.TB, dir string) (string, []byte) {
	t.Helper()
	const size = 16 << 20
	want := make([]byte, size)
	p := filepath.Join(dir, "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int64{{1 << 20, 512 << 10}, {9 << 20, 1<<20 + 4096}} {
		b := randomBytes(uint64(r[0]), r[1])
		copy(want[r[0]:], b)
		if _, err := f.WriteAt(b, r[0]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.WriteAt(make([]byte, 1<<20), 12<<20); err != nil {
		t.Fatal(err)
	}
	return p, want
}

func TestCopySparse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src, want := makeSparse(t, dir)

	// A fresh file: holes are skipped, the allocated zeroes too.
	fresh := filepath.Join(dir, "fresh")
	if r := runCLI(t, "", "copy", "--create", src, fresh); r.code != 0 {
		t.Fatalf("copy --create = %v", r)
	}
	if !bytes.Equal(readFile(t, fresh), want) {
		t.Fatal("fresh copy differs from the source")
	}
	if got, max := allocated(t, fresh), int64(2<<20); got > max {
		t.Errorf("fresh copy allocates %d bytes (spans %v); want at most %d (holes stay holes)", got, dataSpans(t, fresh), max)
	}

	// An existing file full of data: holes are zeroed by punching holes.
	full := writeFile(t, dir, "full", randomBytes(1, 16<<20))
	if r := runCLI(t, "", "copy", src, full); r.code != 0 {
		t.Fatalf("copy = %v", r)
	}
	if !bytes.Equal(readFile(t, full), want) {
		t.Fatal("copy over data differs from the source")
	}
	if got, max := allocated(t, full), int64(3<<20); got > max {
		t.Errorf("copy over data allocates %d bytes (spans %v); want at most %d (holes punched)", got, dataSpans(t, full), max)
	}

	// --no-sparse writes every byte.
	dense := filepath.Join(dir, "dense")
	if r := runCLI(t, "", "copy", "--no-sparse", "--create", src, dense); r.code != 0 {
		t.Fatalf("copy --no-sparse = %v", r)
	}
	if !bytes.Equal(readFile(t, dense), want) {
		t.Fatal("dense copy differs from the source")
	}
	if got, min := allocated(t, dense), int64(16<<20); got < min {
		t.Errorf("--no-sparse copy allocates %d bytes; want %d", got, min)
	}

	// --dest-is-zero trusts the destination: holes are not written, so
	// old data there stays (that is the documented hazard).
	trusting := writeFile(t, dir, "trusting", bytes.Repeat([]byte{0xAA}, 16<<20))
	if r := runCLI(t, "", "copy", "--dest-is-zero", src, trusting); r.code != 0 {
		t.Fatalf("copy --dest-is-zero = %v", r)
	}
	got := readFile(t, trusting)
	if !bytes.Equal(got[1<<20:1<<20+512<<10], want[1<<20:1<<20+512<<10]) || got[0] != 0xAA {
		t.Errorf("--dest-is-zero: data not copied or holes written")
	}

	// Extending a short file with --create: the new part is not zeroed
	// twice, the old part is.
	short := writeFile(t, dir, "short", randomBytes(2, 4<<20))
	if r := runCLI(t, "", "copy", "--create", src, short); r.code != 0 {
		t.Fatalf("copy --create onto a short file = %v", r)
	}
	if !bytes.Equal(readFile(t, short), want) {
		t.Fatal("extended copy differs from the source")
	}
}

func TestCopyRegionsFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const size = 8 << 20
	data := randomBytes(3, size)
	src := writeFile(t, dir, "src", data)
	old := randomBytes(4, size)
	d1 := writeFile(t, dir, "d1", old)
	d2 := writeFile(t, dir, "d2", old)
	want := append([]byte(nil), old...)
	var b strings.Builder
	b.WriteString("# 400 regions, in both sizes syntaxes\n")
	for i := range 400 {
		// Destination slots of 20000 bytes, each region shorter; sources
		// from anywhere.
		length := int64(1 + (i*7919)%19999)
		srcOff := int64((i * 104729) % (size - 20000))
		dst := int64(i) * 20000
		copy(want[dst:dst+length], data[srcOff:srcOff+length])
		fmt.Fprintf(&b, "%d %d %d # region %d\n", srcOff, length, dst, i)
	}
	r := runCLI(t, b.String(), "copy", "--regions", "-", "--jobs", "16", "--json", src, d1, d2)
	if r.code != 0 {
		t.Fatalf("copy --regions = %v", r)
	}
	for _, p := range []string{d1, d2} {
		if !bytes.Equal(readFile(t, p), want) {
			t.Errorf("%s is not what the 400 regions should make", p)
		}
	}
	var rep jsonReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Completed != nil || len(rep.Remaining) != 0 {
		t.Errorf("report completed=%v remaining=%v; want neither for a complete --regions run", rep.Completed, rep.Remaining)
	}
	// The same from a file, with --write-seq.
	regions := writeFile(t, dir, "regions", []byte(b.String()))
	d3 := writeFile(t, dir, "d3", old)
	if r := runCLI(t, "", "copy", "--regions", regions, "--write-seq", src, d3); r.code != 0 || !bytes.Equal(readFile(t, d3), want) {
		t.Errorf("copy --regions FILE --write-seq = %v; want exit 0 and the regions copied", r)
	}
}

// badInput is a command that must fail with exit status 1, write nothing,
// and say why.
type badInput struct {
	name  string
	setup func(t *testing.T, dir string) (args []string, stdin string)
	want  string // in stderr
}

func checkBadInputs(t *testing.T, cases []badInput) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args, stdin := tc.setup(t, dir)
			var paths []string
			for _, a := range args {
				if strings.HasPrefix(a, dir) {
					paths = append(paths, a)
				}
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				paths = append(paths, filepath.Join(dir, e.Name()))
			}
			snap := takeSnapshot(t, paths...)
			r := runCLI(t, stdin, args...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("kcopyd %s = %v; want exit 1 and %q on stderr", strings.Join(args, " "), r, tc.want)
			}
			snap.unchanged(t)
			after, _ := os.ReadDir(dir)
			if len(after) != len(entries) {
				t.Errorf("the directory had %d entries, now %d: something was created", len(entries), len(after))
			}
		})
	}
}

// files writes a 1MiB source and destinations d0..d(n-1) of size bytes
// with random contents.
func files(t *testing.T, dir string, n int, size int64) (string, []string) {
	t.Helper()
	src := writeFile(t, dir, "src", randomBytes(1, 1<<20))
	var ds []string
	for i := range n {
		ds = append(ds, writeFile(t, dir, fmt.Sprintf("d%d", i), randomBytes(uint64(10+i), size)))
	}
	return src, ds
}

func TestCopyBadInput(t *testing.T) {
	t.Parallel()
	checkBadInputs(t, []badInput{
		{"missing source", func(t *testing.T, dir string) ([]string, string) {
			_, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", filepath.Join(dir, "nope"), ds[0]}, ""
		}, "does not exist"},
		{"source is a directory", func(t *testing.T, dir string) ([]string, string) {
			_, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", dir, ds[0]}, ""
		}, "is a directory"},
		{"destination is a directory", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			sub := filepath.Join(dir, "sub")
			os.Mkdir(sub, 0o755)
			return []string{"copy", "--create", src, ds[0], sub}, ""
		}, "is a directory"},
		{"destination too short", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 2, 1<<20)
			os.Truncate(ds[1], 1<<19)
			return []string{"copy", src, ds[0], ds[1]}, ""
		}, "use --create"},
		{"destination region beyond end", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--dest-offset", "1", src, ds[0]}, ""
		}, "beyond the end of the file (use --create"},
		{"missing destination without --create", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", src, ds[0], filepath.Join(dir, "new")}, ""
		}, "does not exist (use --create"},
		{"create in a missing directory", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--create", src, ds[0], filepath.Join(dir, "no", "new")}, ""
		}, "cannot create"},
		{"nine destinations", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 9, 1<<20)
			return append([]string{"copy", src}, ds...), ""
		}, "at most 8 destinations, got 9"},
		{"same destination twice by hard link", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			link := filepath.Join(dir, "link")
			if err := os.Link(ds[0], link); err != nil {
				t.Fatal(err)
			}
			return []string{"copy", src, ds[0], link}, ""
		}, "given twice"},
		{"same destination twice by symlink", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			link := filepath.Join(dir, "sym")
			os.Symlink(ds[0], link)
			return []string{"copy", src, link, ds[0]}, ""
		}, "given twice"},
		{"same new file twice", func(t *testing.T, dir string) ([]string, string) {
			src, _ := files(t, dir, 0, 0)
			return []string{"copy", "--create", src, filepath.Join(dir, "n"), filepath.Join(dir, ".", "n")}, ""
		}, "given twice"},
		{"destination is the source, overlapping", func(t *testing.T, dir string) ([]string, string) {
			src, _ := files(t, dir, 0, 0)
			return []string{"copy", "--length", "64K", "--dest-offset", "32K", src, src}, ""
		}, "is the source"},
		{"destination is the source by another name, overlapping", func(t *testing.T, dir string) ([]string, string) {
			src, _ := files(t, dir, 0, 0)
			link := filepath.Join(dir, "link")
			os.Link(src, link)
			return []string{"copy", "--offset", "64K", "--length", "64K", "--dest-offset", "100K", src, link}, ""
		}, "is the source"},
		{"regions overlapping the source on the same file", func(t *testing.T, dir string) ([]string, string) {
			src, _ := files(t, dir, 0, 0)
			return []string{"copy", "--regions", "-", src, src}, "0 4K 512K\n512K 4K 8K\n"
		}, "is the source"},
		{"regions writing overlapping ranges", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--regions", "-", src, ds[0]}, "0 4K 0\n8K 4K 64K\n16K 8K 60K\n"
		}, "regions lines 2 and 3 write overlapping"},
		{"negative length", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--length", "-4K", src, ds[0]}, ""
		}, "bad size"},
		{"malformed offset", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--offset", "1.5K", src, ds[0]}, ""
		}, "bad size"},
		{"unknown suffix", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--dest-offset", "4KB", src, ds[0]}, ""
		}, "bad size"},
		{"length beyond the source", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 4<<20)
			return []string{"copy", "--offset", "512K", "--length", "1M", src, ds[0]}, ""
		}, "beyond the end of"},
		{"misaligned offset under --direct", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--direct", "--offset", "100", "--length", "4K", src, ds[0]}, ""
		}, "not a multiple of"},
		{"misaligned destination offset under --direct", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 2<<20)
			return []string{"copy", "--direct", "--dest-offset", "4100", src, ds[0]}, ""
		}, "not a multiple of"},
		{"misaligned offset of a file to create under --direct", func(t *testing.T, dir string) ([]string, string) {
			src, _ := files(t, dir, 0, 0)
			return []string{"copy", "--direct", "--create", "--dest-offset", "10", src, filepath.Join(dir, "new")}, ""
		}, "not a multiple of"},
		{"bad regions line", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 2, 1<<20)
			return []string{"copy", "--regions", "-", src, ds[0], ds[1]}, "0 4K 0\n# fine\n4K 4K 4K\n8K 4Q 8K\n"
		}, "line 4"},
		{"regions line beyond the source", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 4<<20)
			return []string{"copy", "--regions", "-", src, ds[0]}, "0 4K 0\n1020K 8K 8K\n"
		}, "regions line 2"},
		{"regions file missing", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--regions", filepath.Join(dir, "nope"), src, ds[0]}, ""
		}, "--regions"},
		{"regions with --offset", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--regions", "-", "--offset", "0", src, ds[0]}, "0 1 0\n"
		}, "cannot be combined with --regions"},
		{"no destination", func(t *testing.T, dir string) ([]string, string) {
			src, _ := files(t, dir, 0, 0)
			return []string{"copy", src}, ""
		}, "at least one DEST"},
		{"throttle out of range", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--throttle", "0", src, ds[0]}, ""
		}, "--throttle"},
		{"bad sub-job size", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--sub-job-size", "1000", src, ds[0]}, ""
		}, "--sub-job-size"},
		{"write-seq with ignore-errors", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--write-seq", "--ignore-errors", src, ds[0]}, ""
		}, "cannot be combined"},
		{"bad rate file", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			rf := writeFile(t, dir, "rate", []byte("fast\n"))
			return []string{"copy", "--rate-file", rf, src, ds[0]}, ""
		}, "--rate-file"},
		{"unknown URL scheme", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", src, ds[0], "http://example.com/x"}, ""
		}, "unknown URL scheme"},
		{"unknown flag", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--frobnicate", src, ds[0]}, ""
		}, "unknown flag"},
	})
}

func TestCopyJSONOnBadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src, ds := files(t, dir, 1, 1<<19)
	r := runCLI(t, "", "copy", "--json", src, ds[0])
	var rep jsonReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("copy --json = %v: %v", r, err)
	}
	if r.code != 1 || rep.ExitCode != 1 || rep.Error == nil || !strings.Contains(*rep.Error, "--create") || rep.Bytes != 0 {
		t.Errorf("report = %+v; want exit 1 with the error", rep)
	}
}

func TestCopyInterrupt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const size = 64 << 20
	data := randomBytes(5, size)
	src := writeFile(t, dir, "src", data)
	dst := filepath.Join(dir, "dst")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Cancel once the copy is under way; --rate 4M makes it last
		// about 15 s, so the cancel lands in the middle.
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			if st, err := os.Stat(dst); err == nil && st.Size() == size && allocated(t, dst) > 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
	}()
	r := runCLIContext(t, ctx, "", "copy", "--create", "--no-sparse", "--rate", "4M", "--json", src, dst)
	if r.code != exitInterrupted {
		t.Fatalf("interrupted copy = %v; want exit 130", r)
	}
	var rep jsonReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Interrupted || rep.Completed == nil || *rep.Completed >= size || len(rep.Remaining) != 1 {
		t.Fatalf("report = %+v; want interrupted with a completed prefix and one remaining region", rep)
	}
	c := *rep.Completed
	if !bytes.Equal(readFile(t, dst)[:c], data[:c]) {
		t.Errorf("the reported prefix of %d bytes is not the source's", c)
	}
	if rem := rep.Remaining[0]; rem != [3]int64{c, size - c, c} {
		t.Errorf("remaining = %v; want [%d %d %d]", rem, c, size-c, c)
	}
	if !strings.Contains(r.stderr, fmt.Sprintf("--offset %d --dest-offset %d --length %d", c, c, size-c)) {
		t.Errorf("stderr %q does not tell how to resume", r.stderr)
	}
	// Resuming finishes the copy.
	r = runCLI(t, "", "copy", "--offset", fmt.Sprint(c), "--dest-offset", fmt.Sprint(c), src, dst)
	if r.code != 0 || !bytes.Equal(readFile(t, dst), data) {
		t.Errorf("resumed copy = %v; want exit 0 and a full copy", r)
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory; it skips the
// test when that is not possible.
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs: needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// TestCopyWriteError runs out of space on a tmpfs (see checkDiskFull).
func TestCopyWriteError(t *testing.T) {
	t.Parallel()
	checkDiskFull(t, mountTmpfs(t, 1<<20), 4<<20)
}

func TestCopyBlockDevices(t *testing.T) {
	t.Parallel()
	dev := looptest.New(t, 8<<20)
	small := looptest.New(t, 1<<20)
	dir := t.TempDir()
	data := randomBytes(9, 3<<20+512)
	src := writeFile(t, dir, "src", data)
	file := filepath.Join(dir, "file")

	r := runCLI(t, "", "copy", "--create", "--direct", "--verify", src, dev, file)
	if r.code != 0 {
		t.Fatalf("copy to a loop device = %v", r)
	}
	if got := readFile(t, dev)[:len(data)]; !bytes.Equal(got, data) {
		t.Errorf("loop device differs from the source")
	}

	snap := takeSnapshot(t, small)
	r = runCLI(t, "", "copy", src, small)
	if r.code != exitUsage || !strings.Contains(r.stderr, "but the region ends at") {
		t.Errorf("copy onto a smaller block device = %v; want exit 1", r)
	}
	snap.unchanged(t)

	// A device opened exclusively elsewhere (as a mounted one is) is
	// refused without --force.
	fd, err := unix.Open(small, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, "", "copy", "--length", "64K", src, small)
	if r.code != exitUsage || !strings.Contains(r.stderr, "is in use") || !strings.Contains(r.stderr, "--force") {
		t.Errorf("copy onto a busy device = %v; want exit 1 naming --force", r)
	}
	snap.unchanged(t)
	r = runCLI(t, "", "copy", "--force", "--length", "64K", src, small)
	if r.code != 0 || !strings.Contains(r.stderr, "writing to it anyway") {
		t.Errorf("copy --force onto a busy device = %v; want exit 0 with a warning", r)
	}
	unix.Close(fd)
	if got := readFile(t, small)[:64<<10]; !bytes.Equal(got, data[:64<<10]) {
		t.Errorf("forced copy did not arrive")
	}

	// Misaligned for a 4096-byte-sector device under --direct.
	dev4k := looptest.New(t, 1<<20, looptest.SectorSize(4096))
	snap = takeSnapshot(t, dev4k)
	r = runCLI(t, "", "copy", "--direct", "--length", "4K", "--dest-offset", "512", src, dev4k)
	if r.code != exitUsage || !strings.Contains(r.stderr, "not a multiple of 4096") {
		t.Errorf("misaligned --direct copy = %v; want exit 1", r)
	}
	snap.unchanged(t)
}

func TestCopyMountedDevice(t *testing.T) {
	t.Parallel()
	dev := looptest.New(t, 32<<20)
	if out, err := execCommand("mkfs.ext4", "-q", dev); err != nil {
		t.Skipf("mkfs.ext4: %v %s", err, out)
	}
	mnt := t.TempDir()
	// Read-only: a fresh ext4 mounted read-write writes its device by
	// itself (ext4lazyinit zeroes the inode tables in the background),
	// which changed the snapshot under a CPU hog. Mounted read-only, it
	// holds the device just the same.
	if err := unix.Mount(dev, mnt, "ext4", unix.MS_RDONLY, ""); err != nil {
		t.Skipf("mount: %v", err)
	}
	defer unix.Unmount(mnt, 0)
	dir := t.TempDir()
	src := writeFile(t, dir, "src", randomBytes(1, 64<<10))
	snap := takeSnapshot(t, dev)
	r := runCLI(t, "", "copy", src, dev)
	if r.code != exitUsage || !strings.Contains(r.stderr, "is in use (mounted") {
		t.Errorf("copy onto a mounted device = %v; want exit 1", r)
	}
	snap.unchanged(t)
}

// failingNBD serves data over NBD with nbdkit's eval plugin, failing
// every read that touches [errOff, errOff+errLen) with EIO, and returns
// the export's URL.
func failingNBD(t *testing.T, data []byte, errOff, errLen int64) string {
	t.Helper()
	uri, _ := evalNBD(t, data, [][2]int64{{errOff, errLen}}, nil)
	return uri
}

func TestCopyReadError(t *testing.T) {
	t.Parallel()
	data := randomBytes(14, 4<<20)
	src := failingNBD(t, data, 1<<20, 8192)
	dir := t.TempDir()
	dst := filepath.Join(dir, "dst")
	r := runCLI(t, "", "copy", "--create", "--json", src, dst)
	if r.code != exitReadError || !strings.Contains(r.stderr, "read error on "+src) {
		t.Fatalf("copy from a failing source = %v; want exit 2", r)
	}
	var rep jsonReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.ReadError || rep.Completed == nil || *rep.Completed > 1<<20 {
		t.Errorf("report = %+v; want read_error and at most 1MiB complete", rep)
	} else if c := *rep.Completed; !bytes.Equal(readFile(t, dst)[:c], data[:c]) {
		t.Errorf("the reported prefix of %d bytes is not the source's", c)
	}

	// --ignore-errors copies the rest and reports the zero-filled range at
	// its destination offset.
	dst2 := filepath.Join(dir, "dst2")
	r = runCLI(t, "", "copy", "--create", "--ignore-errors", "--dest-offset", "4K", "--json", src, dst2)
	if r.code != exitReadError {
		t.Fatalf("copy --ignore-errors = %v; want exit 2", r)
	}
	rep = jsonReport{}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	want := [][2]int64{{1<<20 + 4096, 8192}}
	if fr := rep.Destinations[0].FailedRanges; fmt.Sprint(fr) != fmt.Sprint(want) {
		t.Errorf("failed_ranges = %v; want %v", fr, want)
	}
	got := readFile(t, dst2)[4096:]
	exp := append([]byte(nil), data...)
	clear(exp[1<<20 : 1<<20+8192])
	if !bytes.Equal(got, exp) {
		t.Errorf("--ignore-errors copy is not the source with the unreadable range zeroed")
	}
}

func TestCopyVerifyMismatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src, want := makeSparse(t, dir)
	// --dest-is-zero on a destination that is not zero leaves its old
	// bytes in the holes: --verify must catch that.
	dst := writeFile(t, dir, "dst", bytes.Repeat([]byte{0x55}, len(want)))
	r := runCLI(t, "", "copy", "--dest-is-zero", "--verify", "--json", src, dst)
	if r.code != exitVerify || !strings.Contains(r.stderr, "first differing byte at offset 0") {
		t.Fatalf("copy --verify onto a wrong destination = %v; want exit 4", r)
	}
	var rep jsonReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if d := rep.Destinations[0]; d.Verified == nil || *d.Verified || d.FirstDifference == nil || *d.FirstDifference != 0 {
		t.Errorf("report destination = %+v; want verified false, first difference 0", d)
	}
}

func TestCopyProgressLines(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := writeFile(t, dir, "src", randomBytes(15, 6<<20))
	r := runCLI(t, "", "copy", "--create", "--no-sparse", "--rate", "2M", "--progress-interval", "50ms", src, filepath.Join(dir, "dst"))
	if r.code != 0 || !strings.Contains(r.stderr, "kcopyd: copy: ") || !strings.Contains(r.stderr, " of 6.0 MiB (") {
		t.Errorf("copy with plain progress = %v; want progress lines on stderr", r)
	}
	r = runCLI(t, "", "copy", "-q", src, filepath.Join(dir, "dst"))
	if r.code != 0 || r.stderr != "" {
		t.Errorf("copy -q = %v; want nothing on stderr", r)
	}
}
