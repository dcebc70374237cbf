package nbd

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
)

// Errors returned while parsing a location.
var (
	// ErrBadURI is returned by ParseURI (and Open) when a location is not a
	// valid NBD URI or uses a feature this client does not support.
	ErrBadURI = errors.New("nbd: bad NBD URI")
)

// Errors returned by Open during the handshake.
var (
	// ErrUnknownExport is returned when the server does not have the
	// export named in the URI (NBD_REP_ERR_UNKNOWN, or a server that
	// drops the connection after NBD_OPT_EXPORT_NAME).
	ErrUnknownExport = errors.New("nbd: unknown export")

	// ErrOldstyle is returned when the server only speaks the oldstyle
	// handshake, which this client does not implement.
	ErrOldstyle = errors.New("nbd: server uses the oldstyle handshake (unsupported; use a newstyle server)")

	// ErrTLSRequired is returned when the server requires TLS but the
	// location did not ask for it (use nbds:// or nbds+unix://).
	ErrTLSRequired = errors.New("nbd: server requires TLS (use an nbds:// or nbds+unix:// location)")

	// ErrTLSUnavailable is returned when the location asks for TLS but the
	// server cannot or will not negotiate it. The connection is dropped
	// before the export name is sent in clear.
	ErrTLSUnavailable = errors.New("nbd: TLS requested but the server does not offer it")

	// ErrRefused is returned when the server refuses an option for a
	// reason other than the ones above (policy, shutdown, invalid).
	ErrRefused = errors.New("nbd: server refused the request")
)

// Errors returned during transmission.
var (
	// ErrProtocol is returned when the server breaks the protocol: bad
	// magic, unknown cookie, a chunk outside its request, overlapping or
	// missing data, oversized lengths. The connection is then dropped and
	// every request pending on it fails with an error wrapping
	// ErrProtocol and ErrDisconnected.
	ErrProtocol = errors.New("nbd: protocol violation by the server")

	// ErrDisconnected is returned for requests on a connection that was
	// lost or dropped; such a connection is never used again.
	ErrDisconnected = errors.New("nbd: connection lost")

	// ErrTimeout is wrapped (with ErrDisconnected) when a connection was
	// dropped because the server made no progress for Config.Timeout.
	ErrTimeout = errors.New("nbd: server made no progress within the timeout")
)

// Errno is an error value sent by an NBD server in a reply. The protocol
// borrows the values of the common Linux errno numbers; Errno matches the
// corresponding syscall.Errno with errors.Is, and ENOTSUP also matches
// device.ErrNotSupported only where a method documents it.
type Errno uint32

// Error values defined by the protocol.
const (
	EPERM     = Errno(proto.EPERM)
	EIO       = Errno(proto.EIO)
	ENOMEM    = Errno(proto.ENOMEM)
	EINVAL    = Errno(proto.EINVAL)
	ENOSPC    = Errno(proto.ENOSPC)
	EOVERFLOW = Errno(proto.EOVERFLOW)
	ENOTSUP   = Errno(proto.ENOTSUP)
	ESHUTDOWN = Errno(proto.ESHUTDOWN)
)

func (e Errno) Error() string {
	if s := proto.ErrnoName(uint32(e)); s != "" {
		return s
	}
	return fmt.Sprintf("NBD error %d", uint32(e))
}

// Is reports whether target is the syscall.Errno with the same meaning.
func (e Errno) Is(target error) bool {
	t, ok := target.(syscall.Errno)
	if !ok {
		return false
	}
	switch e {
	case EPERM:
		return t == syscall.EPERM
	case EIO:
		return t == syscall.EIO
	case ENOMEM:
		return t == syscall.ENOMEM
	case EINVAL:
		return t == syscall.EINVAL
	case ENOSPC:
		return t == syscall.ENOSPC
	case EOVERFLOW:
		return t == syscall.EOVERFLOW
	case ENOTSUP:
		return t == syscall.ENOTSUP
	case ESHUTDOWN:
		return t == syscall.ESHUTDOWN
	}
	return false
}

// ServerError is an error reported by the server for one request, with the
// optional human-readable message and offset of structured replies.
type ServerError struct {
	Errno   Errno
	Message string // may be empty; truncated to 4096 bytes
	// Offset is the absolute export offset the error applies to when
	// HasOffset is true (NBD_REPLY_TYPE_ERROR_OFFSET).
	Offset    int64
	HasOffset bool
}

func (e *ServerError) Error() string {
	s := e.Errno.Error()
	if e.HasOffset {
		s += fmt.Sprintf(" at offset %d", e.Offset)
	}
	if e.Message != "" {
		s += ": " + quoteMessage(e.Message)
	}
	return s
}

// Unwrap returns the Errno.
func (e *ServerError) Unwrap() error { return e.Errno }

// optionError is an error reply to a handshake option.
type optionError struct {
	sentinel error
	option   uint32
	reply    uint32
	message  string
}

func (e *optionError) Error() string {
	s := fmt.Sprintf("%v (%s answered %s)", e.sentinel, optionName(e.option), replyName(e.reply))
	if e.message != "" {
		s += ": server says " + quoteMessage(e.message)
	}
	return s
}

func (e *optionError) Unwrap() error { return e.sentinel }

// quoteMessage makes a server-supplied string safe to print.
func quoteMessage(s string) string {
	if len(s) > proto.MaxString {
		s = s[:proto.MaxString]
	}
	return fmt.Sprintf("%q", s)
}

func optionName(o uint32) string {
	switch o {
	case proto.OptExportName:
		return "NBD_OPT_EXPORT_NAME"
	case proto.OptStartTLS:
		return "NBD_OPT_STARTTLS"
	case proto.OptGo:
		return "NBD_OPT_GO"
	case proto.OptStructuredReply:
		return "NBD_OPT_STRUCTURED_REPLY"
	case proto.OptSetMetaContext:
		return "NBD_OPT_SET_META_CONTEXT"
	}
	return fmt.Sprintf("option %d", o)
}

func replyName(r uint32) string {
	switch r {
	case proto.RepAck:
		return "NBD_REP_ACK"
	case proto.RepInfo:
		return "NBD_REP_INFO"
	case proto.RepMetaContext:
		return "NBD_REP_META_CONTEXT"
	case proto.RepErrUnsup:
		return "NBD_REP_ERR_UNSUP"
	case proto.RepErrPolicy:
		return "NBD_REP_ERR_POLICY"
	case proto.RepErrInvalid:
		return "NBD_REP_ERR_INVALID"
	case proto.RepErrPlatform:
		return "NBD_REP_ERR_PLATFORM"
	case proto.RepErrTLSReqd:
		return "NBD_REP_ERR_TLS_REQD"
	case proto.RepErrUnknown:
		return "NBD_REP_ERR_UNKNOWN"
	case proto.RepErrShutdown:
		return "NBD_REP_ERR_SHUTDOWN"
	case proto.RepErrBlockSzReqd:
		return "NBD_REP_ERR_BLOCK_SIZE_REQD"
	case proto.RepErrTooBig:
		return "NBD_REP_ERR_TOO_BIG"
	}
	return fmt.Sprintf("reply type %#x", r)
}
