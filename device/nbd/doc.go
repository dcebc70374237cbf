// Package nbd is a pure-Go client for the Network Block Device protocol
// that opens an NBD export as a device.Device.
//
//	d, err := nbd.Open(ctx, "nbd+unix:///disk?socket=/run/nbd.sock", &nbd.Config{Connections: 4})
//	if err != nil { ... }
//	defer d.Close()
//	if d.ReadOnly() { ... refuse to write ... }
//
// It is written from the protocol document (NetworkBlockDevice/nbd
// doc/proto.md) and the URI document (doc/uri.md), and tested against
// nbdkit and qemu-nbd.
//
// # Locations
//
//	nbd://HOST[:PORT][/EXPORT]             TCP, port 10809 by default
//	nbds://HOST[:PORT][/EXPORT]            TCP with mandatory TLS
//	nbd+unix:///[EXPORT]?socket=PATH       Unix socket
//	nbds+unix:///[EXPORT]?socket=PATH      Unix socket with mandatory TLS
//
// IPv6 literals are written in brackets. The export name is the
// percent-decoded path without its first '/'. TLS locations accept the
// query parameters tls-hostname, tls-verify-peer=0|1, tls-type=x509 and
// tls-certificates=DIR (ca-cert.pem, and client-cert.pem with
// client-key.pem when present). Anything else (user information, TLS-PSK,
// unknown parameters) is rejected by ParseURI with ErrBadURI. The nbd and
// nbd+unix schemes never use TLS; a server that requires it fails Open with
// ErrTLSRequired.
//
// # Negotiation
//
// Open runs the fixed newstyle handshake on each connection: NBD_OPT_STARTTLS
// first for nbds locations, then NBD_OPT_STRUCTURED_REPLY,
// NBD_OPT_SET_META_CONTEXT "base:allocation", and NBD_OPT_GO asking for
// NBD_INFO_EXPORT, NBD_INFO_BLOCK_SIZE and NBD_INFO_DESCRIPTION. A server
// that answers NBD_REP_ERR_UNSUP to NBD_OPT_GO, or that is not fixed
// newstyle, is opened with NBD_OPT_EXPORT_NAME. Oldstyle servers are
// refused (ErrOldstyle). Info reports the outcome, Notes any compromise.
//
// With Config.Connections above 1, extra connections are opened only when
// the server advertises NBD_FLAG_CAN_MULTI_CONN; each must negotiate the
// same export. Requests go to the connection with the fewest requests in
// flight.
//
// # Transmission
//
// Each connection has one reader goroutine that matches replies to
// requests by cookie, so many requests (Config.MaxInFlight per
// connection) are in flight at once and may complete in any order. Reads
// and writes longer than the server's maximum block size (at most 32 MiB)
// are split into requests that are all in flight together. Structured
// replies are reassembled from data and hole chunks straight into the
// caller's buffer; simple replies are handled as well.
//
// Extents uses NBD_CMD_BLOCK_STATUS on base:allocation. WriteZeroes uses
// NBD_CMD_WRITE_ZEROES (WriteZeroesFlags adds NBD_CMD_FLAG_FAST_ZERO or
// NBD_CMD_FLAG_NO_HOLE on request); it returns device.ErrNotSupported and
// Limits().MaxWriteZeroes is 0 when the server does not offer it. Discard
// uses NBD_CMD_TRIM and Flush NBD_CMD_FLUSH. Close waits for calls in
// progress, sends NBD_CMD_DISC and closes every connection.
//
// # Errors
//
// Every I/O error is a *device.IOError for the failing request's range.
// Errors the server reports for a request wrap a *ServerError holding the
// Errno (which matches the syscall.Errno of the same name with errors.Is)
// and the server's message; they fail that request only. A connection
// that is lost fails the requests pending on it with ErrDisconnected, and
// is never used again: later calls go to the remaining connections, or
// fail at once when none is left. There is no reconnection.
//
// # Security
//
// The server is not trusted. Every length, offset, cookie and chunk it
// sends is checked before use: magic numbers, chunk types and sizes, that
// each chunk lies inside its request and overlaps no earlier one, that a
// successful read covered every byte, that block status answers the
// negotiated context. Allocations driven by the server are capped (option
// replies 64 KiB, error chunks 64 KiB, 131072 block descriptors, 65536
// pieces per read), data is only ever written inside the caller's buffer,
// and a violation drops the connection (ErrProtocol) rather than guessing.
// The reply parser and the handshake are fuzzed.
//
// TLS uses crypto/tls with TLS 1.2 or later and verifies the server
// certificate against the system roots, Config.CAFile or the
// tls-certificates directory, and the host name (tls-hostname, the URI
// host, or "localhost" for Unix sockets). Verification is disabled only by
// Config.InsecureSkipVerify or tls-verify-peer=0. With an nbds location the
// export name is never sent before TLS is up: a server without TLS fails
// Open with ErrTLSUnavailable. Device.String and Identity contain no
// secrets (locations carry none).
//
// A server that stops answering blocks callers unless Config.Timeout is
// set.
package nbd
