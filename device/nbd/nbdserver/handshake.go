package nbdserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
)

// Handshake bounds: a client cannot make the server hold more than this
// while haggling.
const (
	// maxOptionData is the largest option data the server reads into
	// memory; larger options are read, dropped and refused with
	// NBD_REP_ERR_TOO_BIG.
	maxOptionData = 64 << 10
	// metaAllocation is the one metadata context the server offers.
	metaAllocation = "base:allocation"
	// metaAllocationID is its context id.
	metaAllocationID = 1
)

// errAborted ends a session the client closed with NBD_OPT_ABORT.
var errAborted = errors.New("client aborted the negotiation")

// negotiated is the state option haggling built up on one connection.
type negotiated struct {
	fixed      bool // the client speaks fixed newstyle
	noZeroes   bool // no padding after NBD_OPT_EXPORT_NAME's reply
	tls        bool
	structured bool
	meta       bool   // base:allocation selected ...
	metaExport string // ... for this export name
}

// handshake runs option haggling. It returns nil when the client entered
// transmission, and an error when the connection must be closed.
func (c *conn) handshake() error {
	if t := c.s.opts.HandshakeTimeout; t > 0 {
		c.raw.SetDeadline(time.Now().Add(t))
	}
	if err := c.write(proto.AppendGreeting(nil, proto.HandshakeFixedNewstyle|proto.HandshakeNoZeroes)); err != nil {
		return err
	}
	var b [4]byte
	if _, err := io.ReadFull(c.rw, b[:]); err != nil {
		return fmt.Errorf("reading the client flags: %w", err)
	}
	cf := proto.Uint32(b[:])
	if cf&^(proto.ClientFixedNewstyle|proto.ClientNoZeroes) != 0 {
		return fmt.Errorf("unknown client flags %#x", cf)
	}
	c.neg.fixed = cf&proto.ClientFixedNewstyle != 0
	c.neg.noZeroes = cf&proto.ClientNoZeroes != 0
	if c.s.opts.TLSRequired && !c.neg.fixed {
		return errors.New("TLS is required but the client does not speak fixed newstyle")
	}
	for {
		h, data, tooBig, err := c.readOption()
		if err != nil {
			return err
		}
		enter, err := c.option(h, data, tooBig)
		if err != nil {
			return err
		}
		if enter {
			break
		}
	}
	c.raw.SetDeadline(time.Time{})
	if c.stopped() {
		// Shutdown began while haggling: its deadline was just cleared.
		c.raw.SetReadDeadline(time.Now())
	}
	return nil
}

// readOption reads one option request. Data longer than maxOptionData is
// read and dropped, and tooBig is set.
func (c *conn) readOption() (h proto.OptHeader, data []byte, tooBig bool, err error) {
	var b [proto.OptHeaderSize]byte
	if _, err := io.ReadFull(c.rw, b[:]); err != nil {
		return h, nil, false, fmt.Errorf("reading an option: %w", err)
	}
	if h, err = proto.ParseOptHeader(b[:]); err != nil {
		return h, nil, false, err
	}
	if h.Length > maxOptionData {
		if _, err := io.CopyN(io.Discard, c.rw, int64(h.Length)); err != nil {
			return h, nil, false, fmt.Errorf("reading option data: %w", err)
		}
		return h, nil, true, nil
	}
	data = make([]byte, h.Length)
	if _, err := io.ReadFull(c.rw, data); err != nil {
		return h, nil, false, fmt.Errorf("reading option data: %w", err)
	}
	return h, data, false, nil
}

// option answers one option. enter reports that transmission begins.
func (c *conn) option(h proto.OptHeader, data []byte, tooBig bool) (enter bool, err error) {
	if !c.neg.fixed && h.Option != proto.OptExportName {
		// Only NBD_OPT_EXPORT_NAME exists without fixed newstyle, and
		// there is no way to refuse anything else.
		return false, fmt.Errorf("option %d from a client without fixed newstyle", h.Option)
	}
	if c.s.opts.TLSRequired && !c.neg.tls && h.Option != proto.OptStartTLS && h.Option != proto.OptAbort {
		if h.Option == proto.OptExportName {
			return false, errors.New("NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS on a server that requires TLS")
		}
		return false, c.optError(h.Option, proto.RepErrTLSReqd, "TLS is required: send NBD_OPT_STARTTLS first")
	}
	if tooBig {
		if h.Option == proto.OptExportName {
			return false, fmt.Errorf("NBD_OPT_EXPORT_NAME of %d bytes", h.Length)
		}
		return false, c.optError(h.Option, proto.RepErrTooBig, "option data too large")
	}
	switch h.Option {
	case proto.OptExportName:
		return true, c.exportName(string(data))
	case proto.OptAbort:
		// The client may already have gone: ignore the write error.
		_ = c.optReply(h.Option, proto.RepAck, nil)
		return false, errAborted
	case proto.OptList:
		return false, c.list(data)
	case proto.OptStartTLS:
		return false, c.startTLS(data)
	case proto.OptInfo, proto.OptGo:
		return c.info(h.Option, data)
	case proto.OptStructuredReply:
		if len(data) != 0 {
			return false, c.optError(h.Option, proto.RepErrInvalid, "NBD_OPT_STRUCTURED_REPLY carries no data")
		}
		c.neg.structured = true
		return false, c.optReply(h.Option, proto.RepAck, nil)
	case proto.OptListMetaContext, proto.OptSetMetaContext:
		return false, c.metaContext(h.Option, data)
	}
	return false, c.optError(h.Option, proto.RepErrUnsup, "unsupported option")
}

// optReply sends one option reply.
func (c *conn) optReply(opt, typ uint32, data []byte) error {
	return c.write(proto.AppendOptReply(nil, opt, typ, data))
}

// optError sends an error reply with a message.
func (c *conn) optError(opt, typ uint32, msg string) error {
	return c.optReply(opt, typ, []byte(msg))
}

// knownExport reports whether name selects the export.
func (c *conn) knownExport(name string) bool {
	return name == "" || name == c.s.opts.Name
}

// exportInfo returns the size and flags announced to this client.
func (c *conn) exportInfo() proto.ExportInfo {
	return proto.ExportInfo{Size: uint64(c.s.ex.size), Flags: c.s.ex.transmissionFlags(c.neg.structured)}
}

// enter sets up transmission for the export name.
func (c *conn) enter(name string) {
	if c.neg.metaExport != name {
		c.neg.meta = false
	}
}

// exportName answers NBD_OPT_EXPORT_NAME, which cannot be refused: an
// unknown export closes the connection.
func (c *conn) exportName(name string) error {
	if !c.knownExport(name) {
		return fmt.Errorf("NBD_OPT_EXPORT_NAME for the unknown export %q", name)
	}
	c.enter(name)
	return c.write(proto.AppendExportName(nil, c.exportInfo(), c.neg.noZeroes))
}

func (c *conn) list(data []byte) error {
	if len(data) != 0 {
		return c.optError(proto.OptList, proto.RepErrInvalid, "NBD_OPT_LIST carries no data")
	}
	// NBD_REP_SERVER: the name, then the description.
	server := append(proto.AppendString(nil, c.s.opts.Name), c.s.opts.Description...)
	if err := c.optReply(proto.OptList, proto.RepServer, server); err != nil {
		return err
	}
	return c.optReply(proto.OptList, proto.RepAck, nil)
}

// startTLS answers NBD_OPT_STARTTLS and runs the TLS handshake. Negotiated
// state is forgotten, as the protocol requires.
func (c *conn) startTLS(data []byte) error {
	cfg := c.s.opts.TLSConfig
	switch {
	case cfg == nil:
		return c.optError(proto.OptStartTLS, proto.RepErrUnsup, "TLS is not configured on this server")
	case c.neg.tls:
		return c.optError(proto.OptStartTLS, proto.RepErrInvalid, "TLS is already active")
	case len(data) != 0:
		return c.optError(proto.OptStartTLS, proto.RepErrInvalid, "NBD_OPT_STARTTLS carries no data")
	}
	if err := c.optReply(proto.OptStartTLS, proto.RepAck, nil); err != nil {
		return err
	}
	tc := tls.Server(c.raw, cfg)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	c.setStream(tc)
	c.neg = negotiated{fixed: c.neg.fixed, noZeroes: c.neg.noZeroes, tls: true}
	return nil
}

// info answers NBD_OPT_INFO and NBD_OPT_GO.
func (c *conn) info(opt uint32, data []byte) (enter bool, err error) {
	name, infos, err := proto.ParseGoData(data)
	if err != nil {
		return false, c.optError(opt, proto.RepErrInvalid, err.Error())
	}
	if !c.knownExport(name) {
		return false, c.optError(opt, proto.RepErrUnknown, "unknown export")
	}
	replies := [][]byte{
		proto.AppendInfoExport(nil, c.exportInfo()),
		proto.AppendInfoBlockSize(nil, c.s.ex.blockSize),
	}
	if slices.Contains(infos, proto.InfoName) {
		replies = append(replies, proto.AppendInfoText(nil, proto.InfoName, c.s.opts.Name))
	}
	if d := c.s.opts.Description; d != "" && slices.Contains(infos, proto.InfoDescription) {
		replies = append(replies, proto.AppendInfoText(nil, proto.InfoDescription, d))
	}
	for _, r := range replies {
		if err := c.optReply(opt, proto.RepInfo, r); err != nil {
			return false, err
		}
	}
	if opt == proto.OptGo && c.s.ex.align > 1 && !slices.Contains(infos, proto.InfoBlockSize) {
		return false, c.optError(opt, proto.RepErrBlockSzReqd, "the export needs aligned requests: ask for NBD_INFO_BLOCK_SIZE")
	}
	if err := c.optReply(opt, proto.RepAck, nil); err != nil {
		return false, err
	}
	if opt != proto.OptGo {
		return false, nil
	}
	c.enter(name)
	return true, nil
}

// metaContext answers NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT for the one context, base:allocation.
func (c *conn) metaContext(opt uint32, data []byte) error {
	set := opt == proto.OptSetMetaContext
	if set {
		// A new selection replaces the old one, even when it fails.
		c.neg.meta, c.neg.metaExport = false, ""
	}
	if !c.neg.structured {
		return c.optError(opt, proto.RepErrInvalid, "negotiate NBD_OPT_STRUCTURED_REPLY first")
	}
	name, queries, err := proto.ParseMetaContextData(data)
	if err != nil {
		return c.optError(opt, proto.RepErrInvalid, err.Error())
	}
	if !c.knownExport(name) {
		return c.optError(opt, proto.RepErrUnknown, "unknown export")
	}
	var match bool
	for _, q := range queries {
		match = match || q == metaAllocation || (!set && q == "base:")
	}
	if !set && len(queries) == 0 {
		match = true // list everything
	}
	if match {
		var id uint32 // reserved, zero, in lists
		if set {
			id = metaAllocationID
		}
		if err := c.optReply(opt, proto.RepMetaContext, proto.AppendMetaContext(nil, id, metaAllocation)); err != nil {
			return err
		}
		if set {
			c.neg.meta, c.neg.metaExport = true, name
		}
	}
	return c.optReply(opt, proto.RepAck, nil)
}
