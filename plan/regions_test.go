package plan

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/kcopyd/kcopyd/units"
)

func TestParseRegions(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		format RegionsFormat
		want   []ListedRegion
		line   int // the bad line when an error is expected; -1: an error without a line
	}{
		{"one", "0 4K 8K\n", CopyRegions, []ListedRegion{{Region: Region{Src: 0, Len: 4096, Dest: 8192}, Line: 1}}, 0},
		{"comments and blanks", "# map\n\n  1M 1M 0 # first\n\t2048s\t8s\t4096s\n", CopyRegions,
			[]ListedRegion{{Region: Region{Src: 1 << 20, Len: 1 << 20, Dest: 0}, Line: 3}, {Region: Region{Src: 1 << 20, Len: 4096, Dest: 2 << 20}, Line: 4}}, 0},
		{"no final newline", "0 1 2", CopyRegions, []ListedRegion{{Region: Region{Src: 0, Len: 1, Dest: 2}, Line: 1}}, 0},
		{"crlf", "0 1 2\r\n", CopyRegions, []ListedRegion{{Region: Region{Src: 0, Len: 1, Dest: 2}, Line: 1}}, 0},
		{"zero format", "4K 8K\n", ZeroRegions, []ListedRegion{{Region: Region{Dest: 4096, Len: 8192}, Line: 1}}, 0},
		{"empty", "", CopyRegions, nil, -1},
		{"only comments", "# nothing\n\n", CopyRegions, nil, -1},
		{"two fields", "0 4K 0\n0 4K\n", CopyRegions, nil, 2},
		{"four fields", "0 4K 0 1\n", CopyRegions, nil, 1},
		{"zero length", "\n\n0 0 0\n", CopyRegions, nil, 3},
		{"bad size", "0 4K 0\n0 4X 0\n", CopyRegions, nil, 2},
		{"negative", "-1 4K 0\n", CopyRegions, nil, 1},
		{"overflow", "9223372036854775807 1 0\n", CopyRegions, nil, 1},
		{"zero format three fields", "0 1 2\n", ZeroRegions, nil, 1},
		{"long line", "0 1 2 #" + strings.Repeat("x", MaxRegionsLine) + "\n", CopyRegions, nil, 1},
	}
	for _, tt := range tests {
		got, err := ParseRegions(strings.NewReader(tt.in), tt.format)
		switch {
		case tt.line == 0:
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s: ParseRegions(%q) = %+v, %v; want %+v, nil", tt.name, tt.in, got, err, tt.want)
			}
		case tt.line < 0:
			if err == nil {
				t.Errorf("%s: ParseRegions(%q) = %+v, nil; want an error", tt.name, tt.in, got)
			}
		default:
			var le *RegionsLineError
			if !errors.As(err, &le) || le.Line != tt.line {
				t.Errorf("%s: ParseRegions(%q) = %+v, %v; want an error on line %d", tt.name, tt.in, got, err, tt.line)
			}
			if err != nil && !strings.Contains(err.Error(), fmt.Sprintf("line %d", tt.line)) {
				t.Errorf("%s: error %q does not name line %d", tt.name, err, tt.line)
			}
		}
	}
}

// FuzzParseRegions checks that ParseRegions never panics, that every
// region it accepts is valid, and that printing the regions back in plain
// bytes parses to the same ranges. Seeds are in testdata/fuzz/FuzzParseRegions.
func FuzzParseRegions(f *testing.F) {
	f.Add("0 4K 8K\n", false)
	f.Add("# c\n1M 1M 0 # x\n2048s 8s 4096s\n", false)
	f.Add("4K 8K\n", true)
	f.Fuzz(func(t *testing.T, in string, zero bool) {
		format := CopyRegions
		if zero {
			format = ZeroRegions
		}
		regs, err := ParseRegions(strings.NewReader(in), format)
		if err != nil {
			return
		}
		var b strings.Builder
		prev := 0
		for _, r := range regs {
			if r.Len <= 0 || r.Src < 0 || r.Dest < 0 || r.Src > 1<<63-1-r.Len || r.Dest > 1<<63-1-r.Len {
				t.Fatalf("ParseRegions(%q) accepted %+v", in, r)
			}
			if r.Line <= prev {
				t.Fatalf("ParseRegions(%q): line numbers not increasing: %+v", in, regs)
			}
			prev = r.Line
			if zero {
				fmt.Fprintf(&b, "%d %d\n", r.Dest, r.Len)
			} else {
				fmt.Fprintf(&b, "%d %d %d\n", r.Src, r.Len, r.Dest)
			}
		}
		again, err := ParseRegions(strings.NewReader(b.String()), format)
		if err != nil || len(again) != len(regs) {
			t.Fatalf("reparsing %q = %+v, %v; want %d regions", b.String(), again, err, len(regs))
		}
		for i := range regs {
			a, r := again[i], regs[i]
			if a.Src != r.Src || a.Len != r.Len || a.Dest != r.Dest {
				t.Fatalf("reparsed region %d = %+v; want %+v", i, a, r)
			}
		}
	})
}

// TestParseRegionsErrorUnwraps: a bad number is a *RegionsLineError that
// unwraps to units.ErrBadSize, and its message names the line and field.
func TestParseRegionsErrorUnwraps(t *testing.T) {
	_, err := ParseRegions(strings.NewReader("0 4K 0\n0 4X 0\n"), CopyRegions)
	want := `regions file line 2: length: bad size "4X": `
	if !errors.Is(err, units.ErrBadSize) || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("ParseRegions = %v; want %q... wrapping units.ErrBadSize", err, want)
	}
}
