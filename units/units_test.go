package units

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
		got, err := ParseSize(tt.in)
		if tt.ok && (err != nil || got != tt.want) {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, nil", tt.in, got, err, tt.want)
		}
		if !tt.ok && (err == nil || !errors.Is(err, ErrBadSize)) {
			t.Errorf("ParseSize(%q) = %d, %v; want an error wrapping ErrBadSize", tt.in, got, err)
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
		if got := FormatSize(tt.in); got != tt.want {
			t.Errorf("FormatSize(%d) = %q; want %q", tt.in, got, tt.want)
		}
		if n, err := ParseSize(FormatSize(tt.in)); err != nil || n != tt.in {
			t.Errorf("ParseSize(FormatSize(%d)) = %d, %v; want %d, nil", tt.in, n, err, tt.in)
		}
	}
}

// FuzzParseSize checks that ParseSize never panics, returns a
// non-negative size or an error wrapping ErrBadSize, and agrees with
// FormatSize. Seeds are in testdata/fuzz/FuzzParseSize.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1", "4K", "1MiB", "8s", "9223372036854775807", "1.5G", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if !errors.Is(err, ErrBadSize) {
				t.Fatalf("ParseSize(%q) error %v does not wrap ErrBadSize", s, err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d; want >= 0", s, n)
		}
		for _, form := range []string{strconv.FormatInt(n, 10), FormatSize(n)} {
			if m, err := ParseSize(form); err != nil || m != n {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d (from %q)", form, m, err, n, s)
			}
		}
	})
}

func TestHumanSize(t *testing.T) {
	for _, tt := range []struct {
		in   float64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{3 << 20, "3.0 MiB"}, {1.5 * (1 << 30), "1.5 GiB"}, {1 << 50, "1.0 PiB"}, {1 << 60, "1024.0 PiB"},
	} {
		if got := HumanSize(tt.in); got != tt.want {
			t.Errorf("HumanSize(%v) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseRate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"unlimited", 0, true}, {"unlimited\n", 0, true}, {"50M", 50 << 20, true},
		{" 50M/s\n", 50 << 20, true}, {"4096/s", 4096, true}, {"1s/s", 512, true},
		{"", 0, false}, {"/s", 0, false}, {"50M/m", 0, false}, {"fast", 0, false}, {"-1", 0, false},
	} {
		got, err := ParseRate(tt.in)
		if tt.ok && (err != nil || got != tt.want) {
			t.Errorf("ParseRate(%q) = %d, %v; want %d, nil", tt.in, got, err, tt.want)
		}
		if !tt.ok && !errors.Is(err, ErrBadSize) {
			t.Errorf("ParseRate(%q) = %d, %v; want an error wrapping ErrBadSize", tt.in, got, err)
		}
	}
	for _, r := range []int64{0, 1, 4096, 50 << 20, 1536} {
		if got, err := ParseRate(FormatRate(r)); err != nil || got != r {
			t.Errorf("ParseRate(FormatRate(%d) = %q) = %d, %v", r, FormatRate(r), got, err)
		}
	}
	if got := FormatRate(50 << 20); got != "50MiB/s" {
		t.Errorf("FormatRate(50M) = %q; want 50MiB/s", got)
	}
}
