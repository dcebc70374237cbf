package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Size suffixes. Every multiple is a power of 1024, except "s", which
// counts 512-byte sectors as the kernel's dm tables do.
var sizeSuffixes = []struct {
	suffix string
	shift  uint
}{
	// Longest first, so that "KiB" is not taken for "K" followed by junk.
	{"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40},
	{"k", 10}, {"K", 10}, {"M", 20}, {"G", 30}, {"T", 40},
	{"s", 9},
}

// errBadSize is wrapped by every error parseSize returns.
var errBadSize = errors.New("bad size")

// parseSize parses a non-negative byte count: a decimal integer optionally
// followed by one suffix: k, K or KiB (1024), M or MiB, G or GiB, T or TiB
// (powers of 1024), or s (512-byte sectors). It rejects signs, spaces,
// fractions, empty numbers and values that overflow int64.
func parseSize(s string) (int64, error) {
	num, shift := s, uint(0)
	for _, sf := range sizeSuffixes {
		if strings.HasSuffix(s, sf.suffix) {
			num, shift = s[:len(s)-len(sf.suffix)], sf.shift
			break
		}
	}
	if num == "" {
		return 0, fmt.Errorf("%w %q: no number (want e.g. 4096, 64K, 1MiB, 8s)", errBadSize, s)
	}
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w %q: want a whole number of bytes with an optional suffix k/K/KiB, M/MiB, G/GiB, T/TiB (powers of 1024) or s (512-byte sectors)", errBadSize, s)
		}
	}
	n, err := strconv.ParseUint(num, 10, 63)
	if err != nil || n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%w %q: too large", errBadSize, s)
	}
	return int64(n) << shift, nil
}

// formatSize renders n bytes for humans, exactly when it is a whole number
// of KiB, MiB, ... (so that it can be pasted back as an option), else as a
// plain byte count.
func formatSize(n int64) string {
	units := []struct {
		name  string
		shift uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}}
	for _, u := range units {
		if n > 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// humanSize renders n bytes approximately ("1.5 GiB"), for progress lines.
func humanSize(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", n)
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}

// sizeFlag is a pflag.Value holding a size parsed with parseSize.
type sizeFlag struct {
	n   int64
	set bool
}

// String implements pflag.Value.
func (f *sizeFlag) String() string {
	if !f.set {
		return ""
	}
	return formatSize(f.n)
}

// Set implements pflag.Value.
func (f *sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	f.n, f.set = n, true
	return nil
}

// Type implements pflag.Value.
func (f *sizeFlag) Type() string { return "SIZE" }
