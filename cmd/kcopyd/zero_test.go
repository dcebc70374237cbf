package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
)

func TestZeroFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := writeFile(t, dir, "a", randomBytes(1, 3<<20+100))
	b := writeFile(t, dir, "b", randomBytes(2, 2<<20))

	// Whole files of different sizes: zeroed in place by default, the
	// blocks freed with --punch-holes.
	a2 := writeFile(t, dir, "a2", randomBytes(1, 3<<20+100))
	if r := runCLI(t, "", "zero", "--punch-holes", a2); r.code != 0 {
		t.Fatalf("zero --punch-holes = %v", r)
	}
	r := runCLI(t, "", "zero", "--verify", "--json", a, b)
	if r.code != 0 {
		t.Fatalf("zero = %v", r)
	}
	for _, p := range []string{a, b, a2} {
		got := readFile(t, p)
		if !bytes.Equal(got, make([]byte, len(got))) {
			t.Errorf("%s does not read zeroes", p)
		}
		n := allocated(t, p)
		if punched := p == a2; punched != (n <= 64<<10) {
			t.Errorf("%s allocates %d bytes after zeroing (--punch-holes %v)", p, n, punched)
		}
	}
	var rep jsonReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Destinations) != 2 || rep.Destinations[0].Verified == nil || !*rep.Destinations[0].Verified {
		t.Errorf("report = %+v; want 2 verified destinations", rep)
	}

	// A region, in sectors.
	data := randomBytes(3, 1<<20)
	c := writeFile(t, dir, "c", data)
	if r := runCLI(t, "", "zero", "--offset", "8s", "--length", "3s", c); r.code != 0 {
		t.Fatalf("zero region = %v", r)
	}
	want := append([]byte(nil), data...)
	clear(want[4096 : 4096+1536])
	if !bytes.Equal(readFile(t, c), want) {
		t.Errorf("zero --offset 8s --length 3s zeroed the wrong bytes")
	}

	// Regions.
	d := writeFile(t, dir, "d", data)
	want = append([]byte(nil), data...)
	clear(want[0:10])
	clear(want[100000:200000])
	if r := runCLI(t, "# two\n0 10\n100000 100000 # more\n", "zero", "--regions", "-", d); r.code != 0 {
		t.Fatalf("zero --regions = %v", r)
	}
	if !bytes.Equal(readFile(t, d), want) {
		t.Errorf("zero --regions zeroed the wrong bytes")
	}
}

func TestZeroBadInput(t *testing.T) {
	t.Parallel()
	checkBadInputs(t, []badInput{
		{"no destination", func(t *testing.T, dir string) ([]string, string) {
			return []string{"zero"}, ""
		}, "at least one DEST"},
		{"missing destination", func(t *testing.T, dir string) ([]string, string) {
			_, ds := files(t, dir, 1, 1<<20)
			return []string{"zero", ds[0], filepath.Join(dir, "nope")}, ""
		}, "does not exist"},
		{"directory", func(t *testing.T, dir string) ([]string, string) {
			_, ds := files(t, dir, 1, 1<<20)
			return []string{"zero", ds[0], dir}, ""
		}, "is a directory"},
		{"beyond the end", func(t *testing.T, dir string) ([]string, string) {
			_, ds := files(t, dir, 2, 1<<20)
			return []string{"zero", "--offset", "1M", "--length", "1", ds[0], ds[1]}, ""
		}, "beyond the end"},
		{"offset at the end", func(t *testing.T, dir string) ([]string, string) {
			_, ds := files(t, dir, 1, 1<<20)
			return []string{"zero", "--offset", "1M", ds[0]}, ""
		}, "at or beyond the end"},
		{"twice", func(t *testing.T, dir string) ([]string, string) {
			_, ds := files(t, dir, 1, 1<<20)
			return []string{"zero", ds[0], filepath.Join(dir, ".", "d0")}, ""
		}, "given twice"},
		{"nine", func(t *testing.T, dir string) ([]string, string) {
			_, ds := files(t, dir, 9, 4096)
			return append([]string{"zero"}, ds...), ""
		}, "at most 8"},
		{"bad regions line", func(t *testing.T, dir string) ([]string, string) {
			_, ds := files(t, dir, 1, 1<<20)
			return []string{"zero", "--regions", "-", ds[0]}, "0 4K\n4K 4K 4K\n"
		}, "line 2"},
		{"regions line beyond the end", func(t *testing.T, dir string) ([]string, string) {
			_, ds := files(t, dir, 1, 1<<20)
			return []string{"zero", "--regions", "-", ds[0]}, "0 4K\n1M 4K\n"
		}, "regions line 2"},
		{"malformed length", func(t *testing.T, dir string) ([]string, string) {
			_, ds := files(t, dir, 1, 1<<20)
			return []string{"zero", "--length", "lots", ds[0]}, "bad size"
		}, "bad size"},
		{"misaligned under --direct", func(t *testing.T, dir string) ([]string, string) {
			_, ds := files(t, dir, 1, 1<<20)
			return []string{"zero", "--direct", "--offset", "1", "--length", "4K", ds[0]}, ""
		}, "not a multiple of"},
	})
}

func TestZeroLoopDevice(t *testing.T) {
	t.Parallel()
	dev := looptest.New(t, 4<<20)
	dir := t.TempDir()
	data := randomBytes(4, 4<<20)
	src := writeFile(t, dir, "src", data)
	if r := runCLI(t, "", "copy", src, dev); r.code != 0 {
		t.Fatalf("copy = %v", r)
	}
	r := runCLI(t, "", "zero", "--direct", "--offset", "1M", "--length", "1M", "--verify", dev)
	if r.code != 0 || !strings.Contains(r.stderr, "verified") {
		t.Fatalf("zero a loop device = %v", r)
	}
	want := append([]byte(nil), data...)
	clear(want[1<<20 : 2<<20])
	if !bytes.Equal(readFile(t, dev), want) {
		t.Errorf("loop device: wrong bytes zeroed")
	}
}
