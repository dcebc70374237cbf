package nbdserver

import (
	"errors"
	"syscall"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
)

// Errors returned by New.
var (
	// ErrBadOptions is returned by New when the Options cannot work
	// (TLSRequired without a TLS configuration, an export name longer
	// than the protocol allows) or the device's alignment cannot be
	// advertised.
	ErrBadOptions = errors.New("nbdserver: bad options")
)

// Errors returned while serving.
var (
	// ErrServerClosed is returned by Serve and ServeConn after Shutdown
	// or Close.
	ErrServerClosed = errors.New("nbdserver: server closed")
)

// errno maps a device error to the NBD error value a client receives, as
// the protocol asks: EDQUOT and EFBIG become ENOSPC, everything without a
// closer match EIO. NBD_ENOTSUP is never produced here: the protocol
// reserves it for fast zeroing, which the caller handles.
func errno(err error) uint32 {
	switch {
	case errors.Is(err, device.ErrReadOnly), errors.Is(err, syscall.EPERM),
		errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EROFS):
		return proto.EPERM
	case errors.Is(err, device.ErrOutOfRange), errors.Is(err, device.ErrAlignment),
		errors.Is(err, syscall.EINVAL):
		return proto.EINVAL
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return proto.ENOSPC
	case errors.Is(err, syscall.ENOMEM):
		return proto.ENOMEM
	case errors.Is(err, device.ErrClosed), errors.Is(err, syscall.ESHUTDOWN):
		return proto.ESHUTDOWN
	}
	return proto.EIO
}
