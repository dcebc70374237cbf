package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
)

// TestCopyAliasesRefused runs copies whose destination is the source, or
// another destination, under another name (a loop device over the file, a
// partition of one, two loop devices over one file, a symbolic link, a hard
// link, /proc/self/fd/N, a bind mount) at overlapping bytes: each must exit
// 1 saying so, with the source file (the loop devices' backing file)
// untouched.
func TestCopyAliasesRefused(t *testing.T) {
	t.Parallel()
	const size = 16 << 20
	// source writes a 16 MiB random source into dir.
	source := func(t *testing.T, dir string) string {
		return writeFile(t, dir, "src", randomBytes(21, size))
	}
	// aliasCase copies the source's first MiB to 4 KiB further on in
	// the alias of the source that mk makes.
	aliasCase := func(mk func(t *testing.T, src string) string) func(t *testing.T, dir string) ([]string, string) {
		return func(t *testing.T, dir string) ([]string, string) {
			src := source(t, dir)
			return []string{"copy", "--length", "1M", "--dest-offset", "4K", src, mk(t, src)}, ""
		}
	}
	loop := func(t *testing.T, file string, opts ...looptest.Option) string {
		return looptest.Attach(t, file, opts...)
	}
	checkBadInputs(t, []badInput{
		{"loop device over the source", func(t *testing.T, dir string) ([]string, string) {
			src := source(t, dir)
			// The report: --force must not bypass identity.
			return []string{"copy", "--force", "--length", "8M", "--dest-offset", "1M", src, loop(t, src)}, ""
		}, "is the same storage as the source"},
		{"loop device at an offset over the source", func(t *testing.T, dir string) ([]string, string) {
			src := source(t, dir)
			// Destination [0, +1M) of the loop is [4M, +1M) of the file.
			return []string{"copy", "--offset", "4M", "--length", "1M", src, loop(t, src, looptest.Offset(4<<20))}, ""
		}, "byte 0 of /dev/loop"},
		{"source is a loop device over the destination", func(t *testing.T, dir string) ([]string, string) {
			src := source(t, dir)
			return []string{"copy", "--length", "1M", "--dest-offset", "512K", loop(t, src), src}, ""
		}, "is the same storage as the source /dev/loop"},
		{"partition of a loop device over the source", func(t *testing.T, dir string) ([]string, string) {
			src := source(t, dir)
			part := looptest.AddPartition(t, loop(t, src, looptest.PartScan()), 1, 2<<20, 8<<20)
			// Partition byte 0 is file byte 2M: inside the source range.
			return []string{"copy", "--length", "4M", "--dest-offset", "0", src, part}, ""
		}, "byte 0 of " + "/dev/loop"},
		{"two loop devices over one file", func(t *testing.T, dir string) ([]string, string) {
			other := writeFile(t, dir, "other", randomBytes(22, 8<<20))
			back := writeFile(t, dir, "back", make([]byte, size))
			// The same 5 MiB at 0 of both: file bytes [4M, 5M) twice.
			return []string{"copy", "--length", "5M", other, loop(t, back), loop(t, back, looptest.Offset(4<<20))}, ""
		}, "is the same storage as the destination /dev/loop"},
		{"symbolic link to the source", aliasCase(func(t *testing.T, src string) string {
			sym := filepath.Join(filepath.Dir(src), "sym")
			if err := os.Symlink(src, sym); err != nil {
				t.Fatal(err)
			}
			return sym
		}), "is the source"},
		{"hard link to the source", aliasCase(func(t *testing.T, src string) string {
			hard := filepath.Join(filepath.Dir(src), "hard")
			if err := os.Link(src, hard); err != nil {
				t.Fatal(err)
			}
			return hard
		}), "is the source"},
		{"/proc/self/fd of the source", aliasCase(func(t *testing.T, src string) string {
			f, err := os.Open(src)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return fmt.Sprintf("/proc/self/fd/%d", f.Fd())
		}), "is the source"},
		{"bind mount of the source", aliasCase(func(t *testing.T, src string) string {
			target := writeFile(t, t.TempDir(), "target", nil)
			if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
				t.Skipf("bind mount: %v", err)
			}
			t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
			return target
		}), "is the source"},
		{"zero two loop devices over one file", func(t *testing.T, dir string) ([]string, string) {
			back := writeFile(t, dir, "back", randomBytes(23, size))
			return []string{"zero", "--length", "5M", loop(t, back), loop(t, back, looptest.Offset(4<<20))}, ""
		}, "is the same storage as the destination /dev/loop"},
	})
}

// TestCopyAliasesAllowed runs copies between aliases of one file whose
// bytes do not overlap: they are legitimate and must work, with the data
// where the loop devices' offsets put it.
func TestCopyAliasesAllowed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const size = 16 << 20
	data := randomBytes(24, size)
	src := writeFile(t, dir, "src", data)
	whole := looptest.Attach(t, src)
	window := looptest.Attach(t, src, looptest.Offset(8<<20))
	// File [0, 1M) to the window's [0, 1M) = file [8M, 9M), and to the
	// whole loop's [4M, 5M).
	r := runCLI(t, "", "copy", "--length", "1M", src, window)
	if r.code != 0 {
		t.Fatalf("copy to a loop device over the source, not overlapping = %v", r)
	}
	r = runCLI(t, "", "copy", "--length", "1M", "--dest-offset", "12M", window, whole)
	if r.code != 0 {
		t.Fatalf("copy between two loop devices over one file, not overlapping = %v", r)
	}
	want := append([]byte(nil), data...)
	copy(want[8<<20:], data[:1<<20])
	copy(want[12<<20:], want[8<<20:9<<20])
	if !bytes.Equal(readFile(t, src), want) {
		t.Errorf("the file does not hold the copies at the loop devices' offsets")
	}
}

// TestCopyBadKinds refuses every location kind kcopyd cannot use and
// every out-of-range number, with exit 1, a message saying what to do
// instead, and nothing touched.
func TestCopyBadKinds(t *testing.T) {
	t.Parallel()
	fifo := func(t *testing.T, dir string) string {
		p := filepath.Join(dir, "fifo")
		if err := unix.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	checkBadInputs(t, []badInput{
		{"FIFO source", func(t *testing.T, dir string) ([]string, string) {
			_, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", fifo(t, dir), ds[0]}, ""
		}, "is a FIFO, which kcopyd cannot use"},
		{"FIFO destination", func(t *testing.T, dir string) ([]string, string) {
			src, _ := files(t, dir, 0, 0)
			return []string{"copy", "--create", src, fifo(t, dir)}, ""
		}, "is a FIFO, which kcopyd cannot use"},
		{"/dev/null destination", func(t *testing.T, dir string) ([]string, string) {
			src, _ := files(t, dir, 0, 0)
			return []string{"copy", src, "/dev/null"}, ""
		}, "/dev/null is a character device"},
		{"/dev/zero source", func(t *testing.T, dir string) ([]string, string) {
			_, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--length", "4K", "/dev/zero", ds[0]}, ""
		}, "/dev/zero is a character device"},
		{"zero /dev/zero", func(t *testing.T, dir string) ([]string, string) {
			return []string{"zero", "--length", "4K", "/dev/zero"}, ""
		}, "character device"},
		{"directory destination", func(t *testing.T, dir string) ([]string, string) {
			src, _ := files(t, dir, 0, 0)
			sub := filepath.Join(dir, "sub")
			os.Mkdir(sub, 0o755)
			return []string{"copy", "--create", src, sub}, ""
		}, "name a file in it"},
		{"offset plus length overflows", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--offset", "1", "--length", "9223372036854775807", src, ds[0]}, ""
		}, "beyond the largest possible offset"},
		{"dest offset plus length overflows", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--create", "--dest-offset", "9223372036854775000", "--length", "4K", src, ds[0]}, ""
		}, "beyond the largest possible offset"},
		{"zero offset plus length overflows", func(t *testing.T, dir string) ([]string, string) {
			_, ds := files(t, dir, 1, 1<<20)
			return []string{"zero", "--offset", "1", "--length", "9223372036854775807", ds[0]}, ""
		}, "beyond the largest possible offset"},
		{"size too large for int64", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--length", "9223372036854775808", src, ds[0]}, ""
		}, "too large"},
		{"size suffix overflows", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--length", "8388608T", src, ds[0]}, ""
		}, "too large"},
		{"regions line overflows", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--regions", "-", src, ds[0]}, "0 4K 0\n1 9223372036854775807 0\n"
		}, "line 2"},
		{"offset past the end", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--offset", "2M", "--length", "0", src, ds[0]}, ""
		}, "beyond the end of the source"},
		{"offset past the end of an empty source", func(t *testing.T, dir string) ([]string, string) {
			src := writeFile(t, dir, "empty", nil)
			_, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--offset", "1", src, ds[0]}, ""
		}, "beyond the end of the source"},
		{"jobs zero", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--jobs", "0", src, ds[0]}, ""
		}, "--jobs must be between 1 and 1024"},
		{"jobs too many", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--jobs", "1025", src, ds[0]}, ""
		}, "--jobs must be between 1 and 1024"},
		{"jobs overflows", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--jobs", "99999999999999999999", src, ds[0]}, ""
		}, "--jobs"},
		{"sub-job size zero", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--sub-job-size", "0", src, ds[0]}, ""
		}, "--sub-job-size must be a multiple of 4KiB between 4KiB and 64MiB"},
		{"sub-job size too large", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<20)
			return []string{"copy", "--sub-job-size", "128M", src, ds[0]}, ""
		}, "--sub-job-size must be a multiple of 4KiB between 4KiB and 64MiB"},
		{"regions lines overlap on the destination", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 2, 1<<20)
			return []string{"copy", "--regions", "-", src, ds[0], ds[1]}, "# a\n0 64K 0\n128K 64K 128K\n64K 8K 188K\n"
		}, "regions lines 3 and 4 write overlapping destination ranges"},
	})
}

// TestCopyEmpty checks that an empty source, or --length 0, is a
// successful copy of nothing that still creates the destination.
func TestCopyEmpty(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := writeFile(t, dir, "empty", nil)
	out := filepath.Join(dir, "out")
	if r := runCLI(t, "", "copy", "--create", "--verify", empty, out); r.code != 0 {
		t.Fatalf("copy --create of an empty source = %v; want exit 0", r)
	}
	if st, err := os.Stat(out); err != nil || st.Size() != 0 {
		t.Errorf("destination of an empty copy: %v, %v; want an empty file", st, err)
	}
	src, ds := files(t, dir, 1, 1<<20)
	snap := takeSnapshot(t, ds[0])
	if r := runCLI(t, "", "copy", "--length", "0", "--json", src, ds[0]); r.code != 0 || !strings.Contains(r.stdout, `"bytes":0,`) {
		t.Errorf("copy --length 0 = %v; want exit 0 and 0 bytes", r)
	}
	snap.unchanged(t)
	// With --dest-offset the created file is that long.
	out2 := filepath.Join(dir, "out2")
	if r := runCLI(t, "", "copy", "--create", "--length", "0", "--dest-offset", "4K", src, out2); r.code != 0 {
		t.Fatalf("copy --create --length 0 --dest-offset 4K = %v", r)
	}
	if st, err := os.Stat(out2); err != nil || st.Size() != 4096 {
		t.Errorf("created destination: %v, %v; want 4096 bytes", st, err)
	}
	// zero of an empty file, and zero --length 0.
	if r := runCLI(t, "", "zero", empty); r.code != 0 {
		t.Errorf("zero of an empty file = %v; want exit 0", r)
	}
	if r := runCLI(t, "", "zero", "--length", "0", ds[0]); r.code != 0 {
		t.Errorf("zero --length 0 = %v; want exit 0", r)
	}
	snap.unchanged(t)
}
