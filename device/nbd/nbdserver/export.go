package nbdserver

import (
	"fmt"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
	"github.com/kcopyd/kcopyd/internal/bufpool"
)

// zeroChunk is the size of the shared buffer of zeroes written when the
// device has no native write-zeroes.
const zeroChunk = 1 << 20

// exportInfo is what the server knows about its device, computed once.
type exportInfo struct {
	size      int64
	limits    device.Limits
	blockSize proto.BlockSize
	align     int64 // blockSize.Min
	maxIO     int64 // largest single ReadAt/WriteAt; 0 = unlimited

	zeroer    device.WriteZeroer // nil unless native write-zeroes
	discarder device.Discarder   // nil unless the device can discard
	flusher   device.Flusher     // nil when writes are durable at once
	extenter  device.Extenter    // nil: everything is data

	flags uint16 // transmission flags without NBD_FLAG_SEND_DF
	zeros []byte // zeroChunk zeroes aligned for any device (bufpool.Align), shared read-only
}

// newExportInfo inspects dev.
func newExportInfo(dev device.Device) (exportInfo, error) {
	l := device.LimitsOf(dev)
	ex := exportInfo{size: dev.Size(), limits: l, maxIO: l.MaxTransfer}
	ex.align = int64(max(l.OffsetAlign, 1))
	if ex.align > proto.MaxMinBlock || ex.align&(ex.align-1) != 0 {
		return ex, fmt.Errorf("%w: the device's alignment of %d bytes cannot be advertised (a power of 2 up to 64 KiB)", ErrBadOptions, ex.align)
	}
	if ex.size < 0 {
		return ex, fmt.Errorf("%w: device size %d", ErrBadOptions, ex.size)
	}
	if z, ok := dev.(device.WriteZeroer); ok && l.MaxWriteZeroes > 0 {
		ex.zeroer = z
	}
	if d, ok := dev.(device.Discarder); ok && l.MaxDiscard > 0 {
		ex.discarder = d
	}
	ex.flusher, _ = dev.(device.Flusher)
	ex.extenter, _ = dev.(device.Extenter)
	return ex, nil
}

// finish sets what depends on the options: block sizes and flags.
func (ex *exportInfo) finish(o *Options) {
	ex.blockSize = proto.BlockSize{
		Min:       uint32(ex.align),
		Preferred: uint32(max(ex.align, 4096)),
		Max:       uint32(o.MaxPayload),
	}
	f := proto.FlagHasFlags | proto.FlagCanMultiConn
	if o.ReadOnly {
		f |= proto.FlagReadOnly
	} else {
		f |= proto.FlagSendFlush | proto.FlagSendFUA | proto.FlagSendWriteZeroes | proto.FlagSendFastZero
		if ex.discarder != nil {
			f |= proto.FlagSendTrim
		}
	}
	ex.flags = f
	if !o.ReadOnly {
		ex.zeros = bufpool.Alloc(zeroChunk)
	}
}

// transmissionFlags returns the flags announced to a client that did or
// did not negotiate structured replies.
func (ex *exportInfo) transmissionFlags(structured bool) uint16 {
	if structured {
		return ex.flags | proto.FlagSendDF
	}
	return ex.flags
}
