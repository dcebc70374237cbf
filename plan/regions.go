package plan

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/kcopyd/kcopyd/units"
)

// RegionsFormat says what the fields of a regions-file line are.
type RegionsFormat int

const (
	// CopyRegions lines are "SRC_OFFSET LENGTH DEST_OFFSET" (kcopyd copy
	// and verify --regions).
	CopyRegions RegionsFormat = iota
	// ZeroRegions lines are "OFFSET LENGTH" (kcopyd zero --regions): the
	// offset is Dest.
	ZeroRegions
)

// Syntax returns the fields of a line in format f, as messages spell them.
func (f RegionsFormat) Syntax() string {
	if f == ZeroRegions {
		return "OFFSET LENGTH"
	}
	return "SRC_OFFSET LENGTH DEST_OFFSET"
}

// MaxRegionsLine is the longest line a regions file may have, in bytes.
const MaxRegionsLine = 4096

// A ListedRegion is a region read from line Line (from 1) of a regions
// file.
type ListedRegion struct {
	Region
	Line int
}

// A RegionsLineError reports a bad line of a regions file; Err says why
// (for a bad number, an error wrapping units.ErrBadSize).
type RegionsLineError struct {
	Line int
	Err  error
}

// Error implements error.
func (e *RegionsLineError) Error() string {
	return fmt.Sprintf("regions file line %d: %v", e.Line, e.Err)
}

// Unwrap returns Err.
func (e *RegionsLineError) Unwrap() error { return e.Err }

// ParseRegions reads a whole regions file: one region per line in format
// f, each number a size as units.ParseSize reads it ("4096", "64K",
// "8s"), separated by blanks or tabs; "#" starts a comment that runs to
// the end of the line, and blank lines are skipped. It returns every
// region in file order, with Dests nil (every destination), or the first
// error: a *RegionsLineError naming the line for a line with the wrong
// number of fields, a bad number, a zero LENGTH, a range ending beyond the
// largest int64, or a line longer than MaxRegionsLine. An input without
// any region is an error too.
func ParseRegions(r io.Reader, f RegionsFormat) ([]ListedRegion, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), MaxRegionsLine)
	var out []ListedRegion
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
		rg, err := parseRegionFields(fields, f)
		if err != nil {
			return nil, &RegionsLineError{Line: line, Err: err}
		}
		out = append(out, ListedRegion{Region: rg, Line: line})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &RegionsLineError{Line: line + 1, Err: fmt.Errorf("line longer than %d bytes", MaxRegionsLine)}
		}
		return nil, fmt.Errorf("reading regions: %w", err)
	}
	if len(out) == 0 {
		return nil, errors.New("regions file has no regions (want lines of " + f.Syntax() + ")")
	}
	return out, nil
}

// parseRegionFields parses the fields of one line.
func parseRegionFields(fields []string, f RegionsFormat) (Region, error) {
	want := 3
	names := [3]string{"source offset", "length", "destination offset"}
	if f == ZeroRegions {
		want = 2
		names = [3]string{"offset", "length"}
	}
	if len(fields) != want {
		return Region{}, fmt.Errorf("want %d fields (%s), got %d", want, f.Syntax(), len(fields))
	}
	var v [3]int64
	for i, s := range fields {
		n, err := units.ParseSize(s)
		if err != nil {
			return Region{}, fmt.Errorf("%s: %w", names[i], err)
		}
		v[i] = n
	}
	rg := Region{Src: v[0], Len: v[1], Dest: v[2]}
	if f == ZeroRegions {
		rg = Region{Dest: v[0], Len: v[1]}
	}
	if rg.Len == 0 {
		return Region{}, errors.New("length must be positive")
	}
	const maxInt64 = 1<<63 - 1
	if rg.Src > maxInt64-rg.Len || rg.Dest > maxInt64-rg.Len {
		return Region{}, errors.New("region ends beyond the largest possible offset")
	}
	return rg, nil
}
