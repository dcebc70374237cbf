package clone

import "errors"

// Errors returned by Open, before anything is written.
var (
	// ErrRegionSize is returned when the region size is not a power of
	// two between MinRegionSize and MaxRegionSize.
	ErrRegionSize = errors.New("clone: region size must be a power of two between 4 KiB and 1 GiB")

	// ErrDestTooSmall is returned when DEST is smaller than SOURCE.
	ErrDestTooSmall = errors.New("clone: DEST is smaller than SOURCE")

	// ErrSameDevice is returned when two of SOURCE, DEST and the metadata
	// device are the same storage or overlap on it.
	ErrSameDevice = errors.New("clone: devices overlap")

	// ErrMetadataMismatch is returned when the metadata was made for
	// another SOURCE, DEST or region size.
	ErrMetadataMismatch = errors.New("clone: metadata belongs to another clone")

	// ErrNotMetadata is returned when the metadata device holds data that
	// is not clone metadata (and is not blank).
	ErrNotMetadata = errors.New("clone: not clone metadata")

	// ErrMetadataCorrupt is returned when no slot of the metadata passes
	// its checks.
	ErrMetadataCorrupt = errors.New("clone: metadata corrupt")

	// ErrMetadataTooSmall is returned when the metadata device is smaller
	// than MetadataSize.
	ErrMetadataTooSmall = errors.New("clone: metadata device too small")
)
