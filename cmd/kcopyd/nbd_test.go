package main

// End-to-end tests of the command against real NBD servers (nbdkit,
// qemu-nbd) on Unix sockets. They skip when the servers are not
// installed.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device/nbd"
	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
)

// hangGuard bounds how long a test waits for a command that must end by
// itself. It is a liveness guard against hangs, not a timing assertion.
const hangGuard = 2 * time.Minute

// openExport opens an NBD location for a test's own checks and closes it
// when the test ends.
func openExport(t testing.TB, uri string, readOnly bool) *nbd.Device {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := nbd.Open(ctx, uri, &nbd.Config{ReadOnly: readOnly})
	if err != nil {
		t.Fatalf("nbd.Open(%q) = %v", uri, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// readExport returns the whole content of an NBD export.
func readExport(t testing.TB, uri string) []byte {
	t.Helper()
	d := openExport(t, uri, true)
	b := make([]byte, d.Size())
	if n, err := d.ReadAt(b, 0); n != len(b) {
		t.Fatalf("reading %s: %d bytes, %v", uri, n, err)
	}
	d.Close()
	return b
}

// writeExport writes data at off into an NBD export.
func writeExport(t testing.TB, uri string, data []byte, off int64) {
	t.Helper()
	d := openExport(t, uri, false)
	if _, err := d.WriteAt(data, off); err != nil {
		t.Fatalf("writing %s: %v", uri, err)
	}
	if err := d.Flush(); err != nil {
		t.Fatalf("flushing %s: %v", uri, err)
	}
	d.Close()
}

// sameBytes reports the first difference between got and want as a test
// error naming what.
func sameBytes(t testing.TB, what string, got, want []byte) bool {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s is %d bytes; want %d", what, len(got), len(want))
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("%s: byte %d = %#x; want %#x", what, i, got[i], want[i])
			return false
		}
	}
	return true
}

// parseReport decodes the --json report on stdout.
func parseReport(t testing.TB, r result) jsonReport {
	t.Helper()
	var rep jsonReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("--json output %q: %v\n%v", r.stdout, err, r)
	}
	return rep
}

// sparseData returns size bytes of random data with the ranges holes
// cleared.
func sparseData(seed uint64, size int64, holes ...[2]int64) []byte {
	b := randomBytes(seed, size)
	for _, h := range holes {
		clear(b[h[0] : h[0]+h[1]])
	}
	return b
}

// dataRanges returns the [offset, length] ranges of path that hold data
// according to SEEK_DATA/SEEK_HOLE.
func dataRanges(t testing.TB, path string) [][2]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]int64
	for off := int64(0); off < st.Size(); {
		d, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		if err != nil {
			t.Fatalf("SEEK_DATA on %s: %v", path, err)
		}
		h, err := unix.Seek(int(f.Fd()), d, unix.SEEK_HOLE)
		if err != nil {
			t.Fatalf("SEEK_HOLE on %s: %v", path, err)
		}
		out = append(out, [2]int64{d, h - d})
		off = h
	}
	return out
}

// checkHoles checks that every range of holes is a hole in path (no data
// range of the file overlaps it).
func checkHoles(t testing.TB, path string, holes ...[2]int64) {
	t.Helper()
	data := dataRanges(t, path)
	for _, h := range holes {
		for _, d := range data {
			if d[0] < h[0]+h[1] && h[0] < d[0]+d[1] {
				t.Errorf("%s: the source hole [%d, +%d) holds data in the copy (data ranges %v)", path, h[0], h[1], data)
				break
			}
		}
	}
}

// evalNBD serves a copy of data with nbdkit's eval plugin: reads that
// touch any of readErrs and writes that touch any of writeErrs fail with
// EIO; everything else reads and writes a backing file, whose path is
// returned with the export's location.
func evalNBD(t testing.TB, data []byte, readErrs, writeErrs [][2]int64) (uri, file string) {
	t.Helper()
	return evalNBDWhile(t, data, readErrs, writeErrs, "")
}

// evalNBDWhile is evalNBD whose errors happen only while the file
// trigger exists (always when trigger is "").
func evalNBDWhile(t testing.TB, data []byte, readErrs, writeErrs [][2]int64, trigger string) (uri, file string) {
	t.Helper()
	nbdtest.NeedBin(t, "nbdkit")
	file = writeFile(t, t.TempDir(), "backing", data)
	cond := func(rs [][2]int64) string {
		c := "false"
		for _, r := range rs {
			c += fmt.Sprintf(" || { [ $4 -lt %d ] && [ $(($4+$3)) -gt %d ]; }", r[0]+r[1], r[0])
		}
		if trigger != "" {
			c = "[ -e " + trigger + " ] && { " + c + "; }"
		}
		return c
	}
	pread := fmt.Sprintf(`if %s; then echo "EIO injected read error" >&2; exit 1; fi; exec dd if=%s skip=$4 count=$3 iflag=skip_bytes,count_bytes status=none`, cond(readErrs), file)
	pwrite := fmt.Sprintf(`if %s; then cat >/dev/null; echo "EIO injected write error" >&2; exit 1; fi; exec dd of=%s seek=$4 bs=64K iflag=fullblock oflag=seek_bytes conv=notrunc status=none`, cond(writeErrs), file)
	s := nbdtest.Nbdkit(t, "eval", fmt.Sprintf("get_size=echo %d", len(data)), "pread="+pread, "pwrite="+pwrite, "can_multi_conn=exit 0")
	return s.URI, file
}

func TestNBDPlugins(t *testing.T) {
	t.Parallel()
	const size = 6<<20 + 12288 // not a multiple of the chunk size
	data := randomBytes(40, size)
	dir := t.TempDir()
	src := writeFile(t, dir, "src", data)
	for _, plugin := range []string{"memory", "file"} {
		t.Run(plugin, func(t *testing.T) {
			var s *nbdtest.Server
			backing := filepath.Join(dir, plugin+".img")
			if plugin == "memory" {
				s = nbdtest.Nbdkit(t, "memory", strconv.Itoa(size))
			} else {
				writeFile(t, dir, plugin+".img", bytes.Repeat([]byte{0x5a}, size))
				s = nbdtest.Nbdkit(t, "file", backing)
			}
			// file -> NBD
			r := runCLI(t, "", "copy", "--json", src, s.URI)
			if r.code != 0 {
				t.Fatalf("copy to nbdkit %s = %v", plugin, r)
			}
			if rep := parseReport(t, r); rep.Bytes != size || len(rep.Warnings) != 0 {
				t.Errorf("report %+v; want %d bytes and no warnings (nbdkit %s offers multi-conn)", rep, size, plugin)
			}
			sameBytes(t, "the export after the copy", readExport(t, s.URI), data)
			if plugin == "file" {
				sameBytes(t, "the file behind the export", readFile(t, backing), data)
			}
			// NBD -> file (round trip)
			back := filepath.Join(dir, plugin+".back")
			if r := runCLI(t, "", "copy", "--create", "--connections", "2", s.URI, back); r.code != 0 {
				t.Fatalf("copy from nbdkit %s = %v", plugin, r)
			}
			sameBytes(t, "file -> NBD -> file", readFile(t, back), data)
			if r := runCLI(t, "", "verify", src, s.URI, back); r.code != 0 || !strings.Contains(r.stdout, s.URI+": identical") {
				t.Errorf("verify = %v; want both identical", r)
			}
			// zero the middle of the export
			if r := runCLI(t, "", "zero", "--offset", "1M", "--length", "2M", s.URI); r.code != 0 {
				t.Fatalf("zero = %v", r)
			}
			want := append([]byte(nil), data...)
			clear(want[1<<20 : 3<<20])
			sameBytes(t, "the export after zero", readExport(t, s.URI), want)
		})
	}
}

func TestNBDQemuDestination(t *testing.T) {
	t.Parallel()
	nbdtest.NeedBin(t, "qemu-nbd")
	dir := t.TempDir()
	const size = 8 << 20
	data := sparseData(41, 5<<20+4096, [2]int64{1 << 20, 1 << 20})
	src := writeFile(t, dir, "src", data)
	img := writeFile(t, dir, "disk.raw", bytes.Repeat([]byte{0xa5}, size))
	s := nbdtest.QemuNBD(t, img, "disk")
	uri := s.ExportURI("disk")
	r := runCLI(t, "", "copy", "--dest-offset", "1M", src, uri)
	if r.code != 0 {
		t.Fatalf("copy to qemu-nbd = %v", r)
	}
	want := bytes.Repeat([]byte{0xa5}, size)
	copy(want[1<<20:], data)
	sameBytes(t, "qemu-nbd's image file", readFile(t, img), want)
	t.Logf("stderr: %s", r.stderr)
}

// TestNBDBetweenServers copies nbdkit -> qemu-nbd, then one source to two
// NBD exports and a file at once.
func TestNBDBetweenServers(t *testing.T) {
	t.Parallel()
	nbdtest.NeedBin(t, "qemu-nbd")
	dir := t.TempDir()
	const size = 4<<20 + 8192
	data := sparseData(42, size, [2]int64{512 << 10, 1 << 20})
	in := nbdtest.Nbdkit(t, "memory", strconv.Itoa(size))
	writeExport(t, in.URI, data, 0)
	img := writeFile(t, dir, "disk.raw", bytes.Repeat([]byte{0xff}, size))
	q := nbdtest.QemuNBD(t, img, "disk")
	qURI := q.ExportURI("disk")
	if r := runCLI(t, "", "copy", in.URI, qURI); r.code != 0 {
		t.Fatalf("copy nbdkit -> qemu-nbd = %v", r)
	}
	sameBytes(t, "qemu-nbd's image after nbdkit -> qemu-nbd", readFile(t, img), data)

	// One source, three destinations: [nbd, nbd, file].
	data2 := randomBytes(43, size)
	src := writeFile(t, dir, "src", data2)
	out := nbdtest.Nbdkit(t, "memory", strconv.Itoa(size))
	file := filepath.Join(dir, "copy")
	r := runCLI(t, "", "copy", "--create", "--json", src, out.URI, qURI, file)
	if r.code != 0 {
		t.Fatalf("copy to [nbd, nbd, file] = %v", r)
	}
	if rep := parseReport(t, r); len(rep.Destinations) != 3 || rep.Bytes != size {
		t.Errorf("report %+v; want 3 destinations, %d bytes", rep, size)
	}
	sameBytes(t, "nbdkit destination", readExport(t, out.URI), data2)
	sameBytes(t, "qemu-nbd destination", readFile(t, img), data2)
	sameBytes(t, "file destination", readFile(t, file), data2)
}

// TestNBDWriteErrors injects write errors with nbdkit's error filter into
// one of three destinations; the others must be intact.
func TestNBDWriteErrors(t *testing.T) {
	t.Parallel()
	const size = 4 << 20
	data := randomBytes(44, size)
	dir := t.TempDir()
	src := writeFile(t, dir, "src", data)
	for _, tt := range []struct {
		name   string
		rate   string
		ignore bool
	}{
		{"all", "100%", false},
		{"all-ignore", "100%", true},
		{"some-ignore", "30%", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bad := nbdtest.Nbdkit(t, "--filter=error", "memory", strconv.Itoa(size), "error-pwrite=EIO", "error-pwrite-rate="+tt.rate)
			good := nbdtest.Nbdkit(t, "memory", strconv.Itoa(size))
			file := filepath.Join(dir, tt.name)
			// 64 chunks: with a 30% error rate, some fail and some succeed
			// but for a chance below 1e-9.
			args := []string{"copy", "--create", "--json", "--sub-job-size", "64K"}
			if tt.ignore {
				args = append(args, "--ignore-errors")
			}
			r := runCLI(t, "", append(args, src, good.URI, bad.URI, file)...)
			if r.code != exitWriteError || !strings.Contains(r.stderr, "copy failed on "+bad.URI+"; completed on "+good.URI+", "+file) {
				t.Fatalf("copy with write errors on one destination = %v; want exit 3 naming it", r)
			}
			rep := parseReport(t, r)
			sameBytes(t, "healthy NBD destination", readExport(t, good.URI), data)
			sameBytes(t, "healthy file destination", readFile(t, file), data)
			for i, d := range rep.Destinations {
				if failed := i == 1; failed != (d.Error != nil) || failed != (len(d.FailedRanges) > 0) {
					t.Errorf("destination %d in the report: %+v; want an error and failed ranges only on %s", i, d, bad.URI)
				}
			}
			fr := rep.Destinations[1].FailedRanges
			switch {
			case tt.rate == "100%" && tt.ignore:
				// Every write failed, and the engine tried every one.
				if want := [][2]int64{{0, size}}; fmt.Sprint(fr) != fmt.Sprint(want) {
					t.Errorf("failed_ranges = %v; want %v", fr, want)
				}
			case tt.ignore:
				// Outside the reported ranges the destination holds the
				// source's data.
				got := readExport(t, bad.URI)
				var failed int64
				for _, rg := range fr {
					copy(got[rg[0]:rg[0]+rg[1]], data[rg[0]:])
					failed += rg[1]
				}
				sameBytes(t, "failing destination outside its failed_ranges", got, data)
				if failed == size {
					t.Errorf("failed_ranges %v cover everything with a 30%% error rate", fr)
				}
			}
		})
	}
}

// TestNBDReadErrors injects read errors into an NBD source, at random
// with nbdkit's error filter and at fixed ranges with the eval plugin.
func TestNBDReadErrors(t *testing.T) {
	t.Parallel()
	const size = 4 << 20
	data := randomBytes(45, size)
	dir := t.TempDir()

	t.Run("rate", func(t *testing.T) {
		s := nbdtest.Nbdkit(t, "--filter=error", "memory", strconv.Itoa(size), "error-pread=EIO", "error-pread-rate=30%")
		writeExport(t, s.URI, data, 0)
		// 64 KiB chunks: some of the 64 reads fail but for a chance
		// below 1e-9.
		dst := filepath.Join(dir, "rate")
		r := runCLI(t, "", "copy", "--create", "--json", "--sub-job-size", "64K", s.URI, dst)
		if r.code != exitReadError || !strings.Contains(r.stderr, "read error on "+s.URI) {
			t.Fatalf("copy from a failing source = %v; want exit 2", r)
		}
		rep := parseReport(t, r)
		if !rep.ReadError || rep.Completed == nil {
			t.Fatalf("report %+v; want read_error and completed", rep)
		}
		c := *rep.Completed
		sameBytes(t, "the completed prefix", readFile(t, dst)[:c], data[:c])

		dst2 := filepath.Join(dir, "rate-ignore")
		r = runCLI(t, "", "copy", "--create", "--json", "--ignore-errors", "--sub-job-size", "64K", s.URI, dst2)
		if r.code != exitReadError {
			t.Fatalf("copy --ignore-errors from a failing source = %v; want exit 2", r)
		}
		rep = parseReport(t, r)
		fr := rep.Destinations[0].FailedRanges
		want := append([]byte(nil), data...)
		for _, rg := range fr {
			clear(want[rg[0] : rg[0]+rg[1]])
		}
		if len(fr) == 0 {
			t.Errorf("no failed_ranges with a 30%% read error rate")
		}
		sameBytes(t, "--ignore-errors copy (the source, zero where failed_ranges says)", readFile(t, dst2), want)
	})

	t.Run("ranges", func(t *testing.T) {
		uri, _ := evalNBD(t, data, [][2]int64{{1<<20 + 4096, 8192}, {3 << 20, 4096}}, nil)
		good := nbdtest.Nbdkit(t, "memory", strconv.Itoa(size+1<<20))
		dst := filepath.Join(dir, "ranges")
		r := runCLI(t, "", "copy", "--create", "--ignore-errors", "--json", "--dest-offset", "1M", uri, dst, good.URI)
		if r.code != exitReadError {
			t.Fatalf("copy --ignore-errors = %v; want exit 2", r)
		}
		rep := parseReport(t, r)
		want := [][2]int64{{2<<20 + 4096, 8192}, {4 << 20, 4096}}
		for i, d := range rep.Destinations {
			if fmt.Sprint(d.FailedRanges) != fmt.Sprint(want) || d.Error != nil {
				t.Errorf("destination %d: failed_ranges %v, error %v; want %v and no error", i, d.FailedRanges, d.Error, want)
			}
		}
		exp := make([]byte, size+1<<20)
		copy(exp[1<<20:], data)
		for _, rg := range want {
			clear(exp[rg[0] : rg[0]+rg[1]])
		}
		sameBytes(t, "file destination", readFile(t, dst), exp)
		sameBytes(t, "NBD destination", readExport(t, good.URI), exp)
	})
}

// TestNBDWriteErrorRanges fails writes at fixed ranges of an NBD
// destination: exactly the chunks holding them are reported.
func TestNBDWriteErrorRanges(t *testing.T) {
	t.Parallel()
	const size = 4 << 20
	data := randomBytes(46, size)
	dir := t.TempDir()
	src := writeFile(t, dir, "src", data)
	old := bytes.Repeat([]byte{0x33}, size)
	uri, backing := evalNBD(t, old, nil, [][2]int64{{1<<20 + 4096, 4096}, {3<<20 + 300<<10, 1}})
	file := filepath.Join(dir, "copy")
	r := runCLI(t, "", "copy", "--create", "--ignore-errors", "--json", "--sub-job-size", "256K", src, uri, file)
	if r.code != exitWriteError {
		t.Fatalf("copy = %v; want exit 3", r)
	}
	rep := parseReport(t, r)
	// The engine writes 256KiB chunks: the chunks holding the failing
	// bytes are what the destination lacks.
	want := [][2]int64{{1 << 20, 256 << 10}, {3<<20 + 256<<10, 256 << 10}}
	if got := rep.Destinations[0].FailedRanges; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("failed_ranges = %v; want %v", got, want)
	}
	exp := append([]byte(nil), data...)
	for _, rg := range want {
		copy(exp[rg[0]:rg[0]+rg[1]], old)
	}
	sameBytes(t, "the failing destination's file", readFile(t, backing), exp)
	sameBytes(t, "the healthy file destination", readFile(t, file), data)

	// Without --ignore-errors the destination is dropped at its first
	// failed chunk; the other one still completes.
	if err := os.WriteFile(backing, old, 0o644); err != nil {
		t.Fatal(err)
	}
	file2 := filepath.Join(dir, "copy2")
	r = runCLI(t, "", "copy", "--create", "--json", "--sub-job-size", "256K", src, uri, file2)
	if r.code != exitWriteError || !strings.Contains(r.stderr, "copy failed on "+uri+"; completed on "+file2) {
		t.Fatalf("copy without --ignore-errors = %v; want exit 3 naming the failing destination", r)
	}
	rep = parseReport(t, r)
	if d := rep.Destinations[0]; d.Error == nil || len(d.FailedRanges) == 0 || d.FailedRanges[0] != [2]int64{1 << 20, 256 << 10} {
		t.Errorf("failing destination in the report: %+v; want an error and the failed chunk [%d, +%d)", d, 1<<20, 256<<10)
	}
	got := readFile(t, backing)
	sameBytes(t, "the failing destination before its first failed chunk", got[:1<<20], data[:1<<20])
	sameBytes(t, "the healthy file destination", readFile(t, file2), data)
}

func TestNBDDelay(t *testing.T) {
	t.Parallel()
	const size = 4 << 20
	data := randomBytes(47, size)
	src := nbdtest.Nbdkit(t, "--filter=delay", "memory", strconv.Itoa(size), "delay-read=2ms")
	dst := nbdtest.Nbdkit(t, "--filter=delay", "memory", strconv.Itoa(size), "delay-write=2ms", "delay-zero=2ms")
	writeExport(t, src.URI, data, 0)
	if r := runCLI(t, "", "copy", "--connections", "2", "--jobs", "8", "--sub-job-size", "64K", src.URI, dst.URI); r.code != 0 {
		t.Fatalf("copy between delayed servers = %v", r)
	}
	sameBytes(t, "destination", readExport(t, dst.URI), data)
}

// TestNBDNoZeroNoExtents checks the fallbacks for servers without
// write-zeroes (zeroes are written from memory) and without block status
// (everything is data).
func TestNBDNoZeroNoExtents(t *testing.T) {
	t.Parallel()
	const size = 4 << 20
	holes := [][2]int64{{0, 1 << 20}, {2 << 20, 1 << 20}}
	data := sparseData(48, size, holes...)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeFile(t, dir, "src", data)
	for _, h := range holes { // real holes in the source file
		f, err := os.OpenFile(src, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, h[0], h[1]); err != nil {
			t.Skipf("cannot punch holes: %v", err)
		}
		f.Close()
	}

	// nozero destination holding old data: holes and zero chunks must be
	// written as zeroes.
	nz := nbdtest.Nbdkit(t, "--filter=nozero", "memory", strconv.Itoa(size))
	writeExport(t, nz.URI, bytes.Repeat([]byte{0xee}, size), 0)
	if r := runCLI(t, "", "copy", src, nz.URI); r.code != 0 {
		t.Fatalf("copy to a nozero export = %v", r)
	}
	sameBytes(t, "nozero destination", readExport(t, nz.URI), data)
	if r := runCLI(t, "", "zero", "--offset", "3M", nz.URI); r.code != 0 {
		t.Fatalf("zero on a nozero export = %v", r)
	}
	clear(data[3<<20:]) // from here on data holds [1M, 2M) only
	sameBytes(t, "nozero export after zero", readExport(t, nz.URI), data)

	// noextents source: everything is data; zero chunks still stay
	// holes in a new file.
	ne := nbdtest.Nbdkit(t, "--filter=noextents", "memory", strconv.Itoa(size))
	writeExport(t, ne.URI, data[1<<20:2<<20], 1<<20)
	old := writeFile(t, dir, "old", bytes.Repeat([]byte{0x11}, size))
	created := filepath.Join(dir, "created")
	if r := runCLI(t, "", "copy", "--create", ne.URI, old, created); r.code != 0 {
		t.Fatalf("copy from a noextents export = %v", r)
	}
	sameBytes(t, "copy of a noextents export over old data", readFile(t, old), data)
	sameBytes(t, "copy of a noextents export to a new file", readFile(t, created), data)
	checkHoles(t, created, [2]int64{0, 1 << 20}, [2]int64{2 << 20, 2 << 20})
}

// TestNBDSparseSource copies exports with holes into new files: the holes
// stay holes.
func TestNBDSparseSource(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const size = 16 << 20
	t.Run("memory", func(t *testing.T) {
		s := nbdtest.Nbdkit(t, "memory", strconv.Itoa(size))
		data := make([]byte, size)
		for _, off := range []int64{1 << 20, 9 << 20} {
			part := randomBytes(uint64(off), 1<<20)
			copy(data[off:], part)
			writeExport(t, s.URI, part, off)
		}
		dst := filepath.Join(dir, "memory")
		if r := runCLI(t, "", "copy", "--create", s.URI, dst); r.code != 0 {
			t.Fatalf("copy = %v", r)
		}
		sameBytes(t, "copy", readFile(t, dst), data)
		checkHoles(t, dst, [2]int64{0, 1 << 20}, [2]int64{2 << 20, 7 << 20}, [2]int64{10 << 20, 6 << 20})
		var st unix.Stat_t
		if err := unix.Stat(dst, &st); err != nil {
			t.Fatal(err)
		}
		if st.Blocks*512 > 4<<20 {
			t.Errorf("the copy allocates %d bytes; want about the 2 MiB of data", st.Blocks*512)
		}
	})
	t.Run("data", func(t *testing.T) {
		// nbdkit's data plugin: bytes at 1 MiB and 5 MiB, the rest sparse.
		s := nbdtest.Nbdkit(t, "data", "@1048576 1 2 3 4 @5242880 0xff", "size="+strconv.Itoa(8<<20))
		dst := filepath.Join(dir, "data")
		if r := runCLI(t, "", "copy", "--create", s.URI, dst); r.code != 0 {
			t.Fatalf("copy = %v", r)
		}
		want := make([]byte, 8<<20)
		copy(want[1<<20:], []byte{1, 2, 3, 4})
		want[5<<20] = 0xff
		sameBytes(t, "copy of the data plugin", readFile(t, dst), want)
		checkHoles(t, dst, [2]int64{0, 1 << 20}, [2]int64{2 << 20, 3 << 20}, [2]int64{6 << 20, 2 << 20})
	})
}

func TestNBDTLS(t *testing.T) {
	t.Parallel()
	good := nbdtest.NewPKI(t, true)
	other := nbdtest.NewPKI(t, false)
	const size = 2 << 20
	s := nbdtest.Nbdkit(t, "--tls=require", "--tls-certificates="+good.Dir, "memory", strconv.Itoa(size))
	data := randomBytes(49, size)
	dir := t.TempDir()
	src := writeFile(t, dir, "src", data)
	uri := s.TLSURI()

	if r := runCLI(t, "", "copy", "--tls-ca", good.CA(), src, uri); r.code != 0 {
		t.Fatalf("copy to nbds+unix with --tls-ca = %v", r)
	}
	back := filepath.Join(dir, "back")
	if r := runCLI(t, "", "copy", "--create", uri+"&tls-certificates="+good.Dir, back); r.code != 0 {
		t.Fatalf("copy from nbds+unix with tls-certificates= = %v", r)
	}
	sameBytes(t, "copy back over TLS", readFile(t, back), data)
	if r := runCLI(t, "", "verify", "--tls-insecure", src, uri); r.code != 0 {
		t.Errorf("verify --tls-insecure = %v", r)
	}

	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{"WrongCA", []string{"copy", "--tls-ca", other.CA(), src, uri}, []string{"certificate", "--tls-ca"}},
		{"NoCA", []string{"copy", src, uri}, []string{"certificate", "--tls-ca"}},
		{"Plain", []string{"copy", src, s.URI}, []string{"requires TLS", "nbds"}},
		{"PlainWithCA", []string{"copy", "--tls-ca", good.CA(), src, s.URI}, []string{"--tls-ca applies to nbds:// and nbds+unix:// locations only"}},
		{"CertWithoutKey", []string{"copy", "--tls-cert", good.ClientCert(), src, uri}, []string{"--tls-cert and --tls-key"}},
		{"MissingCA", []string{"copy", "--tls-ca", filepath.Join(dir, "nope.pem"), src, uri}, []string{"nope.pem"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			snap := takeSnapshot(t, src)
			r := runCLI(t, "", tt.args...)
			if r.code != exitUsage {
				t.Errorf("kcopyd %v = %v; want exit 1", tt.args, r)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("kcopyd %v: stderr %q does not say %q", tt.args, r.stderr, w)
				}
			}
			if strings.Contains(r.stderr, "no server listens") {
				t.Errorf("kcopyd %v: stderr %q blames the server", tt.args, r.stderr)
			}
			snap.unchanged(t)
		})
	}
	// Nothing was written by the failed runs.
	sameBytes(t, "the export after the failed runs", readExportTLS(t, uri, good), data)

	t.Run("ClientCertificate", func(t *testing.T) {
		v := nbdtest.Nbdkit(t, "--tls=require", "--tls-verify-peer", "--tls-certificates="+good.Dir, "memory", strconv.Itoa(size))
		r := runCLI(t, "", "copy", "--tls-ca", good.CA(), src, v.TLSURI())
		if r.code != exitUsage {
			t.Errorf("copy without a client certificate to nbdkit --tls-verify-peer = %v; want exit 1", r)
		}
		r = runCLI(t, "", "copy", "--tls-ca", good.CA(), "--tls-cert", good.ClientCert(), "--tls-key", good.ClientKey(), src, v.TLSURI())
		if r.code != 0 {
			t.Fatalf("copy with a client certificate = %v", r)
		}
		sameBytes(t, "export written with a client certificate", readExportTLS(t, v.TLSURI(), good), data)
	})
}

// readExportTLS reads a TLS export whose CA is in p.
func readExportTLS(t testing.TB, uri string, p *nbdtest.PKI) []byte {
	t.Helper()
	return readExport(t, uri+"&tls-certificates="+p.Dir)
}

// TestNBDReadOnlyDestination: a read-only export among the destinations
// stops the command before anything is written anywhere.
func TestNBDReadOnlyDestination(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	ro := nbdtest.Nbdkit(t, "-r", "memory", strconv.Itoa(size))
	rw := nbdtest.Nbdkit(t, "memory", strconv.Itoa(size))
	dir := t.TempDir()
	src := writeFile(t, dir, "src", randomBytes(50, size))
	file := writeFile(t, dir, "file", bytes.Repeat([]byte{7}, size))
	missing := filepath.Join(dir, "missing")
	snap := takeSnapshot(t, file, missing)
	want := "destination " + ro.URI + " is a read-only NBD export"
	for _, args := range [][]string{
		{"copy", src, ro.URI},
		{"copy", "--create", src, file, rw.URI, ro.URI, missing},
		{"zero", ro.URI},
		{"zero", file, ro.URI, rw.URI},
	} {
		r := runCLI(t, "", args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, want) {
			t.Errorf("kcopyd %v = %v; want exit 1 and %q", args, r, want)
		}
	}
	snap.unchanged(t)
	sameBytes(t, "the writable export", readExport(t, rw.URI), make([]byte, size))
	// As a source a read-only export is fine.
	if r := runCLI(t, "", "copy", ro.URI, rw.URI); r.code != 0 {
		t.Errorf("copy from a read-only export = %v", r)
	}
}

func TestNBDUnknownExport(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := writeFile(t, dir, "src", randomBytes(51, 1<<20))
	k := nbdtest.Nbdkit(t, "--filter=exportname", "memory", "1M", "exportname=disk", "exportname-strict=true")
	if r := runCLI(t, "", "copy", src, k.URI); r.code != exitUsage || !strings.Contains(r.stderr, "the server has no default export") {
		t.Errorf("copy to the default export of a server without one = %v; want exit 1", r)
	}
	uris := []string{k.ExportURI("nope")}
	if _, err := exec.LookPath("qemu-nbd"); err == nil {
		q := nbdtest.QemuNBD(t, writeFile(t, dir, "img", make([]byte, 1<<20)), "disk")
		uris = append(uris, q.ExportURI("other"))
	}
	for _, uri := range uris {
		for _, args := range [][]string{{"copy", src, uri}, {"copy", "--create", uri, filepath.Join(dir, "x")}, {"verify", src, uri}} {
			r := runCLI(t, "", args...)
			want := `has no export named "`
			if r.code != exitUsage || !strings.Contains(r.stderr, want) {
				t.Errorf("kcopyd %v = %v; want exit 1 and %q", args, r, want)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); !os.IsNotExist(err) {
		t.Errorf("the destination of a failed copy was created: %v", err)
	}
}

func TestNBDConnections(t *testing.T) {
	t.Parallel()
	const size = 2 << 20
	dir := t.TempDir()
	data := randomBytes(52, size)
	src := writeFile(t, dir, "src", data)
	single := nbdtest.Nbdkit(t, "--filter=multi-conn", "memory", strconv.Itoa(size), "multi-conn-mode=disable")
	r := runCLI(t, "", "copy", "--json", "--connections", "8", src, single.URI)
	warn := single.URI + ": the server does not advertise NBD_FLAG_CAN_MULTI_CONN: using 1 connection instead of 8"
	if r.code != 0 || !strings.Contains(r.stderr, "kcopyd: warning: "+warn) {
		t.Errorf("copy --connections 8 to a server without multi-conn = %v; want a warning", r)
	}
	if rep := parseReport(t, r); len(rep.Warnings) != 1 || rep.Warnings[0] != warn {
		t.Errorf("report warnings %q; want [%q]", rep.Warnings, warn)
	}
	if r := runCLI(t, "", "copy", "-q", "--connections", "8", src, single.URI); r.code != 0 || r.stderr != "" {
		t.Errorf("copy -q = %v; want nothing on stderr", r)
	}
	if r := runCLI(t, "", "copy", "--connections", "1", src, single.URI); r.code != 0 || strings.Contains(r.stderr, "warning") {
		t.Errorf("copy --connections 1 = %v; want no warning", r)
	}
	sameBytes(t, "export", readExport(t, single.URI), data)
	for _, n := range []string{"0", "17"} {
		if r := runCLI(t, "", "copy", "--connections", n, src, single.URI); r.code != exitUsage || !strings.Contains(r.stderr, "--connections must be between 1 and 16") {
			t.Errorf("copy --connections %s = %v; want exit 1", n, r)
		}
	}
}

// TestNBDTimeouts checks that a server that does not answer ends the
// command instead of hanging it.
func TestNBDTimeouts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dst := filepath.Join(dir, "dst")
	t.Run("no server", func(t *testing.T) {
		sock := filepath.Join(nbdtest.ShortDir(t), "s")
		r := runCLI(t, "", "copy", "--create", "nbd+unix:///?socket="+sock, dst)
		if r.code != exitUsage || !strings.Contains(r.stderr, "no server listens there") {
			t.Errorf("copy from a missing socket = %v; want exit 1", r)
		}
	})
	t.Run("connect", func(t *testing.T) {
		uri, _ := silentServer(t)
		r := runWithGuard(t, "copy", "--create", "--nbd-connect-timeout", "300ms", uri, dst)
		if r.code != exitUsage || !strings.Contains(r.stderr, "no answer within --nbd-connect-timeout") {
			t.Errorf("copy from a silent server = %v; want exit 1 naming --nbd-connect-timeout", r)
		}
	})
	t.Run("interrupted while connecting", func(t *testing.T) {
		uri, accepted := silentServer(t)
		src := writeFile(t, dir, "src", randomBytes(56, 1<<20))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan result, 1)
		go func() { done <- runCLIContext(t, ctx, "", "copy", "--json", src, uri) }()
		<-accepted
		cancel()
		var r result
		select {
		case r = <-done:
		case <-time.After(hangGuard):
			t.Fatalf("kcopyd did not end within %v after it was interrupted", hangGuard)
		}
		if r.code != exitInterrupted || !parseReport(t, r).Interrupted {
			t.Errorf("copy interrupted while connecting = %v; want exit 130", r)
		}
	})
	t.Run("io", func(t *testing.T) {
		s := nbdtest.Nbdkit(t, "--filter=delay", "memory", "1M", "delay-read=60")
		r := runWithGuard(t, "copy", "--create", "--no-sparse", "--nbd-timeout", "500ms", s.URI, dst)
		if r.code != exitReadError || !strings.Contains(r.stderr, "read error on "+s.URI) || !strings.Contains(r.stderr, "no progress") {
			t.Errorf("copy from a stuck server = %v; want exit 2 naming the timeout", r)
		}
	})
	if r := runCLI(t, "", "copy", "--nbd-timeout", "-1s", "a", "b"); r.code != exitUsage {
		t.Errorf("--nbd-timeout -1s = %v; want exit 1", r)
	}
}

// silentServer listens on a Unix socket, accepts connections and never
// says anything. It returns the location and a channel that is closed on
// the first connection.
func silentServer(t *testing.T) (string, <-chan struct{}) {
	t.Helper()
	sock := filepath.Join(nbdtest.ShortDir(t), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if conns == nil {
				close(accepted)
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-stopped
	})
	return "nbd+unix:///?socket=" + sock, accepted
}

// runWithGuard runs the command in-process and fails the test if it does
// not end within hangGuard.
func runWithGuard(t *testing.T, args ...string) result {
	t.Helper()
	done := make(chan result, 1)
	go func() { done <- runCLI(t, "", args...) }()
	select {
	case r := <-done:
		return r
	case <-time.After(hangGuard):
		t.Fatalf("kcopyd %v did not end within %v", args, hangGuard)
		return result{}
	}
}

// TestNBDServerKilled kills an NBD server in the middle of a copy.
func TestNBDServerKilled(t *testing.T) {
	t.Parallel()
	const size = 16 << 20
	data := randomBytes(53, size)
	dir := t.TempDir()
	src := writeFile(t, dir, "src", data)

	// waitData waits until path has data allocated, i.e. the copy is
	// writing.
	waitData := func(t *testing.T, path string, done <-chan result) {
		t.Helper()
		for {
			var st unix.Stat_t
			if err := unix.Stat(path, &st); err == nil && st.Blocks > 0 {
				return
			}
			select {
			case r := <-done:
				t.Fatalf("the copy ended before the server was killed: %v", r)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	start := func(args ...string) <-chan result {
		done := make(chan result, 1)
		go func() { done <- runCLI(t, "", args...) }()
		return done
	}
	wait := func(t *testing.T, done <-chan result) result {
		t.Helper()
		select {
		case r := <-done:
			return r
		case <-time.After(hangGuard):
			t.Fatalf("kcopyd did not end within %v after its server was killed", hangGuard)
			return result{}
		}
	}

	t.Run("destination", func(t *testing.T) {
		backing := writeFile(t, dir, "backing", nil)
		if err := os.Truncate(backing, size); err != nil {
			t.Fatal(err)
		}
		s := nbdtest.Nbdkit(t, "file", backing)
		file := filepath.Join(dir, "file")
		done := start("copy", "--create", "--no-sparse", "--rate", "8M", src, s.URI, file)
		waitData(t, backing, done)
		s.Kill()
		r := wait(t, done)
		if r.code != exitWriteError || !strings.Contains(r.stderr, "copy failed on "+s.URI+"; completed on "+file) {
			t.Fatalf("copy to a killed server = %v; want exit 3 naming it", r)
		}
		sameBytes(t, "the file destination", readFile(t, file), data)
	})
	t.Run("source", func(t *testing.T) {
		s := nbdtest.Nbdkit(t, "memory", strconv.Itoa(size))
		writeExport(t, s.URI, data, 0)
		dst := filepath.Join(dir, "dst")
		done := start("copy", "--create", "--no-sparse", "--rate", "8M", s.URI, dst)
		waitData(t, dst, done)
		s.Kill()
		r := wait(t, done)
		if r.code != exitReadError || !strings.Contains(r.stderr, "read error on "+s.URI) || !strings.Contains(r.stderr, "connection lost") {
			t.Fatalf("copy from a killed server = %v; want exit 2 naming it", r)
		}
	})
}

func TestNBDHelp(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"copy", "zero", "verify"} {
		r := runCLI(t, "", cmd, "--help")
		for _, w := range []string{"NBD options (nbd://", "--connections N", "--tls-ca FILE", "--tls-cert FILE", "--tls-key FILE", "--tls-insecure", "--nbd-timeout DURATION", "--nbd-connect-timeout DURATION", "NBD options: ", "read-only"} {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("kcopyd %s --help has no %q", cmd, w)
			}
		}
		i, j := strings.Index(r.stdout, "\nFlags:"), strings.Index(r.stdout, "\nNBD options (")
		if i < 0 || j < i || strings.Contains(r.stdout[i:j], "--tls-ca") || !strings.Contains(r.stdout[i:j], "--json") {
			t.Errorf("kcopyd %s --help does not list the NBD options apart from the other flags:\n%s", cmd, r.stdout)
		}
	}
}

// TestBinaryNBD runs the built command against nbdkit: a round trip, and
// the refusal of a read-only destination.
func TestBinaryNBD(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	const size = 8 << 20
	dir := t.TempDir()
	data := sparseData(54, size, [2]int64{2 << 20, 2 << 20})
	src := writeFile(t, dir, "src", data)
	s := nbdtest.Nbdkit(t, "memory", strconv.Itoa(size))
	if r := runBinary(t, bin, "copy", "--verify", "--connections", "4", src, s.URI); r.code != 0 {
		t.Fatalf("copy to nbdkit = %v", r)
	}
	back := filepath.Join(dir, "back")
	if r := runBinary(t, bin, "copy", "--create", s.URI, back); r.code != 0 {
		t.Fatalf("copy from nbdkit = %v", r)
	}
	sameBytes(t, "round trip through the binary", readFile(t, back), data)

	ro := nbdtest.Nbdkit(t, "-r", "memory", strconv.Itoa(size))
	r := runBinary(t, bin, "copy", src, ro.URI)
	if r.code != exitUsage || !strings.Contains(r.stderr, "destination "+ro.URI+" is a read-only NBD export") {
		t.Errorf("copy to a read-only export = %v; want exit 1", r)
	}
}

// TestBinaryNBDServerKilled kills the destination server under the built
// command, which must end with status 3.
func TestBinaryNBDServerKilled(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	const size = 16 << 20
	dir := t.TempDir()
	src := writeFile(t, dir, "src", randomBytes(55, size))
	s := nbdtest.Nbdkit(t, "memory", strconv.Itoa(size))
	cmd := exec.Command(bin, "copy", "--no-sparse", "--rate", "2M", "--progress-interval", "100ms", src, s.URI)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stderr)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if strings.Contains(sc.Text(), "kcopyd: copy: ") && !strings.Contains(sc.Text(), ": 0 B of") {
			break
		}
	}
	s.Kill()
	rest, _ := io.ReadAll(stderr)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err = <-exited:
	case <-time.After(hangGuard):
		t.Fatalf("kcopyd did not end within %v after its server was killed", hangGuard)
	}
	out := strings.Join(lines, "\n") + "\n" + string(rest)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitWriteError || !strings.Contains(out, "copy failed on every destination") {
		t.Fatalf("kcopyd after its destination was killed: %v; want exit 3\n%s", err, out)
	}
}
