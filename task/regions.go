package task

import (
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/kcopyd/kcopyd/location"
	"github.com/kcopyd/kcopyd/plan"
)

// ParseRegions reads a whole regions file in format f (plan.ParseRegions)
// as Regions that remember their lines.
func ParseRegions(r io.Reader, f plan.RegionsFormat) ([]Region, error) {
	listed, err := plan.ParseRegions(r, f)
	if err != nil {
		return nil, err
	}
	out := make([]Region, len(listed))
	for i, l := range listed {
		out[i] = Region{Region: l.Region, Line: l.Line}
	}
	return out, nil
}

// A Span is a region given by its start and length, as on a command line,
// rather than listed: Offset is in the source (a copy or comparison) or in
// the destinations (a zeroing), DestOffset in the destinations of a copy.
// Without HasLength the span runs to the end of the source (copy), or of
// each destination (zero).
type Span struct {
	Offset, DestOffset, Length int64
	HasLength                  bool
}

// CopyRegion returns the region of s over the source src. An empty source,
// or a Length of 0, gives an empty region, as dd and cp copy nothing and
// succeed; an Offset at the end of a non-empty source without a Length is
// refused as a mistake, and so is one beyond it. Ranges past the largest
// int64 are refused with an error wrapping ErrOptions. Whether the region
// fits the source and the destinations is CheckRanges's to say.
func (s Span) CopyRegion(src *location.Location, names Names) (Region, error) {
	n := names.withDefaults()
	off := s.Offset
	if off < 0 {
		return Region{}, &optionsError{fmt.Sprintf("%s %d is negative", n.Offset, off)}
	}
	if off > src.Size || off == src.Size && src.Size > 0 && !s.HasLength {
		return Region{}, fmt.Errorf("%s %d is at or beyond the end of the source %s (%d bytes): give an %s below %d", n.Offset, off, src.Spec, src.Size, n.Offset, src.Size)
	}
	length := src.Size - off
	if s.HasLength {
		length = s.Length
	}
	if err := s.checkEnds(off, length, n); err != nil {
		return Region{}, err
	}
	return Region{Region: plan.Region{Src: off, Dest: s.DestOffset, Len: length}}, nil
}

// ZeroRegions returns the regions of s over the destinations: with a
// Length, one; without, one per distinct destination size, from Offset to
// that end (Region.Dests naming its destinations when the sizes differ).
// An Offset at or beyond the end of a non-empty destination is refused.
func (s Span) ZeroRegions(dests []*location.Location, names Names) ([]Region, error) {
	n := names.withDefaults()
	off := s.Offset
	if off < 0 {
		return nil, &optionsError{fmt.Sprintf("%s %d is negative", n.Offset, off)}
	}
	if s.HasLength {
		if err := s.checkEnds(off, s.Length, n); err != nil {
			return nil, err
		}
		return []Region{{Region: plan.Region{Dest: off, Len: s.Length}}}, nil
	}
	bySize := map[int64][]int{}
	var sizes []int64
	for i, l := range dests {
		if off > l.Size || off == l.Size && l.Size > 0 {
			return nil, fmt.Errorf("%s %d is at or beyond the end of %s (%d bytes)", n.Offset, off, l.Spec, l.Size)
		}
		if _, ok := bySize[l.Size]; !ok {
			sizes = append(sizes, l.Size)
		}
		bySize[l.Size] = append(bySize[l.Size], i)
	}
	slices.Sort(sizes)
	regions := make([]Region, 0, len(sizes))
	for _, sz := range sizes {
		rg := Region{Region: plan.Region{Dest: off, Len: sz - off}}
		if len(sizes) > 1 {
			rg.Dests = bySize[sz]
		}
		regions = append(regions, rg)
	}
	return regions, nil
}

// checkEnds refuses a negative length, and ranges from off or DestOffset
// that would end past the largest int64.
func (s Span) checkEnds(off, length int64, n Names) error {
	switch {
	case length < 0:
		return &optionsError{fmt.Sprintf("%s %d is negative", n.Length, length)}
	case length > math.MaxInt64-off:
		return &optionsError{fmt.Sprintf("%s %d plus %s %d is beyond the largest possible offset (%d)", n.Offset, off, n.Length, length, int64(math.MaxInt64))}
	case s.DestOffset > math.MaxInt64-length:
		return &optionsError{fmt.Sprintf("%s %d plus %s %d is beyond the largest possible offset (%d)", n.DestOffset, s.DestOffset, n.Length, length, int64(math.MaxInt64))}
	}
	return nil
}
