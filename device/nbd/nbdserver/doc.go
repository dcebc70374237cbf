// Package nbdserver serves any device.Device over the Network Block
// Device protocol, so that qemu, the kernel's nbd driver, nbdcopy,
// nbdinfo, nbdfuse and this module's own client (package nbd) can use it.
//
//	srv, err := nbdserver.New(dev, &nbdserver.Options{Name: "disk"})
//	if err != nil { ... }
//	l, err := net.Listen("unix", "/run/disk.sock")
//	if err != nil { ... }
//	go srv.Serve(l)
//	...
//	err = srv.Shutdown(ctx) // answers requests in flight, then closes
//
// It is written from the protocol document (NetworkBlockDevice/nbd
// doc/proto.md) and shares its wire encoding with the client.
//
// # Negotiation
//
// The server speaks the fixed newstyle handshake (and plain newstyle with
// NBD_OPT_EXPORT_NAME for old clients). It answers NBD_OPT_GO and
// NBD_OPT_INFO (NBD_INFO_EXPORT, NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME,
// NBD_INFO_DESCRIPTION), NBD_OPT_EXPORT_NAME, NBD_OPT_LIST, NBD_OPT_ABORT,
// NBD_OPT_STARTTLS, NBD_OPT_STRUCTURED_REPLY, and NBD_OPT_LIST_META_CONTEXT
// and NBD_OPT_SET_META_CONTEXT for the one context it offers,
// base:allocation. Any other option is answered NBD_REP_ERR_UNSUP.
//
// One server has one export, reached by Options.Name or by the empty
// name. Its transmission flags follow the device: writes, flush, FUA,
// write-zeroes and fast zero unless read-only; trim when the device can
// discard (device.Discarder with Limits().MaxDiscard > 0); and always
// NBD_FLAG_CAN_MULTI_CONN, because every connection uses the same device
// object, whose Flush covers every write completed before it, whichever
// connection made it. The minimum block size is the device's offset
// alignment, the maximum Options.MaxPayload (32 MiB).
//
// # Transmission
//
// Each connection has one goroutine reading requests; each request is
// handled on its own goroutine and answered as soon as it is done, so
// replies may leave out of order, but never interleave. A connection holds
// at most Options.MaxInFlight requests and Options.MaxInFlightBytes of
// payload; beyond that the server stops reading it until a request
// completes. READ, WRITE, WRITE_ZEROES, TRIM, FLUSH, BLOCK_STATUS and DISC
// are served; FUA flushes after the write. With structured replies, reads
// of 64 KiB or more send the runs the device's extents report as zeroes as
// hole chunks (NBD_REPLY_TYPE_OFFSET_HOLE) and the rest as data chunks;
// smaller reads, and reads with NBD_CMD_FLAG_DF, get one data chunk.
// Without structured replies a read gets a simple reply and the data. WRITE_ZEROES uses the device's native write-zeroes
// (device.WriteZeroer), or writes zeroes when there is none or
// NBD_CMD_FLAG_NO_HOLE forbids punching holes; with NBD_CMD_FLAG_FAST_ZERO
// it fails with NBD_ENOTSUP instead of writing zeroes. Block status comes
// from the device's extents (device.Extenter): holes are reported as
// NBD_STATE_HOLE|NBD_STATE_ZERO, known zeroes as NBD_STATE_ZERO, the rest
// (and everything, on a device without extents) as data.
//
// # Errors
//
// Requests are validated before any I/O, with the protocol's error
// values: NBD_EPERM for writes to a read-only export, NBD_ENOSPC for
// writes past the end, NBD_EINVAL for other out-of-range or misaligned
// requests, unknown commands and flags not valid for the command,
// NBD_EOVERFLOW for reads larger than the maximum payload with
// NBD_CMD_FLAG_DF. Device errors become NBD_EIO, NBD_ENOSPC, NBD_EPERM or
// NBD_EINVAL; the client gets the error value and its name, never the
// device's message (which may hold paths); Options.Logf gets the whole
// error. A request with a bad magic number ends the connection.
//
// # Security
//
// Clients are not trusted. The server never allocates more than the
// bounds above for a client: option data over 64 KiB is read and refused
// (NBD_REP_ERR_TOO_BIG), the payload of an oversized write is read and
// dropped. Option haggling is bounded by Options.HandshakeTimeout. The
// request parser and the handshake are fuzzed (FuzzServerRequests).
//
// TLS uses crypto/tls (TLS 1.2 or later) with Options.TLSConfig; with
// Options.TLSRequired every option but NBD_OPT_STARTTLS and NBD_OPT_ABORT
// is refused with NBD_REP_ERR_TLS_REQD until TLS is up, and
// NBD_OPT_EXPORT_NAME in clear closes the connection. Client certificates
// are checked when the configuration asks (tls.RequireAndVerifyClientCert).
//
// # Shutdown
//
// Shutdown closes the listeners, stops reading requests, answers those
// already read and then closes each connection; Close drops everything
// at once. Neither flushes nor closes the device, which the caller owns.
package nbdserver
