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

// errnoName returns the protocol's name of an error value, for the
// message of an error chunk. Device messages are not sent: they may hold
// server paths.
func errnoName(e uint32) string {
	switch e {
	case proto.EPERM:
		return "NBD_EPERM: operation not permitted"
	case proto.EIO:
		return "NBD_EIO: input/output error"
	case proto.ENOMEM:
		return "NBD_ENOMEM: cannot allocate memory"
	case proto.EINVAL:
		return "NBD_EINVAL: invalid argument"
	case proto.ENOSPC:
		return "NBD_ENOSPC: no space left on device"
	case proto.EOVERFLOW:
		return "NBD_EOVERFLOW: value too large"
	case proto.ENOTSUP:
		return "NBD_ENOTSUP: operation not supported"
	case proto.ESHUTDOWN:
		return "NBD_ESHUTDOWN: server is shutting down"
	}
	return "NBD error"
}
