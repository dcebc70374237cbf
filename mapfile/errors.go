package mapfile

import (
	"errors"
	"fmt"
)

// Errors when a map is created or checked against a job.
var (
	// ErrBadJob is returned by New when the job cannot be described: an
	// unknown kind, no or too many destinations, an empty identity, a
	// negative size or offset, an empty region, or lengths that overflow.
	ErrBadJob = errors.New("mapfile: invalid job")

	// ErrMismatch is returned (inside a *MismatchError) by Check when the
	// map belongs to another job.
	ErrMismatch = errors.New("mapfile: the map belongs to another job")
)

// Errors when a map file is read.
var (
	// ErrCorrupt is returned by Load and Parse when the file is not a
	// whole, well-formed map: truncated, without or with a wrong checksum
	// line, of an unknown format version, or with ranges that do not cover
	// the job exactly. The error says where and what.
	ErrCorrupt = errors.New("mapfile: corrupt map")
)

// MismatchError is returned by Check: What differs between the job in the
// map and the job given, with both values as text.
type MismatchError struct {
	What string // "kind", "source identity", "destination 1 size", "region 0 …"
	Map  string // the value recorded in the map
	Job  string // the value of the job given to Check
}

// Error implements error.
func (e *MismatchError) Error() string {
	return fmt.Sprintf("mapfile: the map belongs to another job: %s is %s in the map but %s now", e.What, e.Map, e.Job)
}

// Unwrap returns ErrMismatch.
func (e *MismatchError) Unwrap() error { return ErrMismatch }
