package main

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestParseRegions(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		format regionsFormat
		want   []region
		line   int // the bad line when an error is expected; -1: an error without a line
	}{
		{"one", "0 4K 8K\n", copyRegions, []region{{line: 1, src: 0, len: 4096, dest: 8192}}, 0},
		{"comments and blanks", "# map\n\n  1M 1M 0 # first\n\t2048s\t8s\t4096s\n", copyRegions,
			[]region{{line: 3, src: 1 << 20, len: 1 << 20, dest: 0}, {line: 4, src: 1 << 20, len: 4096, dest: 2 << 20}}, 0},
		{"no final newline", "0 1 2", copyRegions, []region{{line: 1, src: 0, len: 1, dest: 2}}, 0},
		{"crlf", "0 1 2\r\n", copyRegions, []region{{line: 1, src: 0, len: 1, dest: 2}}, 0},
		{"zero format", "4K 8K\n", zeroRegions, []region{{line: 1, dest: 4096, len: 8192}}, 0},
		{"empty", "", copyRegions, nil, -1},
		{"only comments", "# nothing\n\n", copyRegions, nil, -1},
		{"two fields", "0 4K 0\n0 4K\n", copyRegions, nil, 2},
		{"four fields", "0 4K 0 1\n", copyRegions, nil, 1},
		{"zero length", "\n\n0 0 0\n", copyRegions, nil, 3},
		{"bad size", "0 4K 0\n0 4X 0\n", copyRegions, nil, 2},
		{"negative", "-1 4K 0\n", copyRegions, nil, 1},
		{"overflow", "9223372036854775807 1 0\n", copyRegions, nil, 1},
		{"zero format three fields", "0 1 2\n", zeroRegions, nil, 1},
		{"long line", "0 1 2 #" + strings.Repeat("x", maxRegionsLine) + "\n", copyRegions, nil, 1},
	}
	for _, tt := range tests {
		got, err := parseRegions(strings.NewReader(tt.in), tt.format)
		switch {
		case tt.line == 0:
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s: parseRegions(%q) = %+v, %v; want %+v, nil", tt.name, tt.in, got, err, tt.want)
			}
		case tt.line < 0:
			if err == nil {
				t.Errorf("%s: parseRegions(%q) = %+v, nil; want an error", tt.name, tt.in, got)
			}
		default:
			var le *regionsLineError
			if !errors.As(err, &le) || le.Line != tt.line {
				t.Errorf("%s: parseRegions(%q) = %+v, %v; want an error on line %d", tt.name, tt.in, got, err, tt.line)
			}
			if err != nil && !strings.Contains(err.Error(), fmt.Sprintf("line %d", tt.line)) {
				t.Errorf("%s: error %q does not name line %d", tt.name, err, tt.line)
			}
		}
	}
}

// FuzzParseRegions checks that parseRegions never panics, that every
// region it accepts is valid, and that printing the regions back in plain
// bytes parses to the same ranges. Seeds are in testdata/fuzz/FuzzParseRegions.
func FuzzParseRegions(f *testing.F) {
	f.Add("0 4K 8K\n", false)
	f.Add("# c\n1M 1M 0 # x\n2048s 8s 4096s\n", false)
	f.Add("4K 8K\n", true)
	f.Fuzz(func(t *testing.T, in string, zero bool) {
		format := copyRegions
		if zero {
			format = zeroRegions
		}
		regs, err := parseRegions(strings.NewReader(in), format)
		if err != nil {
			return
		}
		var b strings.Builder
		prev := 0
		for _, r := range regs {
			if r.len <= 0 || r.src < 0 || r.dest < 0 || r.src > 1<<63-1-r.len || r.dest > 1<<63-1-r.len {
				t.Fatalf("parseRegions(%q) accepted %+v", in, r)
			}
			if r.line <= prev {
				t.Fatalf("parseRegions(%q): line numbers not increasing: %+v", in, regs)
			}
			prev = r.line
			if zero {
				fmt.Fprintf(&b, "%d %d\n", r.dest, r.len)
			} else {
				fmt.Fprintf(&b, "%d %d %d\n", r.src, r.len, r.dest)
			}
		}
		again, err := parseRegions(strings.NewReader(b.String()), format)
		if err != nil || len(again) != len(regs) {
			t.Fatalf("reparsing %q = %+v, %v; want %d regions", b.String(), again, err, len(regs))
		}
		for i := range regs {
			a, r := again[i], regs[i]
			if a.src != r.src || a.len != r.len || a.dest != r.dest {
				t.Fatalf("reparsed region %d = %+v; want %+v", i, a, r)
			}
		}
	})
}
