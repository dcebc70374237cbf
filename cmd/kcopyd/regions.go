package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/kcopyd/kcopyd/plan"
)

// A region is one line of a --regions file, or the region given by
// --offset, --length and --dest-offset. Offsets and lengths are bytes.
type region struct {
	line int   // line number in the regions file; 0 for the command-line region
	src  int64 // source offset (copy, verify); unused by zero
	len  int64
	dest int64 // destination offset, the same for every destination
	// dests lists the destinations (by argument index) the region is
	// for; nil means all. Only zero without --length sets it, when the
	// destinations differ in size.
	dests []int
}

// has reports whether r is for destination i.
func (r region) has(i int) bool { return plan.Region{Dests: r.dests}.Has(i) }

// srcEnd and destEnd return the ends of r's source and destination ranges.
func (r region) srcEnd() int64  { return r.src + r.len }
func (r region) destEnd() int64 { return r.dest + r.len }

// where names r in messages.
func (r region) where() string {
	if r.line == 0 {
		return "the region"
	}
	return fmt.Sprintf("regions line %d", r.line)
}

// regionsLineError reports a bad line of a regions file.
type regionsLineError struct {
	Line int
	Err  error
}

func (e *regionsLineError) Error() string {
	return fmt.Sprintf("regions file line %d: %v", e.Line, e.Err)
}

func (e *regionsLineError) Unwrap() error { return e.Err }

// maxRegionsLine is the longest line a regions file may have.
const maxRegionsLine = 4096

// regionsFormat describes the fields of one regions-file line.
type regionsFormat int

const (
	// copyRegions lines are "SRC_OFFSET LENGTH DEST_OFFSET" (copy, verify).
	copyRegions regionsFormat = iota
	// zeroRegions lines are "OFFSET LENGTH" (zero).
	zeroRegions
)

func (f regionsFormat) syntax() string {
	if f == zeroRegions {
		return "OFFSET LENGTH"
	}
	return "SRC_OFFSET LENGTH DEST_OFFSET"
}

// parseRegions reads a whole regions file: one region per line in the
// given format, sizes as parseSize accepts them, separated by blanks or
// tabs; "#" starts a comment that runs to the end of the line; blank lines
// are skipped. It returns every region in file order or the first error, a
// *regionsLineError naming the line. LENGTH must be positive and no range
// may end beyond the largest int64. An input without any region is an
// error.
func parseRegions(r io.Reader, format regionsFormat) ([]region, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxRegionsLine)
	var out []region
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		rg, err := parseRegionFields(fields, format)
		if err != nil {
			return nil, &regionsLineError{Line: line, Err: err}
		}
		rg.line = line
		out = append(out, rg)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &regionsLineError{Line: line + 1, Err: fmt.Errorf("line longer than %d bytes", maxRegionsLine)}
		}
		return nil, fmt.Errorf("reading regions: %w", err)
	}
	if len(out) == 0 {
		return nil, errors.New("regions file has no regions (want lines of " + format.syntax() + ")")
	}
	return out, nil
}

func parseRegionFields(fields []string, format regionsFormat) (region, error) {
	want := 3
	if format == zeroRegions {
		want = 2
	}
	if len(fields) != want {
		return region{}, fmt.Errorf("want %d fields (%s), got %d", want, format.syntax(), len(fields))
	}
	var v [3]int64
	names := [3]string{"source offset", "length", "destination offset"}
	if format == zeroRegions {
		names = [3]string{"offset", "length"}
	}
	for i, f := range fields {
		n, err := parseSize(f)
		if err != nil {
			return region{}, fmt.Errorf("%s: %w", names[i], err)
		}
		v[i] = n
	}
	var rg region
	if format == zeroRegions {
		rg = region{dest: v[0], len: v[1]}
	} else {
		rg = region{src: v[0], len: v[1], dest: v[2]}
	}
	if rg.len == 0 {
		return region{}, errors.New("length must be positive")
	}
	const maxInt64 = 1<<63 - 1
	if rg.src > maxInt64-rg.len || rg.dest > maxInt64-rg.len {
		return region{}, errors.New("region ends beyond the largest possible offset")
	}
	return rg, nil
}
