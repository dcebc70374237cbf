package main

import (
	"fmt"
	"io"

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

// A regions file's format and errors are package plan's.
type regionsFormat = plan.RegionsFormat

const (
	copyRegions = plan.CopyRegions // "SRC_OFFSET LENGTH DEST_OFFSET" (copy, verify)
	zeroRegions = plan.ZeroRegions // "OFFSET LENGTH" (zero)
)

// parseRegions reads a whole regions file (plan.ParseRegions).
func parseRegions(r io.Reader, format regionsFormat) ([]region, error) {
	listed, err := plan.ParseRegions(r, format)
	if err != nil {
		return nil, err
	}
	out := make([]region, len(listed))
	for i, l := range listed {
		out[i] = region{line: l.Line, src: l.Src, len: l.Len, dest: l.Dest}
	}
	return out, nil
}
