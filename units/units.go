// Package units parses and renders the byte counts and rates of the
// kcopyd command's options, regions files and rate files, so that a Go
// program reads "64K", "1MiB", "8s" or "50M/s" as kcopyd does.
//
// Every multiple is a power of 1024, except "s", which counts 512-byte
// sectors as the kernel's dm tables do.
package units

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrBadSize is wrapped by every error ParseSize and ParseRate return.
var ErrBadSize = errors.New("bad size")

// sizeSuffixes are the suffixes ParseSize accepts, longest first, so that
// "KiB" is not taken for "K" followed by junk.
var sizeSuffixes = []struct {
	suffix string
	shift  uint
}{
	{"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40},
	{"k", 10}, {"K", 10}, {"M", 20}, {"G", 30}, {"T", 40},
	{"s", 9},
}

// ParseSize parses a non-negative byte count: a decimal integer optionally
// followed by one suffix: k, K or KiB (1024), M or MiB, G or GiB, T or TiB
// (powers of 1024), or s (512-byte sectors). It rejects signs, spaces,
// fractions, empty numbers and values that overflow int64, with an error
// wrapping ErrBadSize.
func ParseSize(s string) (int64, error) {
	num, shift := s, uint(0)
	for _, sf := range sizeSuffixes {
		if strings.HasSuffix(s, sf.suffix) {
			num, shift = s[:len(s)-len(sf.suffix)], sf.shift
			break
		}
	}
	if num == "" {
		return 0, fmt.Errorf("%w %q: no number (want e.g. 4096, 64K, 1MiB, 8s)", ErrBadSize, s)
	}
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w %q: want a whole number of bytes with an optional suffix k/K/KiB, M/MiB, G/GiB, T/TiB (powers of 1024) or s (512-byte sectors)", ErrBadSize, s)
		}
	}
	n, err := strconv.ParseUint(num, 10, 63)
	if err != nil || n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%w %q: too large", ErrBadSize, s)
	}
	return int64(n) << shift, nil
}

// FormatSize renders n bytes exactly, as a whole number of TiB, GiB, MiB
// or KiB when it is one (so that it can be given back to ParseSize), else
// as a plain byte count.
func FormatSize(n int64) string {
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

// HumanSize renders n bytes approximately for humans, with one decimal
// ("1.5 GiB", "512 B"), as progress lines do.
func HumanSize(n float64) string {
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

// ParseRate parses a rate in bytes per second: a size as ParseSize takes
// it with an optional "/s", or "0" or "unlimited" for no limit (0).
// Surrounding white space, such as a file's final newline, is ignored.
func ParseRate(s string) (int64, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(s, "/s")
	if s == "unlimited" {
		return 0, nil
	}
	return ParseSize(s)
}

// FormatRate renders a rate in bytes per second for messages: "unlimited"
// for 0, else FormatSize and "/s" ("50MiB/s"), which ParseRate reads back.
func FormatRate(rate int64) string {
	if rate == 0 {
		return "unlimited"
	}
	return FormatSize(rate) + "/s"
}
