package nbd

import (
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
)

// Handshake bounds: a server cannot make the client allocate or loop more
// than this during option haggling.
const (
	maxOptReplyLen  = 64 << 10 // payload of one option reply
	maxInfoReplies  = 64       // NBD_REP_INFO replies to one NBD_OPT_GO
	maxMetaReplies  = 64       // NBD_REP_META_CONTEXT replies
	metaAllocation  = "base:allocation"
	exportNameZeros = 124
)

// export is what the handshake negotiated for one connection.
type export struct {
	size          int64
	flags         uint16
	blockSize     proto.BlockSize // zero when not advertised
	structured    bool
	metaID        uint32
	hasMeta       bool
	fixedNewstyle bool
	usedExportOpt bool // fell back to NBD_OPT_EXPORT_NAME
	tls           bool
	description   string
}

// handshaker runs the client side of the fixed newstyle handshake on rw.
// startTLS, called after the server acknowledged NBD_OPT_STARTTLS, returns
// the encrypted stream; it is nil when TLS is not wanted.
type handshaker struct {
	rw       io.ReadWriter
	name     string
	startTLS func() (io.ReadWriter, error)
	ex       export
}

// handshake negotiates the export and returns the stream to use for
// transmission (rw, or its TLS upgrade).
func handshake(rw io.ReadWriter, exportName string, startTLS func() (io.ReadWriter, error)) (io.ReadWriter, *export, error) {
	h := &handshaker{rw: rw, name: exportName, startTLS: startTLS}
	if err := h.run(); err != nil {
		return nil, nil, err
	}
	return h.rw, &h.ex, nil
}

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: handshake: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

func (h *handshaker) read(n int, what string) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(h.rw, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: server closed the connection while sending %s", ErrDisconnected, what)
		}
		return nil, fmt.Errorf("%w: reading %s: %w", ErrDisconnected, what, err)
	}
	return b, nil
}

func (h *handshaker) write(b []byte) error {
	if _, err := h.rw.Write(b); err != nil {
		return fmt.Errorf("%w: handshake: %w", ErrDisconnected, err)
	}
	return nil
}

func (h *handshaker) sendOpt(opt uint32, data []byte) error {
	return h.write(proto.AppendOption(nil, opt, data))
}

// abort ends option haggling politely after an option error; errors are
// ignored because the connection is being dropped anyway.
func (h *handshaker) abort() { _ = h.sendOpt(proto.OptAbort, nil) }

// reply reads one option reply to opt.
func (h *handshaker) reply(opt uint32) (proto.OptReply, []byte, error) {
	b, err := h.read(proto.OptReplyHeaderSize, "an option reply")
	if err != nil {
		return proto.OptReply{}, nil, err
	}
	r, err := proto.ParseOptReply(b)
	if err != nil {
		return r, nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if r.Option != opt {
		return r, nil, protoErr("reply to %s while waiting for %s", optionName(r.Option), optionName(opt))
	}
	if r.Length > maxOptReplyLen {
		return r, nil, protoErr("%s reply of %d bytes", optionName(opt), r.Length)
	}
	p, err := h.read(int(r.Length), "an option reply")
	return r, p, err
}

// optErr converts an error reply into an error wrapping the right
// sentinel.
func (h *handshaker) optErr(r proto.OptReply, payload []byte) error {
	s := ErrRefused
	switch r.Type {
	case proto.RepErrUnknown:
		s = ErrUnknownExport
	case proto.RepErrTLSReqd:
		if h.ex.tls {
			return protoErr("%s answered NBD_REP_ERR_TLS_REQD after TLS was set up", optionName(r.Option))
		}
		s = ErrTLSRequired
	}
	return &optionError{sentinel: s, option: r.Option, reply: r.Type, message: string(payload)}
}

func (h *handshaker) run() error {
	b, err := h.read(16, "the greeting")
	if err != nil {
		return err
	}
	if m := proto.Uint64(b); m != proto.MagicInit {
		return protoErr("greeting magic %#x is not NBDMAGIC: not an NBD server", m)
	}
	switch m := proto.Uint64(b[8:]); m {
	case proto.MagicOpt:
	case proto.MagicOldstyle:
		return ErrOldstyle
	default:
		return protoErr("unknown handshake magic %#x", m)
	}
	if b, err = h.read(2, "the handshake flags"); err != nil {
		return err
	}
	hflags := proto.Uint16(b)
	h.ex.fixedNewstyle = hflags&proto.HandshakeFixedNewstyle != 0
	noZeroes := hflags&proto.HandshakeNoZeroes != 0
	var cflags uint32
	if h.ex.fixedNewstyle {
		cflags |= proto.ClientFixedNewstyle
	}
	if noZeroes {
		cflags |= proto.ClientNoZeroes
	}
	if err := h.write([]byte{byte(cflags >> 24), byte(cflags >> 16), byte(cflags >> 8), byte(cflags)}); err != nil {
		return err
	}

	if !h.ex.fixedNewstyle {
		if h.startTLS != nil {
			// The export name must not travel in clear: drop the
			// connection without sending it.
			return fmt.Errorf("%w: the server does not support fixed newstyle negotiation", ErrTLSUnavailable)
		}
		return h.exportName(noZeroes)
	}

	if h.startTLS != nil {
		if err := h.starttls(); err != nil {
			return err
		}
	}

	if err := h.structured(); err != nil {
		return err
	}
	if h.ex.structured {
		if err := h.metaContext(); err != nil {
			return err
		}
	}
	fallback, err := h.goOpt()
	if err != nil || !fallback {
		return err
	}
	return h.exportName(noZeroes)
}

func (h *handshaker) starttls() error {
	if err := h.sendOpt(proto.OptStartTLS, nil); err != nil {
		return err
	}
	r, p, err := h.reply(proto.OptStartTLS)
	if err != nil {
		return err
	}
	switch {
	case r.Type == proto.RepAck:
	case r.IsError():
		h.abort()
		return &optionError{sentinel: ErrTLSUnavailable, option: r.Option, reply: r.Type, message: string(p)}
	default:
		return protoErr("NBD_OPT_STARTTLS answered %s", replyName(r.Type))
	}
	rw, err := h.startTLS()
	if err != nil {
		return err
	}
	h.rw, h.ex.tls = rw, true
	return nil
}

func (h *handshaker) structured() error {
	if err := h.sendOpt(proto.OptStructuredReply, nil); err != nil {
		return err
	}
	r, p, err := h.reply(proto.OptStructuredReply)
	if err != nil {
		return err
	}
	switch {
	case r.Type == proto.RepAck:
		h.ex.structured = true
	case r.Type == proto.RepErrTLSReqd, r.Type == proto.RepErrShutdown:
		h.abort()
		return h.optErr(r, p)
	case r.IsError():
		// NBD_REP_ERR_UNSUP and friends: simple replies only.
	default:
		return protoErr("NBD_OPT_STRUCTURED_REPLY answered %s", replyName(r.Type))
	}
	return nil
}

func (h *handshaker) metaContext() error {
	if err := h.sendOpt(proto.OptSetMetaContext, proto.MetaContextData(h.name, metaAllocation)); err != nil {
		return err
	}
	var id uint32
	var found bool
	for i := 0; ; i++ {
		if i > maxMetaReplies {
			return protoErr("more than %d replies to NBD_OPT_SET_META_CONTEXT", maxMetaReplies)
		}
		r, p, err := h.reply(proto.OptSetMetaContext)
		if err != nil {
			return err
		}
		switch {
		case r.Type == proto.RepMetaContext:
			cid, name, err := proto.ParseMetaContext(p)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			if name == metaAllocation {
				if found {
					return protoErr("%s selected twice", metaAllocation)
				}
				id, found = cid, true
			}
		case r.Type == proto.RepAck:
			h.ex.metaID, h.ex.hasMeta = id, found
			return nil
		case r.Type == proto.RepErrTLSReqd, r.Type == proto.RepErrShutdown:
			h.abort()
			return h.optErr(r, p)
		case r.IsError():
			return nil // no block status; contexts sent before the error do not count
		default:
			return protoErr("NBD_OPT_SET_META_CONTEXT answered %s", replyName(r.Type))
		}
	}
}

// goOpt sends NBD_OPT_GO. It returns fallback=true when the server does not
// know the option and NBD_OPT_EXPORT_NAME must be used instead.
func (h *handshaker) goOpt() (fallback bool, err error) {
	if err := h.sendOpt(proto.OptGo, proto.GoData(h.name, proto.InfoExport, proto.InfoBlockSize, proto.InfoDescription)); err != nil {
		return false, err
	}
	var haveExport, haveBlockSize bool
	for i := 0; ; i++ {
		if i > maxInfoReplies {
			return false, protoErr("more than %d replies to NBD_OPT_GO", maxInfoReplies)
		}
		r, p, err := h.reply(proto.OptGo)
		if err != nil {
			return false, err
		}
		switch {
		case r.Type == proto.RepInfo:
			in, err := proto.ParseInfo(p)
			if err != nil {
				return false, fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			switch in.Type {
			case proto.InfoExport:
				if err := h.setExport(in.Export); err != nil {
					return false, err
				}
				haveExport = true
			case proto.InfoBlockSize:
				if err := in.BlockSize.Validate(); err != nil {
					return false, fmt.Errorf("%w: %w", ErrProtocol, err)
				}
				h.ex.blockSize, haveBlockSize = in.BlockSize, true
			case proto.InfoDescription:
				h.ex.description = in.Text
			}
		case r.Type == proto.RepAck:
			if !haveExport {
				return false, protoErr("NBD_OPT_GO succeeded without NBD_INFO_EXPORT")
			}
			if !haveBlockSize {
				h.ex.blockSize = proto.BlockSize{}
			}
			return false, nil
		case r.Type == proto.RepErrUnsup:
			return true, nil
		case r.IsError():
			h.abort()
			return false, h.optErr(r, p)
		default:
			return false, protoErr("NBD_OPT_GO answered %s", replyName(r.Type))
		}
	}
}

// exportName ends negotiation with NBD_OPT_EXPORT_NAME, which has no error
// reply: a server that does not like the name drops the connection.
func (h *handshaker) exportName(noZeroes bool) error {
	h.ex.usedExportOpt = true
	h.ex.blockSize = proto.BlockSize{}
	if err := h.sendOpt(proto.OptExportName, []byte(h.name)); err != nil {
		return err
	}
	n := 10
	if !noZeroes {
		n += exportNameZeros
	}
	b, err := h.read(n, "the export information")
	if err != nil {
		return fmt.Errorf("%w: the server dropped the connection after NBD_OPT_EXPORT_NAME %q (unknown export, or TLS required): %w",
			ErrUnknownExport, h.name, err)
	}
	ei, err := proto.ParseExportName(b[:10])
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return h.setExport(ei)
}

func (h *handshaker) setExport(ei proto.ExportInfo) error {
	if ei.Size > math.MaxInt64 {
		return protoErr("export size %d does not fit in int64", ei.Size)
	}
	if ei.Flags&proto.FlagHasFlags == 0 {
		return protoErr("transmission flags %#x lack NBD_FLAG_HAS_FLAGS", ei.Flags)
	}
	h.ex.size, h.ex.flags = int64(ei.Size), ei.Flags
	return nil
}
