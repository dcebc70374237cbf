package clone

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/kcopyd/kcopyd/device"
)

// The metadata device holds two slots, each a 4 KiB header followed by the
// bitmap, one bit per region (bit r is bit r%8 of byte r/8), padded to
// 4 KiB pages:
//
//	slot 0: header | bitmap     slot 1: header | bitmap
//
// A header holds a magic string, a version, a CRC-32C, a generation number,
// the geometry the clone was made for (region size, SOURCE and DEST sizes,
// region count), the number of hydrated regions and the identities of
// SOURCE and DEST. The CRC covers the header (with the CRC field zero) and
// the whole bitmap of its slot, so a slot whose write was torn by a crash
// fails its check.
//
// A commit writes the slot that does not hold the newest generation, with
// generation+1, then flushes the metadata device; the slot holding the
// newest generation is never written, so one valid slot survives a crash
// at any point. Loading takes the valid slot with the higher generation.
const (
	metaMagic      = "kcpclone"
	metaVersion    = 1
	metaHeaderSize = 4096
	metaPageSize   = 4096
	maxIDLen       = 1024

	// regionsPerPage is the number of regions one bitmap page describes.
	regionsPerPage = metaPageSize * 8
)

// header field offsets.
const (
	hMagic    = 0
	hVersion  = 8
	hCRC      = 12
	hGen      = 16
	hRegion   = 24
	hSource   = 32
	hDest     = 40
	hRegions  = 48
	hHydrated = 56
	hIDLens   = 64
	hIDs      = 68
)

// geometry is what a metadata file was made for; a clone refuses metadata
// of another geometry.
type geometry struct {
	regionSize int64
	sourceSize int64
	destSize   int64
	regions    int64
	sourceID   string // "" when SOURCE has no stable identity
	destID     string
}

// MetadataSize returns the size in bytes of the metadata for a SOURCE of
// sourceSize bytes in regions of regionSize bytes: two slots of a 4 KiB
// header and one bit per region rounded up to 4 KiB. A metadata device
// must be at least this large.
func MetadataSize(sourceSize, regionSize int64) int64 {
	return 2 * slotSize(regionCount(sourceSize, regionSize))
}

func regionCount(size, regionSize int64) int64 { return (size + regionSize - 1) / regionSize }

func bitmapLen(regions int64) int64 {
	return (regions + 8*metaPageSize - 1) / (8 * metaPageSize) * metaPageSize
}

func slotSize(regions int64) int64 { return metaHeaderSize + bitmapLen(regions) }

// meta is the on-disk metadata of one clone. Its methods are called with
// Clone.commitMu held (or before the clone is shared).
type meta struct {
	dev  device.Device
	geo  geometry
	gen  uint64 // generation of the newest committed slot
	slot int    // the slot holding gen
	blen int64  // bitmap bytes per slot
	buf  []byte // encoded bitmap snapshot, blen bytes
}

// encodeHeader returns the header of generation gen with hydrated regions,
// CRC field zero.
func (m *meta) encodeHeader(gen uint64, hydrated int64) []byte {
	h := make([]byte, metaHeaderSize)
	copy(h[hMagic:], metaMagic)
	le := binary.LittleEndian
	le.PutUint32(h[hVersion:], metaVersion)
	le.PutUint64(h[hGen:], gen)
	le.PutUint64(h[hRegion:], uint64(m.geo.regionSize))
	le.PutUint64(h[hSource:], uint64(m.geo.sourceSize))
	le.PutUint64(h[hDest:], uint64(m.geo.destSize))
	le.PutUint64(h[hRegions:], uint64(m.geo.regions))
	le.PutUint64(h[hHydrated:], uint64(hydrated))
	le.PutUint16(h[hIDLens:], uint16(len(m.geo.sourceID)))
	le.PutUint16(h[hIDLens+2:], uint16(len(m.geo.destID)))
	n := copy(h[hIDs:], m.geo.sourceID)
	copy(h[hIDs+n:], m.geo.destID)
	return h
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func slotCRC(header, bitmap []byte) uint32 {
	var h [metaHeaderSize]byte
	copy(h[:], header)
	clear(h[hCRC : hCRC+4])
	return crc32.Update(crc32.Checksum(h[:], castagnoli), castagnoli, bitmap)
}

// encode writes the words of b into m.buf, little-endian.
func (m *meta) encode(b bitmap) {
	clear(m.buf)
	for i, w := range b {
		binary.LittleEndian.PutUint64(m.buf[8*i:], w)
	}
}

// decodeBitmap turns an on-disk bitmap into words.
func decodeBitmap(p []byte, regions int64) bitmap {
	b := newBitmap(regions)
	for i := range b {
		var w [8]byte
		copy(w[:], p[8*i:])
		b[i] = binary.LittleEndian.Uint64(w[:])
	}
	return b
}

// slotState is what loading found in one slot.
type slotState struct {
	blank bool   // header all zeroes: never written
	err   error  // why the slot is not valid; nil when it is
	gen   uint64 // valid slots only
	geo   geometry
	bits  []byte
	count int64 // hydrated regions recorded in the header
}

// readSlot reads and checks slot s of a metadata device laid out for
// regions regions.
func readSlot(dev device.Device, s int, regions int64) slotState {
	size := slotSize(regions)
	p := make([]byte, size)
	if _, err := dev.ReadAt(p, int64(s)*size); err != nil && !errors.Is(err, io.EOF) {
		return slotState{err: err}
	}
	h := p[:metaHeaderSize]
	if bytes.Count(h, []byte{0}) == len(h) {
		return slotState{blank: true, err: errors.New("slot never written")}
	}
	if string(h[:len(metaMagic)]) != metaMagic {
		return slotState{err: ErrNotMetadata}
	}
	le := binary.LittleEndian
	if v := le.Uint32(h[hVersion:]); v != metaVersion {
		return slotState{err: fmt.Errorf("%w: version %d, want %d", ErrMetadataCorrupt, v, metaVersion)}
	}
	if got, want := slotCRC(h, p[metaHeaderSize:]), le.Uint32(h[hCRC:]); got != want {
		return slotState{err: fmt.Errorf("%w: checksum %#08x, want %#08x", ErrMetadataCorrupt, got, want)}
	}
	st := slotState{gen: le.Uint64(h[hGen:]), bits: p[metaHeaderSize:], count: int64(le.Uint64(h[hHydrated:]))}
	st.geo = geometry{
		regionSize: int64(le.Uint64(h[hRegion:])),
		sourceSize: int64(le.Uint64(h[hSource:])),
		destSize:   int64(le.Uint64(h[hDest:])),
		regions:    int64(le.Uint64(h[hRegions:])),
	}
	sl, dl := int(le.Uint16(h[hIDLens:])), int(le.Uint16(h[hIDLens+2:]))
	if sl > maxIDLen || dl > maxIDLen {
		return slotState{err: fmt.Errorf("%w: identity lengths %d and %d", ErrMetadataCorrupt, sl, dl)}
	}
	st.geo.sourceID = string(h[hIDs : hIDs+sl])
	st.geo.destID = string(h[hIDs+sl : hIDs+sl+dl])
	return st
}

// peekRegionSize returns the region size recorded in the metadata on dev
// for a SOURCE of sourceSize bytes, or 0 when dev holds none. It lets a
// clone reopen its metadata without being told the region size. The region
// size of slot 0's header is taken when it has the magic; otherwise (slot 0
// torn by a crash) slot 1 is looked for at the offset each possible region
// size would put it. The result is a hint: loadMeta checks the slot fully.
func peekRegionSize(dev device.Device, sourceSize int64) int64 {
	if rs := headerRegionSize(dev, 0); rs != 0 {
		return rs
	}
	for rs := int64(MinRegionSize); rs <= MaxRegionSize; rs <<= 1 {
		if headerRegionSize(dev, slotSize(regionCount(sourceSize, rs))) == rs {
			return rs
		}
	}
	return 0
}

// headerRegionSize returns the region size in the header at off, or 0
// when there is no header with the magic there.
func headerRegionSize(dev device.Device, off int64) int64 {
	h := make([]byte, metaHeaderSize)
	if _, err := dev.ReadAt(h, off); err != nil || string(h[:len(metaMagic)]) != metaMagic {
		return 0
	}
	return int64(binary.LittleEndian.Uint64(h[hRegion:]))
}

// loadMeta opens the metadata on dev for geometry geo: it formats a blank
// device (both headers all zeroes) and otherwise loads the newest valid
// slot, which must match geo. It returns the bitmap and whether the
// device was formatted.
func loadMeta(dev device.Device, geo geometry) (*meta, bitmap, error) {
	m := &meta{dev: dev, geo: geo, blen: bitmapLen(geo.regions), slot: 1}
	m.buf = make([]byte, m.blen)
	if need := 2 * slotSize(geo.regions); dev.Size() < need {
		return nil, nil, fmt.Errorf("%w: metadata %s has %d bytes, this clone needs %d (MetadataSize)",
			ErrMetadataTooSmall, device.Name(dev), dev.Size(), need)
	}
	s0, s1 := readSlot(dev, 0, geo.regions), readSlot(dev, 1, geo.regions)
	if s0.blank && s1.blank {
		return m, newBitmap(geo.regions), nil
	}
	if s1.blank && errors.Is(s0.err, ErrMetadataCorrupt) {
		// The first commit (to slot 0) was torn: nothing was ever
		// committed, so this is still a new clone.
		return m, newBitmap(geo.regions), nil
	}
	best, slot := s0, 0
	if s1.err == nil && (s0.err != nil || s1.gen > s0.gen) {
		best, slot = s1, 1
	}
	if best.err != nil {
		if errors.Is(s0.err, ErrNotMetadata) || s0.blank && errors.Is(s1.err, ErrNotMetadata) {
			return nil, nil, fmt.Errorf("%w: %s", ErrNotMetadata, device.Name(dev))
		}
		return nil, nil, fmt.Errorf("%w: metadata %s has no valid slot (slot 0: %v; slot 1: %v)", ErrMetadataCorrupt, device.Name(dev), s0.err, s1.err)
	}
	if err := geo.check(best.geo); err != nil {
		return nil, nil, fmt.Errorf("metadata %s: %w", device.Name(dev), err)
	}
	b := decodeBitmap(best.bits, geo.regions)
	if b.nextSet(geo.regions, int64(len(b))*64) < int64(len(b))*64 || b.count() != best.count {
		return nil, nil, fmt.Errorf("%w: metadata %s: bitmap does not match its header", ErrMetadataCorrupt, device.Name(dev))
	}
	m.gen, m.slot = best.gen, slot
	return m, b, nil
}

// check returns an error wrapping ErrMetadataMismatch when metadata made
// for old does not belong to a clone of geometry g. Identities are
// compared only when both are known.
func (g geometry) check(old geometry) error {
	switch {
	case old.regionSize != g.regionSize:
		return fmt.Errorf("%w: made with a region size of %d bytes, not %d", ErrMetadataMismatch, old.regionSize, g.regionSize)
	case old.sourceSize != g.sourceSize:
		return fmt.Errorf("%w: made for a SOURCE of %d bytes, this SOURCE has %d", ErrMetadataMismatch, old.sourceSize, g.sourceSize)
	case old.destSize != g.destSize:
		return fmt.Errorf("%w: made for a DEST of %d bytes, this DEST has %d", ErrMetadataMismatch, old.destSize, g.destSize)
	case old.regions != g.regions:
		return fmt.Errorf("%w: %d regions, want %d", ErrMetadataCorrupt, old.regions, g.regions)
	case old.sourceID != "" && g.sourceID != "" && old.sourceID != g.sourceID:
		return fmt.Errorf("%w: made for SOURCE %q, this SOURCE is %q", ErrMetadataMismatch, old.sourceID, g.sourceID)
	case old.destID != "" && g.destID != "" && old.destID != g.destID:
		return fmt.Errorf("%w: made for DEST %q, this DEST is %q", ErrMetadataMismatch, old.destID, g.destID)
	}
	return nil
}

// write stores the snapshot in m.buf as generation m.gen+1 in the slot
// that does not hold m.gen, writing only the bitmap pages in dirty (a set
// of page numbers; nil means every page) and then the header, and flushes
// the metadata device. On success that slot becomes the newest; on error
// nothing changes in m and the slot may be torn, which its CRC detects.
func (m *meta) write(dirty bitmap, hydrated int64) error {
	s := 1 - m.slot
	base := int64(s) * slotSize(m.geo.regions)
	pages := m.blen / metaPageSize
	for p := int64(0); p < pages; {
		if dirty != nil {
			if p = dirty.nextSet(p, pages); p == pages {
				break
			}
		}
		q := pages
		if dirty != nil {
			q = dirty.nextClear(p, pages)
		}
		if _, err := m.dev.WriteAt(m.buf[p*metaPageSize:q*metaPageSize], base+metaHeaderSize+p*metaPageSize); err != nil {
			return err
		}
		p = q
	}
	h := m.encodeHeader(m.gen+1, hydrated)
	binary.LittleEndian.PutUint32(h[hCRC:], slotCRC(h, m.buf))
	if _, err := m.dev.WriteAt(h, base); err != nil {
		return err
	}
	if err := flush(m.dev); err != nil {
		return err
	}
	m.gen++
	m.slot = s
	return nil
}

// flush flushes d when it has a volatile cache.
func flush(d device.Device) error {
	if f, ok := d.(device.Flusher); ok {
		return f.Flush()
	}
	return nil
}
