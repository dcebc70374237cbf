package clone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"unsafe"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
)

// regionStart and regionEnd bound region r on the clone; the last region
// ends at Size.
func (c *Clone) regionStart(r int64) int64 { return r << c.shift }
func (c *Clone) regionEnd(r int64) int64   { return min((r+1)<<c.shift, c.size) }

// run returns whether the region holding pos is hydrated, and where the
// run of regions in the same state ends, at most at end.
func (c *Clone) run(pos, end int64) (hydrated bool, runEnd int64) {
	r := pos >> c.shift
	last := (end - 1) >> c.shift
	c.mu.Lock()
	hydrated = c.mu.bits.test(r)
	var next int64
	if hydrated {
		next = c.mu.bits.nextClear(r, last+1)
	} else {
		next = c.mu.bits.nextSet(r, last+1)
	}
	c.mu.Unlock()
	return hydrated, min(next<<c.shift, end)
}

// checkAlign enforces OffsetAlign and MemAlign; a request ending at Size
// is accepted at any length.
func (c *Clone) checkAlign(off int64, p []byte, n int64) error {
	if a := int64(c.limits.OffsetAlign); a > 1 && (off%a != 0 || (n%a != 0 && off+n != c.size)) {
		return fmt.Errorf("%w: [%d, +%d) is not a multiple of %d bytes", device.ErrAlignment, off, n, a)
	}
	if a := c.limits.MemAlign; a > 1 && len(p) > 0 && addrOf(p)%uintptr(a) != 0 {
		return fmt.Errorf("%w: buffer not aligned to %d bytes", device.ErrAlignment, a)
	}
	return nil
}

// ReadAt implements device.Device. Hydrated regions are read from DEST,
// the others from SOURCE, one request per run of regions in the same
// state. A SOURCE failure is returned as is (an *device.IOError naming
// SOURCE) and counted in Status.SourceReadErrors.
func (c *Clone) ReadAt(p []byte, off int64) (int, error) {
	if err := c.begin(); err != nil {
		return 0, c.ioError(device.OpRead, off, int64(len(p)), err)
	}
	defer c.end()
	if off < 0 {
		return 0, c.ioError(device.OpRead, off, int64(len(p)), device.ErrOutOfRange)
	}
	if off >= c.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), c.size-off)
	if err := c.checkAlign(off, p, n); err != nil {
		return 0, c.ioError(device.OpRead, off, int64(len(p)), err)
	}
	for done := int64(0); done < n; {
		pos := off + done
		hyd, end := c.run(pos, off+n)
		dev := c.src
		if hyd {
			dev = c.dst
		}
		m, err := dev.ReadAt(p[done:done+end-pos], pos)
		done += int64(m)
		if err != nil && (done < n || !errors.Is(err, io.EOF)) {
			if !hyd {
				c.mu.Lock()
				c.mu.readErrs++
				c.mu.Unlock()
			}
			return int(done), err
		}
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// writeOp is the data of a write-like request.
type writeOp struct {
	p    []byte // WriteAt data, starting at base; nil for write-zeroes
	base int64
}

func (w writeOp) apply(d device.Device, off, n int64) error {
	if w.p == nil {
		return d.(device.WriteZeroer).WriteZeroes(off, n)
	}
	_, err := d.WriteAt(w.p[off-w.base:off-w.base+n], off)
	return err
}

// WriteAt implements device.Device. Writes to hydrated regions go to
// DEST. A write covering whole unhydrated regions goes to DEST and marks
// them hydrated when it completes, without copying; a partial write to an
// unhydrated region first hydrates that region (an engine copy from
// SOURCE), then writes. Regions being hydrated make the write wait. On
// error the written range is unspecified; a failed hydration returns an
// error wrapping the engine's *kcopyd.JobError and writes nothing there.
func (c *Clone) WriteAt(p []byte, off int64) (int, error) {
	n := int64(len(p))
	if err := c.begin(); err != nil {
		return 0, c.ioError(device.OpWrite, off, n, err)
	}
	defer c.end()
	if err := c.checkWrite(off, n, p); err != nil {
		return 0, c.ioError(device.OpWrite, off, n, err)
	}
	if err := c.writeRange(off, n, writeOp{p: p, base: off}); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *Clone) checkWrite(off, n int64, p []byte) error {
	if err := device.CheckRange(off, n, c.size, 1); err != nil {
		return err
	}
	return c.checkAlign(off, p, n)
}

// WriteZeroes implements device.WriteZeroer with DEST's write-zeroes, with
// the regions treated as by WriteAt. It fails with an error wrapping
// device.ErrNotSupported, changing nothing, when DEST has none.
func (c *Clone) WriteZeroes(off, length int64) error {
	if err := c.begin(); err != nil {
		return c.ioError(device.OpWriteZeroes, off, length, err)
	}
	defer c.end()
	if err := c.checkWrite(off, length, nil); err != nil {
		return c.ioError(device.OpWriteZeroes, off, length, err)
	}
	if _, ok := c.dst.(device.WriteZeroer); !ok {
		return c.ioError(device.OpWriteZeroes, off, length, device.ErrNotSupported)
	}
	return c.writeRange(off, length, writeOp{})
}

// writeRange applies w to [off, off+n), run by run.
func (c *Clone) writeRange(off, n int64, w writeOp) error {
	for pos, end := off, off+n; pos < end; {
		hyd, runEnd := c.run(pos, end)
		var err error
		if hyd {
			err = w.apply(c.dst, pos, runEnd-pos)
		} else {
			err = c.writeUnhydrated(pos, runEnd, w)
		}
		if err != nil {
			return err
		}
		pos = runEnd
	}
	return nil
}

// writeUnhydrated applies w to [a, b), whose regions were unhydrated when
// looked at, under a lock on them: it hydrates the partly covered regions
// that are still unhydrated, writes, and then marks every region of the
// range hydrated (rule 1 of the commit ordering).
func (c *Clone) writeUnhydrated(a, b int64, w writeOp) error {
	r0, r1 := a>>c.shift, (b-1)>>c.shift
	l := c.lockRegions(r0, r1+1)
	defer c.unlock(l)
	var partial []int64
	for _, r := range []int64{r0, r1} {
		if (a > c.regionStart(r) || b < c.regionEnd(r)) && !c.isHydrated(r) && (len(partial) == 0 || partial[0] != r) {
			partial = append(partial, r)
		}
	}
	if err := c.hydrateNow(partial); err != nil {
		return err
	}
	if err := w.apply(c.dst, a, b-a); err != nil {
		return err
	}
	c.setHydrated(r0, r1+1)
	return nil
}

func (c *Clone) isHydrated(r int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.bits.test(r)
}

// hydrateNow copies regions (locked by the caller) from SOURCE to DEST
// with the unthrottled engine client, in parallel, and marks those that
// were copied hydrated. It returns the first failure.
func (c *Clone) hydrateNow(regions []int64) error {
	jobs := make([]*kcopyd.Job, len(regions))
	var errs []error
	for i, r := range regions {
		j, err := c.copyRegions(context.Background(), c.fg, r, 1)
		jobs[i] = j
		errs = append(errs, err)
	}
	for i, r := range regions {
		err := errs[i]
		if err == nil {
			err = jobs[i].Wait(context.Background())
		}
		c.copied(r, 1, err)
		if err != nil {
			errs[i] = c.ioError(device.OpWrite, c.regionStart(r), c.regionEnd(r)-c.regionStart(r),
				fmt.Errorf("clone: hydrating region %d: %w", r, err))
		}
	}
	return errors.Join(errs...)
}

// copyRegions submits the copy of regions [r, r+n) to the engine client k.
// All-zero chunks are written with DEST's write-zeroes (DetectZeroes), so
// that the holes of a sparse SOURCE stay holes in a DEST file.
func (c *Clone) copyRegions(ctx context.Context, k *kcopyd.Client, r, n int64) (*kcopyd.Job, error) {
	off, end := c.regionStart(r), c.regionEnd(r+n-1)
	return k.Copy(ctx, kcopyd.Region{Dev: c.src, Off: off, Len: end - off},
		[]kcopyd.Region{{Dev: c.dst, Off: off, Len: end - off}}, kcopyd.DetectZeroes, nil)
}

// copied records the outcome of copying n regions from r: on success they
// are marked hydrated (rule 1: the copy has completed); on failure the
// failure is counted and the regions wait for a retry.
func (c *Clone) copied(r, n int64, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.mu.copied += c.regionEnd(r+n-1) - c.regionStart(r)
		c.setHydratedLocked(r, r+n)
		return
	}
	c.failLocked(r, err)
}

// Discard implements device.Discarder as dm-clone does: the regions the
// range covers whole are marked hydrated without copying (their contents
// are unspecified afterwards, as after any discard), and, unless
// Options.NoDiscardPassdown, the discard is passed to DEST when DEST can
// discard. Parts of regions are ignored.
func (c *Clone) Discard(off, length int64) error {
	if err := c.begin(); err != nil {
		return c.ioError(device.OpDiscard, off, length, err)
	}
	defer c.end()
	if err := device.CheckRange(off, length, c.size, c.limits.OffsetAlign); err != nil {
		return c.ioError(device.OpDiscard, off, length, err)
	}
	r0, r1 := (off+c.rs-1)>>c.shift, (off+length)>>c.shift
	if off+length == c.size {
		r1 = c.regions
	}
	if r0 >= r1 {
		return nil
	}
	l := c.lockRegions(r0, r1)
	defer c.unlock(l)
	c.setHydrated(r0, r1)
	if c.opts.NoDiscardPassdown {
		return nil
	}
	return c.discardDest(c.regionStart(r0), c.regionEnd(r1-1))
}

// discardDest passes a discard of [off, end) to DEST in pieces DEST
// accepts; a DEST that cannot discard is not an error.
func (c *Clone) discardDest(off, end int64) error {
	d, ok := c.dst.(device.Discarder)
	max := device.LimitsOf(c.dst).MaxDiscard
	if !ok || max == 0 {
		return nil
	}
	for off < end {
		n := min(end-off, max)
		if err := d.Discard(off, n); err != nil {
			if errors.Is(err, device.ErrNotSupported) {
				return nil
			}
			return err
		}
		off += n
	}
	return nil
}

// maxExtents bounds one Extents answer.
const maxExtents = 1024

// Extents implements device.Extenter: hydrated runs are described by
// DEST, the others by SOURCE (as data when the device cannot say). The
// list may end early; the caller asks again from its end.
func (c *Clone) Extents(off, length int64) ([]device.Extent, error) {
	if err := c.begin(); err != nil {
		return nil, c.ioError(device.OpExtents, off, length, err)
	}
	defer c.end()
	if err := device.CheckRange(off, length, c.size, 1); err != nil || length == 0 {
		if err == nil {
			err = fmt.Errorf("%w: empty range", device.ErrOutOfRange)
		}
		return nil, c.ioError(device.OpExtents, off, length, err)
	}
	var out []device.Extent
	for pos, end := off, off+length; pos < end && len(out) < maxExtents; {
		hyd, runEnd := c.run(pos, end)
		dev := c.src
		if hyd {
			dev = c.dst
		}
		ext, err := extentsOf(dev, pos, runEnd-pos)
		if err != nil {
			if len(out) > 0 {
				return out, nil
			}
			return nil, err
		}
		for _, e := range ext {
			out = appendExtent(out, e)
		}
		last := ext[len(ext)-1]
		if last.Off+last.Len < runEnd {
			break
		}
		pos = runEnd
	}
	return out, nil
}

// extentsOf asks d about [off, off+n), or calls it all data.
func extentsOf(d device.Device, off, n int64) ([]device.Extent, error) {
	if e, ok := d.(device.Extenter); ok {
		ext, err := e.Extents(off, n)
		if err == nil && len(ext) > 0 {
			last := &ext[len(ext)-1]
			if last.Off+last.Len > off+n {
				last.Len = off + n - last.Off
			}
		}
		return ext, err
	}
	return []device.Extent{{Off: off, Len: n}}, nil
}

// appendExtent appends e, merging it into the last extent when they are
// adjacent and alike.
func appendExtent(out []device.Extent, e device.Extent) []device.Extent {
	if k := len(out); k > 0 {
		l := &out[k-1]
		if l.Off+l.Len == e.Off && l.Hole == e.Hole && l.Zero == e.Zero {
			l.Len += e.Len
			return out
		}
	}
	return append(out, e)
}

func addrOf(p []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(p))) }
