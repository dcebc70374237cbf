package nbdserver

import (
	"errors"
	"io"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
)

// maxDescriptors caps the extents of one block status reply (128 KiB).
const maxDescriptors = 16384

// Sparse reads: structured reads of at least holeReadMin bytes ask the
// device for its extents and send runs of zeroes as hole chunks, in at
// most maxReadChunks chunks. Smaller reads are not worth the question.
const (
	holeReadMin   = 64 << 10
	maxReadChunks = 64
)

// handle carries out a validated request and answers it. buf is the
// payload of a write.
func (c *conn) handle(r proto.Request, buf []byte) {
	off, n := int64(r.Offset), int64(r.Length)
	switch r.Type {
	case proto.CmdRead:
		c.read(r)
		return
	case proto.CmdBlockStatus:
		c.blockStatus(r)
		return
	case proto.CmdWriteZeroes:
		c.reply(r, c.s.writeZeroes(off, n, r.Flags))
		return
	}
	var err error
	switch r.Type {
	case proto.CmdWrite:
		err = chunked(off, n, c.s.ex.maxIO, func(o, k int64) error {
			_, err := c.s.dev.WriteAt(buf[o-off:o-off+k], o)
			return err
		})
	case proto.CmdTrim:
		err = c.s.trim(off, n)
	case proto.CmdFlush:
		err = c.s.flush()
	}
	if err == nil && r.Flags&proto.CmdFlagFUA != 0 && r.Type != proto.CmdFlush {
		err = c.s.flush()
	}
	c.reply(r, c.s.failed(err))
}

// failed logs a device error and returns its error value, or 0 for nil.
func (s *Server) failed(err error) uint32 {
	if err == nil {
		return 0
	}
	s.logf("nbdserver: %v", err)
	return errno(err)
}

// chunked calls fn on pieces of [off, off+n) of at most limit bytes (0
// means one piece), in order, stopping at the first error.
func chunked(off, n, limit int64, fn func(off, n int64) error) error {
	for n > 0 {
		k := n
		if limit > 0 && k > limit {
			k = limit
		}
		if err := fn(off, k); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// read answers a read: one data chunk with structured replies, a simple
// reply followed by the data otherwise.
func (c *conn) read(r proto.Request) {
	off, n := int64(r.Offset), int64(r.Length)
	if c.neg.structured && r.Flags&proto.CmdFlagDF == 0 && n >= holeReadMin && c.s.ex.extenter != nil {
		if segs := c.s.segments(off, n); len(segs) > 1 || segs[0].zero {
			c.readSparse(r, segs)
			return
		}
	}
	p := c.s.getBuf(int(n))
	defer c.s.putBuf(p)
	buf := p.b
	if err := c.s.readAt(buf, off); err != nil {
		c.replyError(r, c.s.failed(err))
		return
	}
	switch {
	case !c.neg.structured:
		c.send(proto.AppendSimpleReply(nil, 0, r.Cookie), buf)
	case n == 0:
		c.send(proto.AppendChunk(nil, proto.ReplyFlagDone, proto.ReplyTypeNone, r.Cookie, 0))
	default:
		hdr := proto.AppendChunk(nil, proto.ReplyFlagDone, proto.ReplyTypeOffsetData, r.Cookie, uint32(8+n))
		c.send(proto.AppendUint64(hdr, r.Offset), buf)
	}
}

// readAt fills buf from off, in pieces of at most the device's largest
// transfer.
func (s *Server) readAt(buf []byte, off int64) error {
	return chunked(off, int64(len(buf)), s.ex.maxIO, func(o, k int64) error {
		got, err := s.dev.ReadAt(buf[o-off:o-off+k], o)
		if errors.Is(err, io.EOF) && int64(got) == k {
			err = nil
		}
		return err
	})
}

// segment is a run of a read that holds data or reads as zeroes.
type segment struct {
	off, n int64
	zero   bool
}

// segments splits [off, off+n) into data and zero runs from the device's
// extents, in at most maxReadChunks runs (the rest is one data run). When
// the device cannot tell, the whole range is one data run.
func (s *Server) segments(off, n int64) []segment {
	end := off + n
	var segs []segment
	for full := false; off < end && !full; {
		ext, err := s.ex.extenter.Extents(off, end-off)
		if err != nil || len(ext) == 0 || ext[0].Off != off || ext[0].Len <= 0 {
			break // the rest is read as data
		}
		for _, e := range ext {
			hi := min(e.Off+e.Len, end)
			if e.Off != off || hi <= off {
				break
			}
			k := len(segs) - 1
			switch {
			case k >= 0 && segs[k].zero == e.Zero:
				segs[k].n += hi - off
			case len(segs) < maxReadChunks-1:
				segs = append(segs, segment{off: off, n: hi - off, zero: e.Zero})
			default:
				full = true
			}
			if full {
				break
			}
			off = hi
		}
	}
	if off < end {
		if k := len(segs) - 1; k >= 0 && !segs[k].zero {
			segs[k].n += end - off
		} else {
			segs = append(segs, segment{off: off, n: end - off})
		}
	}
	return segs
}

// readSparse answers a structured read with a data chunk per data run and
// a hole chunk per zero run, all sent together once every run was read.
func (c *conn) readSparse(r proto.Request, segs []segment) {
	p := c.s.getBuf(int(r.Length))
	defer c.s.putBuf(p)
	parts := make([][]byte, 0, 2*len(segs))
	for i, sg := range segs {
		var flags uint16
		if i == len(segs)-1 {
			flags = proto.ReplyFlagDone
		}
		if sg.zero {
			h := proto.AppendChunk(nil, flags, proto.ReplyTypeOffsetHole, r.Cookie, proto.OffsetHoleLen)
			parts = append(parts, proto.AppendUint32(proto.AppendUint64(h, uint64(sg.off)), uint32(sg.n)))
			continue
		}
		buf := p.b[sg.off-int64(r.Offset) : sg.off-int64(r.Offset)+sg.n]
		if err := c.s.readAt(buf, sg.off); err != nil {
			c.replyError(r, c.s.failed(err))
			return
		}
		h := proto.AppendChunk(nil, flags, proto.ReplyTypeOffsetData, r.Cookie, uint32(8+sg.n))
		parts = append(parts, proto.AppendUint64(h, uint64(sg.off)), buf)
	}
	c.send(parts...)
}

// writeZeroes zeroes [off, off+n) natively when the device can and
// NBD_CMD_FLAG_NO_HOLE does not forbid it (the device may punch holes),
// else by writing zeroes; with NBD_CMD_FLAG_FAST_ZERO it fails with
// ENOTSUP instead of writing zeroes. FUA is honoured.
func (s *Server) writeZeroes(off, n int64, flags uint16) uint32 {
	fast := flags&proto.CmdFlagFastZero != 0
	var err error
	native := s.ex.zeroer != nil && flags&proto.CmdFlagNoHole == 0
	if native {
		err = chunked(off, n, s.ex.limits.MaxWriteZeroes, s.ex.zeroer.WriteZeroes)
		if errors.Is(err, device.ErrNotSupported) {
			native = false
		} else if err != nil {
			return s.failed(err)
		}
	}
	if !native {
		if fast {
			return proto.ENOTSUP
		}
		step := int64(len(s.ex.zeros))
		if s.ex.maxIO > 0 {
			step = min(step, s.ex.maxIO)
		}
		err = chunked(off, n, step, func(o, k int64) error {
			_, err := s.dev.WriteAt(s.ex.zeros[:k], o)
			return err
		})
	}
	if err == nil && flags&proto.CmdFlagFUA != 0 {
		err = s.flush()
	}
	return s.failed(err)
}

// trim discards [off, off+n). A device that turns out not to support it
// is not an error: trimming is a hint.
func (s *Server) trim(off, n int64) error {
	err := chunked(off, n, s.ex.limits.MaxDiscard, s.ex.discarder.Discard)
	if errors.Is(err, device.ErrNotSupported) {
		return nil
	}
	return err
}

// flush makes completed writes durable; a device without a volatile
// cache has nothing to do.
func (s *Server) flush() error {
	if s.ex.flusher == nil {
		return nil
	}
	return s.ex.flusher.Flush()
}

// blockStatus answers NBD_CMD_BLOCK_STATUS on base:allocation from the
// device's extents (all data when it cannot tell), describing at most
// the requested range, in at most maxDescriptors extents (one with
// NBD_CMD_FLAG_REQ_ONE).
func (c *conn) blockStatus(r proto.Request) {
	off, end := int64(r.Offset), int64(r.Offset)+int64(r.Length)
	start0 := off
	limit := maxDescriptors
	if r.Flags&proto.CmdFlagReqOne != 0 {
		limit = 1
	}
	var ds []proto.BlockDescriptor
	for full := false; off < end && !full; {
		start := off
		ext, err := c.extents(off, end-off)
		if err != nil {
			if len(ds) > 0 {
				break // answer what is known
			}
			c.replyError(r, c.s.failed(err))
			return
		}
		for _, e := range ext {
			lo, hi := max(e.Off, off), min(e.Off+e.Len, end)
			if lo != off || hi <= lo {
				break // not adjacent: ask again from off
			}
			var ok bool
			if ds, ok = appendDescriptor(ds, uint32(hi-lo), status(e), limit); !ok {
				full = true
				break
			}
			off = hi
		}
		if off == start {
			break // the device answered for another range
		}
	}
	if len(ds) == 0 {
		c.replyError(r, c.s.failed(c.s.extentsError(start0, int64(r.Length))))
		return
	}
	payload := proto.AppendUint32(make([]byte, 0, 4+8*len(ds)), metaAllocationID)
	for _, d := range ds {
		payload = proto.AppendBlockDescriptor(payload, d)
	}
	hdr := proto.AppendChunk(nil, proto.ReplyFlagDone, proto.ReplyTypeBlockStatus, r.Cookie, uint32(len(payload)))
	c.send(hdr, payload)
}

// extents returns the device's extents from off, or one data extent when
// it cannot tell.
func (c *conn) extents(off, n int64) ([]device.Extent, error) {
	if c.s.ex.extenter == nil {
		return []device.Extent{{Off: off, Len: n}}, nil
	}
	ext, err := c.s.ex.extenter.Extents(off, n)
	if err == nil && len(ext) == 0 {
		err = c.s.extentsError(off, n)
	}
	return ext, err
}

// status returns the base:allocation flags of an extent.
func status(e device.Extent) uint32 {
	switch {
	case e.Hole:
		return proto.StateHole | proto.StateZero
	case e.Zero:
		return proto.StateZero
	}
	return 0
}

// appendDescriptor appends the extent that follows the last descriptor,
// merging it into the last one when the status is the same. It reports
// false, leaving ds unchanged, when a new descriptor is needed and limit
// descriptors are there already.
func appendDescriptor(ds []proto.BlockDescriptor, n, st uint32, limit int) ([]proto.BlockDescriptor, bool) {
	if k := len(ds) - 1; k >= 0 && ds[k].Status == st && uint64(ds[k].Length)+uint64(n) <= 0xffffffff {
		ds[k].Length += n
		return ds, true
	}
	if len(ds) >= limit {
		return ds, false
	}
	return append(ds, proto.BlockDescriptor{Length: n, Status: st}), true
}

// extentsError reports a device whose Extents broke its contract (no
// extent, or none starting at off).
func (s *Server) extentsError(off, n int64) error {
	return &device.IOError{Op: device.OpExtents, Dev: device.Name(s.dev), Off: off, Len: n,
		Err: errors.New("the device described no extent starting at the offset asked")}
}
