package task_test

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/location"
	"github.com/kcopyd/kcopyd/plan"
	"github.com/kcopyd/kcopyd/task"
)

func TestParseRegions(t *testing.T) {
	got, err := task.ParseRegions(strings.NewReader("# c\n0 4K 8K\n\n64K 1s 0\n"), plan.CopyRegions)
	if err != nil {
		t.Fatal(err)
	}
	want := []task.Region{
		{Region: plan.Region{Src: 0, Len: 4096, Dest: 8192}, Line: 2},
		{Region: plan.Region{Src: 65536, Len: 512, Dest: 0}, Line: 4},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseRegions = %+v; want %+v", got, want)
	}
	var le *plan.RegionsLineError
	if _, err := task.ParseRegions(strings.NewReader("0 1\n"), plan.CopyRegions); !errors.As(err, &le) || le.Line != 1 {
		t.Errorf("a short line: %v; want a RegionsLineError for line 1", err)
	}
}

// sized returns an opened file of n bytes in dir.
func sized(t *testing.T, dir, name string, n int64) *location.Location {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, n); err != nil {
		t.Fatal(err)
	}
	return openFile(t, p, &location.Options{Write: true})
}

func TestSpanCopyRegion(t *testing.T) {
	dir := t.TempDir()
	src, empty := sized(t, dir, "src", 1<<20), sized(t, dir, "empty", 0)
	names := task.Names{Offset: "--offset", Length: "--length", DestOffset: "--dest-offset"}
	for _, c := range []struct {
		name    string
		src     *location.Location
		span    task.Span
		want    plan.Region
		err     string
		options bool // the error wraps ErrOptions
	}{
		{"whole", src, task.Span{}, plan.Region{Len: 1 << 20}, "", false},
		{"tail to a dest offset", src, task.Span{Offset: 4096, DestOffset: 8192}, plan.Region{Src: 4096, Dest: 8192, Len: 1<<20 - 4096}, "", false},
		{"given length", src, task.Span{Offset: 512, Length: 100, HasLength: true}, plan.Region{Src: 512, Len: 100}, "", false},
		{"empty source", empty, task.Span{}, plan.Region{}, "", false},
		{"zero length at the end", src, task.Span{Offset: 1 << 20, HasLength: true}, plan.Region{Src: 1 << 20}, "", false},
		{"offset at the end", src, task.Span{Offset: 1 << 20}, plan.Region{}, "--offset 1048576 is at or beyond the end of the source", false},
		{"offset past the end", src, task.Span{Offset: 2 << 20, HasLength: true}, plan.Region{}, "at or beyond the end", false},
		{"negative offset", src, task.Span{Offset: -1}, plan.Region{}, "--offset -1 is negative", true},
		{"length overflows", src, task.Span{Offset: 4096, Length: math.MaxInt64, HasLength: true}, plan.Region{}, "--offset 4096 plus --length", true},
		{"dest offset overflows", src, task.Span{DestOffset: math.MaxInt64 - 10}, plan.Region{}, "--dest-offset", true},
		{"negative length", src, task.Span{Length: -1, HasLength: true}, plan.Region{}, "--length -1 is negative", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			rg, err := c.span.CopyRegion(c.src, names)
			if c.err == "" {
				if err != nil || !reflect.DeepEqual(rg.Region, c.want) || rg.Line != 0 {
					t.Errorf("CopyRegion = %+v, %v; want %+v", rg, err, c.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) || errors.Is(err, task.ErrOptions) != c.options {
				t.Errorf("CopyRegion = %+v, %v; want an error with %q (ErrOptions %v)", rg, err, c.err, c.options)
			}
		})
	}
}

func TestSpanZeroRegions(t *testing.T) {
	dir := t.TempDir()
	a, b, c := sized(t, dir, "a", 1<<20), sized(t, dir, "b", 2<<20), sized(t, dir, "c", 1<<20)
	// Without a length: one region per size, each naming its destinations.
	got, err := task.Span{Offset: 4096}.ZeroRegions([]*location.Location{b, a, c}, task.Names{})
	want := []task.Region{
		{Region: plan.Region{Dest: 4096, Len: 1<<20 - 4096, Dests: []int{1, 2}}},
		{Region: plan.Region{Dest: 4096, Len: 2<<20 - 4096, Dests: []int{0}}},
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ZeroRegions of three sizes = %+v, %v; want %+v", got, err, want)
	}
	// One size: one region for all.
	got, err = task.Span{}.ZeroRegions([]*location.Location{a, c}, task.Names{})
	if want := []task.Region{{Region: plan.Region{Len: 1 << 20}}}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ZeroRegions of one size = %+v, %v; want %+v", got, err, want)
	}
	// A length: one region, whatever the sizes (CheckRanges judges them).
	got, err = task.Span{Offset: 8, Length: 4 << 20, HasLength: true}.ZeroRegions([]*location.Location{a, b}, task.Names{})
	if want := []task.Region{{Region: plan.Region{Dest: 8, Len: 4 << 20}}}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ZeroRegions with a length = %+v, %v; want %+v", got, err, want)
	}
	if _, err := (task.Span{Offset: 1 << 20}).ZeroRegions([]*location.Location{b, a}, task.Names{Offset: "--offset"}); err == nil || !strings.Contains(err.Error(), "--offset 1048576 is at or beyond the end of "+a.Spec) {
		t.Errorf("an offset at the end of the shorter destination: %v; want it refused, naming it", err)
	}
	if _, err := (task.Span{Offset: 10, Length: math.MaxInt64 - 5, HasLength: true}).ZeroRegions([]*location.Location{a}, task.Names{}); !errors.Is(err, task.ErrOptions) {
		t.Errorf("a length past the largest offset: %v; want ErrOptions", err)
	}
}

func TestChooseSubJobSize(t *testing.T) {
	dir := t.TempDir()
	buffered := sized(t, dir, "b", 1<<20)
	direct := openFile(t, buffered.Spec, &location.Options{Direct: true})
	unopened := inspect(t, filepath.Join(dir, "new"))
	if !direct.Direct() || buffered.Direct() || unopened.Direct() {
		t.Fatalf("Direct() = %v, %v, %v; want true, false, false", direct.Direct(), buffered.Direct(), unopened.Direct())
	}
	full, half := kcopyd.NewThrottle(100), kcopyd.NewThrottle(50)
	for _, c := range []struct {
		name string
		th   *kcopyd.Throttle
		locs []*location.Location
		want int64
	}{
		{"buffered", nil, []*location.Location{buffered, unopened}, task.SubJobSize},
		{"one direct", nil, []*location.Location{nil, buffered, direct}, task.DirectSubJobSize},
		{"direct under a rate", full, []*location.Location{direct}, task.DirectSubJobSize},
		{"direct under a duty cycle", half, []*location.Location{direct}, task.SubJobSize},
	} {
		if got := task.ChooseSubJobSize(c.th, c.locs...); got != c.want {
			t.Errorf("%s: ChooseSubJobSize = %d; want %d", c.name, got, c.want)
		}
	}
}
