package mapfile

import (
	"errors"
	"fmt"
	"iter"
	"math"
	"strings"
)

// MaxDests is the most destinations a job has, as for kcopyd.
const MaxDests = 8

// Kind says what a job does.
type Kind string

const (
	// KindCopy copies a source to one or more destinations.
	KindCopy Kind = "copy"
	// KindZero zeroes one or more destinations; the job has no source.
	KindZero Kind = "zero"
)

// Location is one device of a job as the map records it.
type Location struct {
	// Name is the location as the user gave it (a path or an NBD URI).
	// It is recorded for the reader; Check does not compare it, so the
	// same file reached by another path still matches.
	Name string
	// ID is the identity that Check compares: for a file or block device
	// its device and inode ("file:DEV:INO"), for an NBD export its URI.
	// It must not be empty.
	ID string
	// Size is the device's size in bytes when the job was set up. Check
	// compares it: a device that grew or shrank is another job. For a
	// destination the job creates, record the size it is created with, so
	// that the rerun, which finds it existing, matches.
	Size int64
}

// Region is one contiguous piece of a job, in absolute device bytes.
type Region struct {
	// SrcOffset is the byte offset on the source; 0 for a zero job.
	SrcOffset int64
	// Length is the number of bytes; more than 0.
	Length int64
	// DestOffset is the byte offset on every destination.
	DestOffset int64
}

// Job describes the job a map belongs to. Its byte space, in which every
// map offset is given, is the job's regions laid end to end in order:
// region 0 covers job bytes [0, Regions[0].Length), region 1 starts where
// region 0 ends, and so on.
type Job struct {
	// Kind is KindCopy or KindZero.
	Kind Kind
	// Source is the copied location; the zero Location for a zero job.
	Source Location
	// Dests are the 1 to MaxDests destinations in argument order; the
	// index of a destination is its number in failed ranges.
	Dests []Location
	// Regions are the job's pieces; a job without regions is empty and
	// complete from the start.
	Regions []Region
	// ChunkSize is the sub-job size in bytes, recorded for the reader (0:
	// not recorded). Check does not compare it: ranges are byte-exact, so
	// a rerun may use another size.
	ChunkSize int64
}

// Length returns the job's length in bytes, the sum of its region
// lengths. It assumes a valid job.
func (j Job) Length() int64 {
	var n int64
	for _, r := range j.Regions {
		n += r.Length
	}
	return n
}

// Split yields the pieces of the job range [off, off+n) per region: the
// region's index and the absolute source and destination bytes of the
// piece, in ascending order. A range outside the job yields only its part
// inside.
func (j Job) Split(off, n int64) iter.Seq2[int, Region] {
	return func(yield func(int, Region) bool) {
		var start int64 // job offset of region i
		for i, r := range j.Regions {
			lo, hi := max(off, start), min(off+n, start+r.Length)
			if lo < hi {
				p := Region{SrcOffset: r.SrcOffset + lo - start, Length: hi - lo, DestOffset: r.DestOffset + lo - start}
				if j.Kind == KindZero {
					p.SrcOffset = 0
				}
				if !yield(i, p) {
					return
				}
			}
			start += r.Length
		}
	}
}

// clone returns a copy of j that shares no slices with it.
func (j Job) clone() Job {
	j.Dests = append([]Location(nil), j.Dests...)
	j.Regions = append([]Region(nil), j.Regions...)
	return j
}

// validate returns an error wrapping ErrBadJob when j is not a job a map
// can describe.
func (j Job) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadJob}, args...)...)
	}
	switch j.Kind {
	case KindCopy:
		if err := j.Source.validate(); err != nil {
			return bad("source: %v", err)
		}
	case KindZero:
		if j.Source != (Location{}) {
			return bad("a zero job has no source")
		}
	default:
		return bad("kind %q is neither %q nor %q", j.Kind, KindCopy, KindZero)
	}
	if len(j.Dests) == 0 || len(j.Dests) > MaxDests {
		return bad("%d destinations; want 1 to %d", len(j.Dests), MaxDests)
	}
	for i, d := range j.Dests {
		if err := d.validate(); err != nil {
			return bad("destination %d: %v", i, err)
		}
	}
	if j.ChunkSize < 0 {
		return bad("chunk size %d is negative", j.ChunkSize)
	}
	var total int64
	for i, r := range j.Regions {
		if r.Length <= 0 || r.SrcOffset < 0 || r.DestOffset < 0 {
			return bad("region %d (%d %d %d): offsets must be 0 or more and the length more than 0", i, r.SrcOffset, r.Length, r.DestOffset)
		}
		if j.Kind == KindZero && r.SrcOffset != 0 {
			return bad("region %d: a zero job has no source offset", i)
		}
		if r.Length > math.MaxInt64-total || r.SrcOffset > math.MaxInt64-r.Length || r.DestOffset > math.MaxInt64-r.Length {
			return bad("region %d: offsets overflow 64 bits", i)
		}
		total += r.Length
	}
	return nil
}

// validate checks that a location can be written and compared.
func (l Location) validate() error {
	switch {
	case l.ID == "":
		return errors.New("empty identity")
	case l.Size < 0:
		return fmt.Errorf("size %d is negative", l.Size)
	case strings.ContainsAny(l.Name, "\x00") || strings.ContainsAny(l.ID, "\x00"):
		return errors.New("NUL in name or identity")
	}
	return nil
}

// Check returns nil when job is the job the map belongs to: same kind,
// source and destination identities and sizes, destinations in the same
// order, and the same regions. Otherwise it returns a *MismatchError
// (wrapping ErrMismatch) naming the first difference, so that a command
// can refuse a map from another command before writing anything. Names
// and the chunk size are not compared (see Location.Name, Job.ChunkSize).
func (m *Map) Check(job Job) error {
	have := m.job // immutable after New or Load
	diff := func(what, inMap, now string) error {
		return &MismatchError{What: what, Map: inMap, Job: now}
	}
	if have.Kind != job.Kind {
		return diff("kind", string(have.Kind), string(job.Kind))
	}
	if have.Kind == KindCopy {
		if err := checkLocation("source", have.Source, job.Source); err != nil {
			return err
		}
	}
	if len(have.Dests) != len(job.Dests) {
		return diff("number of destinations", fmt.Sprint(len(have.Dests)), fmt.Sprint(len(job.Dests)))
	}
	for i := range have.Dests {
		if err := checkLocation(fmt.Sprintf("destination %d", i), have.Dests[i], job.Dests[i]); err != nil {
			return err
		}
	}
	if len(have.Regions) != len(job.Regions) {
		return diff("number of regions", fmt.Sprint(len(have.Regions)), fmt.Sprint(len(job.Regions)))
	}
	for i, r := range have.Regions {
		if r != job.Regions[i] {
			return diff(fmt.Sprintf("region %d (source offset, length, destination offset)", i), regionString(have.Kind, r), regionString(job.Kind, job.Regions[i]))
		}
	}
	return nil
}

// checkLocation compares the identity and size of one location.
func checkLocation(what string, have, now Location) error {
	if have.ID != now.ID {
		return &MismatchError{What: what + " identity", Map: have.ID + " (" + have.Name + ")", Job: now.ID + " (" + now.Name + ")"}
	}
	if have.Size != now.Size {
		return &MismatchError{What: what + " size", Map: fmt.Sprint(have.Size), Job: fmt.Sprint(now.Size)}
	}
	return nil
}

// regionString formats a region as in the map file.
func regionString(k Kind, r Region) string {
	src := fmt.Sprint(r.SrcOffset)
	if k == KindZero {
		src = "-"
	}
	return fmt.Sprintf("%s %d %d", src, r.Length, r.DestOffset)
}
