package location_test

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
	"github.com/kcopyd/kcopyd/location"
)

// overlaps is the brute-force answer FirstOverlap must agree with.
func overlaps(x, y location.Range) bool {
	return x.Len > 0 && y.Len > 0 && x.Off < y.End() && y.Off < x.End()
}

func TestFirstOverlap(t *testing.T) {
	r := func(off, n int64) location.Range { return location.Range{Off: off, Len: n} }
	for _, tt := range []struct {
		a, b []location.Range
		ok   bool
	}{
		{nil, nil, false},
		{[]location.Range{r(0, 10)}, []location.Range{r(10, 10)}, false},
		{[]location.Range{r(0, 10)}, []location.Range{r(9, 10)}, true},
		{[]location.Range{r(5, 0)}, []location.Range{r(0, 10)}, false},
		{[]location.Range{r(100, 10), r(0, 50)}, []location.Range{r(60, 30), r(49, 1)}, true},
		{[]location.Range{r(0, 1000)}, []location.Range{r(2000, 1), r(500, 1)}, true},
	} {
		x, y, ok := location.FirstOverlap(tt.a, tt.b)
		if ok != tt.ok || ok && !overlaps(x, y) {
			t.Errorf("FirstOverlap(%v, %v) = %v, %v, %v; want ok %v and overlapping ranges", tt.a, tt.b, x, y, ok, tt.ok)
		}
	}
	if _, _, ok := location.FirstSelfOverlap([]location.Range{r(0, 10), r(10, 10), r(30, 5)}); ok {
		t.Error("FirstSelfOverlap of adjacent ranges = ok; want none")
	}
	if x, y, ok := location.FirstSelfOverlap([]location.Range{r(30, 5), r(0, 10), r(5, 10)}); !ok || x != r(0, 10) || y != r(5, 10) {
		t.Errorf("FirstSelfOverlap = %v, %v, %v; want [0,+10) and [5,+10)", x, y, ok)
	}
}

// TestFirstOverlapRandom compares FirstOverlap with a brute-force check on
// random range lists.
func TestFirstOverlapRandom(t *testing.T) {
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 1))
	list := func() []location.Range {
		out := make([]location.Range, rng.IntN(6))
		for i := range out {
			out[i] = location.Range{Off: rng.Int64N(100), Len: rng.Int64N(12), Line: i + 1}
		}
		return out
	}
	for range 5000 {
		a, b := list(), list()
		want := false
		for _, x := range a {
			for _, y := range b {
				want = want || overlaps(x, y)
			}
		}
		if x, y, ok := location.FirstOverlap(a, b); ok != want || ok && !overlaps(x, y) {
			t.Fatalf("FirstOverlap(%v, %v) = %v, %v, %v; want ok %v (seed %d)", a, b, x, y, ok, want, seed)
		}
		wantSelf := false
		for i, x := range a {
			for _, y := range a[:i] {
				wantSelf = wantSelf || overlaps(x, y)
			}
		}
		if x, y, ok := location.FirstSelfOverlap(a); ok != wantSelf || ok && (!overlaps(x, y) || x == y) {
			t.Fatalf("FirstSelfOverlap(%v) = %v, %v, %v; want ok %v (seed %d)", a, x, y, ok, wantSelf, seed)
		}
	}
}

// TestCheckAliases opens a file as the source and, as destinations, the
// same file under other names and a loop device over it at an offset:
// overlapping ranges are refused saying how the two lie in one store, and
// ranges apart are accepted.
func TestCheckAliases(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "src", make([]byte, 1<<20))
	link := filepath.Join(dir, "link")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	open := func(spec string) *location.Location {
		t.Helper()
		l, err := location.Open(t.Context(), spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	src, dst := open(path), open(link)
	rg := func(off, n int64, line int) []location.Range {
		return []location.Range{{Off: off, Len: n, Line: line}}
	}
	err := location.CheckAliases(src, rg(0, 8192, 0), []*location.Location{dst}, [][]location.Range{rg(4096, 8192, 0)})
	want := "destination " + link + " is the source " + path + ", and its range [4096, +8192) overlaps the source's range [0, +8192); nothing was written"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("CheckAliases(symbolic link) = %v; want %q", err, want)
	}
	if err := location.CheckAliases(src, rg(0, 8192, 3), []*location.Location{dst}, [][]location.Range{rg(8192, 8192, 3)}); err != nil {
		t.Errorf("CheckAliases(adjacent ranges) = %v; want nil", err)
	}
	err = location.CheckAliases(nil, nil, []*location.Location{src, dst}, [][]location.Range{rg(0, 10, 1), rg(100, 10, 2)})
	if err == nil || err.Error() != "destination "+link+" is given twice (also as "+path+")" {
		t.Errorf("CheckAliases(one destination twice) = %v", err)
	}
	if err := looptest.Available(); err != nil {
		t.Skipf("loop devices: %v", err)
	}
	loop := open(looptest.Attach(t, path, looptest.Offset(65536)))
	err = location.CheckAliases(src, rg(65536+4096, 4096, 2), []*location.Location{loop}, [][]location.Range{rg(0, 8192, 5)})
	want = "destination " + loop.Spec + " is the same storage as the source " + path + " (byte 0 of " + loop.Spec + " is byte 65536 of " + path + "), and its range [0, +8192) overlaps the source's range [69632, +4096) (regions line 5 and regions line 2)"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("CheckAliases(loop device at 64 KiB) = %v; want %q", err, want)
	}
	if err := location.CheckAliases(src, rg(0, 65536, 0), []*location.Location{loop}, [][]location.Range{rg(0, 65536, 0)}); err != nil {
		t.Errorf("CheckAliases(loop device past the source range) = %v; want nil", err)
	}
}
