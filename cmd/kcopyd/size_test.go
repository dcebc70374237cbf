package main

import (
	"errors"
	"strconv"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"4096", 4096, true},
		{"1k", 1024, true},
		{"1K", 1024, true},
		{"1KiB", 1024, true},
		{"3M", 3 << 20, true},
		{"3MiB", 3 << 20, true},
		{"2G", 2 << 30, true},
		{"2GiB", 2 << 30, true},
		{"5T", 5 << 40, true},
		{"5TiB", 5 << 40, true},
		{"8s", 4096, true},
		{"0s", 0, true},
		{"007", 7, true},
		{"8388607T", 8388607 << 40, true},
		{"9223372036854775807", 1<<63 - 1, true},
		{"9223372036854775808", 0, false},
		{"8388608T", 0, false},
		{"", 0, false},
		{"K", 0, false},
		{"KiB", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1.5M", 0, false},
		{" 1M", 0, false},
		{"1M ", 0, false},
		{"1 M", 0, false},
		{"1KB", 0, false},
		{"1kib", 0, false},
		{"1m", 0, false},
		{"1X", 0, false},
		{"0x10", 0, false},
		{"1e3", 0, false},
		{"1MM", 0, false},
		{"1S", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if tt.ok && (err != nil || got != tt.want) {
			t.Errorf("parseSize(%q) = %d, %v; want %d, nil", tt.in, got, err, tt.want)
		}
		if !tt.ok && (err == nil || !errors.Is(err, errBadSize)) {
			t.Errorf("parseSize(%q) = %d, %v; want an error wrapping errBadSize", tt.in, got, err)
		}
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"}, {1, "1"}, {1023, "1023"}, {1024, "1KiB"}, {1536, "1536"},
		{512 << 10, "512KiB"}, {3 << 20, "3MiB"}, {1 << 30, "1GiB"}, {7 << 40, "7TiB"},
	}
	for _, tt := range tests {
		if got := formatSize(tt.in); got != tt.want {
			t.Errorf("formatSize(%d) = %q; want %q", tt.in, got, tt.want)
		}
		if n, err := parseSize(formatSize(tt.in)); err != nil || n != tt.in {
			t.Errorf("parseSize(formatSize(%d)) = %d, %v; want %d, nil", tt.in, n, err, tt.in)
		}
	}
}

// FuzzParseSize checks that parseSize never panics, returns a
// non-negative size or an error wrapping errBadSize, and agrees with
// formatSize. Seeds are in testdata/fuzz/FuzzParseSize.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1", "4K", "1MiB", "8s", "9223372036854775807", "1.5G", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err != nil {
			if !errors.Is(err, errBadSize) {
				t.Fatalf("parseSize(%q) error %v does not wrap errBadSize", s, err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("parseSize(%q) = %d; want >= 0", s, n)
		}
		for _, form := range []string{strconv.FormatInt(n, 10), formatSize(n)} {
			if m, err := parseSize(form); err != nil || m != n {
				t.Fatalf("parseSize(%q) = %d, %v; want %d (from %q)", form, m, err, n, s)
			}
		}
	})
}
