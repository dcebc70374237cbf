// Package proto holds the NBD wire constants and the encoding and decoding
// of fixed-size NBD messages, as set out in the NBD protocol document
// (NetworkBlockDevice/nbd doc/proto.md). All integers are big-endian.
//
// The package knows nothing about connections: decoders take byte slices
// and validate what can be validated without context (magic numbers, fixed
// lengths, field ranges). Everything that depends on the request being
// answered is checked by the caller.
package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Magic numbers.
const (
	MagicInit         uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	MagicOpt          uint64 = 0x49484156454F5054 // "IHAVEOPT"
	MagicOldstyle     uint64 = 0x00420281861253   // cliserv_magic of the oldstyle handshake
	MagicOptReply     uint64 = 0x3e889045565a9
	MagicRequest      uint32 = 0x25609513
	MagicSimpleReply  uint32 = 0x67446698
	MagicStructured   uint32 = 0x668e33ef
	MagicExtendedRepl uint32 = 0x6e8a278c // extended headers: never negotiated by us
)

// Handshake flags (server, 16 bits).
const (
	HandshakeFixedNewstyle uint16 = 1 << 0
	HandshakeNoZeroes      uint16 = 1 << 1
)

// Client flags (32 bits).
const (
	ClientFixedNewstyle uint32 = 1 << 0
	ClientNoZeroes      uint32 = 1 << 1
)

// Transmission flags (16 bits).
const (
	FlagHasFlags         uint16 = 1 << 0
	FlagReadOnly         uint16 = 1 << 1
	FlagSendFlush        uint16 = 1 << 2
	FlagSendFUA          uint16 = 1 << 3
	FlagRotational       uint16 = 1 << 4
	FlagSendTrim         uint16 = 1 << 5
	FlagSendWriteZeroes  uint16 = 1 << 6
	FlagSendDF           uint16 = 1 << 7
	FlagCanMultiConn     uint16 = 1 << 8
	FlagSendResize       uint16 = 1 << 9
	FlagSendCache        uint16 = 1 << 10
	FlagSendFastZero     uint16 = 1 << 11
	FlagBlockStatPayload uint16 = 1 << 12
)

// Option types.
const (
	OptExportName      uint32 = 1
	OptAbort           uint32 = 2
	OptList            uint32 = 3
	OptStartTLS        uint32 = 5
	OptInfo            uint32 = 6
	OptGo              uint32 = 7
	OptStructuredReply uint32 = 8
	OptListMetaContext uint32 = 9
	OptSetMetaContext  uint32 = 10
	OptExtendedHeaders uint32 = 11
)

// Option reply types. Error replies have bit 31 set.
const (
	RepAck            uint32 = 1
	RepServer         uint32 = 2
	RepInfo           uint32 = 3
	RepMetaContext    uint32 = 4
	RepFlagError      uint32 = 1 << 31
	RepErrUnsup       uint32 = RepFlagError | 1
	RepErrPolicy      uint32 = RepFlagError | 2
	RepErrInvalid     uint32 = RepFlagError | 3
	RepErrPlatform    uint32 = RepFlagError | 4
	RepErrTLSReqd     uint32 = RepFlagError | 5
	RepErrUnknown     uint32 = RepFlagError | 6
	RepErrShutdown    uint32 = RepFlagError | 7
	RepErrBlockSzReqd uint32 = RepFlagError | 8
	RepErrTooBig      uint32 = RepFlagError | 9
	RepErrExtHdrReqd  uint32 = RepFlagError | 10
)

// Information types of NBD_REP_INFO.
const (
	InfoExport      uint16 = 0
	InfoName        uint16 = 1
	InfoDescription uint16 = 2
	InfoBlockSize   uint16 = 3
)

// Command types.
const (
	CmdRead        uint16 = 0
	CmdWrite       uint16 = 1
	CmdDisc        uint16 = 2
	CmdFlush       uint16 = 3
	CmdTrim        uint16 = 4
	CmdCache       uint16 = 5
	CmdWriteZeroes uint16 = 6
	CmdBlockStatus uint16 = 7
)

// Command flags.
const (
	CmdFlagFUA      uint16 = 1 << 0
	CmdFlagNoHole   uint16 = 1 << 1
	CmdFlagDF       uint16 = 1 << 2
	CmdFlagReqOne   uint16 = 1 << 3
	CmdFlagFastZero uint16 = 1 << 4
)

// Structured reply flags and types.
const (
	ReplyFlagDone uint16 = 1 << 0

	ReplyTypeNone        uint16 = 0
	ReplyTypeOffsetData  uint16 = 1
	ReplyTypeOffsetHole  uint16 = 2
	ReplyTypeBlockStatus uint16 = 5
	ReplyTypeErrorBit    uint16 = 1 << 15
	ReplyTypeError       uint16 = ReplyTypeErrorBit | 1
	ReplyTypeErrorOffset uint16 = ReplyTypeErrorBit | 2
)

// Error values of replies.
const (
	EPERM     uint32 = 1
	EIO       uint32 = 5
	ENOMEM    uint32 = 12
	EINVAL    uint32 = 22
	ENOSPC    uint32 = 28
	EOVERFLOW uint32 = 75
	ENOTSUP   uint32 = 95
	ESHUTDOWN uint32 = 108
)

// ErrnoName returns the protocol's name and meaning of an error value,
// such as "NBD_EIO (input/output error)", or "" for a value the protocol
// does not define.
func ErrnoName(e uint32) string {
	switch e {
	case EPERM:
		return "NBD_EPERM (operation not permitted)"
	case EIO:
		return "NBD_EIO (input/output error)"
	case ENOMEM:
		return "NBD_ENOMEM (cannot allocate memory)"
	case EINVAL:
		return "NBD_EINVAL (invalid argument)"
	case ENOSPC:
		return "NBD_ENOSPC (no space left on device)"
	case EOVERFLOW:
		return "NBD_EOVERFLOW (value too large)"
	case ENOTSUP:
		return "NBD_ENOTSUP (operation not supported)"
	case ESHUTDOWN:
		return "NBD_ESHUTDOWN (server is shutting down)"
	}
	return ""
}

// base:allocation status flags.
const (
	StateHole uint32 = 1 << 0
	StateZero uint32 = 1 << 1
)

// Limits of the protocol.
const (
	// MaxString is the longest string (export name, message) the protocol
	// allows.
	MaxString = 4096
	// MaxMinBlock is the largest minimum block size a server may advertise.
	MaxMinBlock = 1 << 16
)

// Sizes of fixed messages in bytes.
const (
	RequestSize          = 28
	SimpleReplySize      = 16 // including the magic
	StructuredHeaderSize = 20 // including the magic
	OptReplyHeaderSize   = 20
	OptHeaderSize        = 16
	ErrorChunkMin        = 6  // error + message length
	ErrorOffsetChunkMin  = 14 // error + message length + offset
	OffsetHoleLen        = 12
	BlockDescriptorSize  = 8
)

// ErrMalformed is wrapped by every decoding error of this package.
var ErrMalformed = errors.New("malformed NBD message")

var be = binary.BigEndian

// Request is a transmission request header.
type Request struct {
	Flags  uint16
	Type   uint16
	Cookie uint64
	Offset uint64
	Length uint32
}

// Put encodes r into b.
func (r *Request) Put(b *[RequestSize]byte) {
	be.PutUint32(b[0:], MagicRequest)
	be.PutUint16(b[4:], r.Flags)
	be.PutUint16(b[6:], r.Type)
	be.PutUint64(b[8:], r.Cookie)
	be.PutUint64(b[16:], r.Offset)
	be.PutUint32(b[24:], r.Length)
}

// AppendOption appends an option request with its data to b.
func AppendOption(b []byte, opt uint32, data []byte) []byte {
	b = be.AppendUint64(b, MagicOpt)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// GoData encodes the data of NBD_OPT_GO or NBD_OPT_INFO.
func GoData(export string, infos ...uint16) []byte {
	b := be.AppendUint32(nil, uint32(len(export)))
	b = append(b, export...)
	b = be.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = be.AppendUint16(b, i)
	}
	return b
}

// MetaContextData encodes the data of NBD_OPT_SET_META_CONTEXT or
// NBD_OPT_LIST_META_CONTEXT.
func MetaContextData(export string, queries ...string) []byte {
	b := be.AppendUint32(nil, uint32(len(export)))
	b = append(b, export...)
	b = be.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = be.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// OptReply is the header of an option reply.
type OptReply struct {
	Option uint32
	Type   uint32
	Length uint32
}

// IsError reports whether the reply type is an error.
func (r OptReply) IsError() bool { return r.Type&RepFlagError != 0 }

// ParseOptReply decodes an option reply header.
func ParseOptReply(b []byte) (OptReply, error) {
	if len(b) != OptReplyHeaderSize {
		return OptReply{}, fmt.Errorf("%w: option reply header of %d bytes", ErrMalformed, len(b))
	}
	if m := be.Uint64(b); m != MagicOptReply {
		return OptReply{}, fmt.Errorf("%w: option reply magic %#x", ErrMalformed, m)
	}
	return OptReply{Option: be.Uint32(b[8:]), Type: be.Uint32(b[12:]), Length: be.Uint32(b[16:])}, nil
}

// ExportInfo is the payload of NBD_INFO_EXPORT or the reply to
// NBD_OPT_EXPORT_NAME.
type ExportInfo struct {
	Size  uint64
	Flags uint16
}

// BlockSize is the payload of NBD_INFO_BLOCK_SIZE.
type BlockSize struct {
	Min, Preferred, Max uint32
}

// Validate checks the constraints the protocol puts on advertised block
// sizes.
func (bs BlockSize) Validate() error {
	if bs.Min == 0 || bs.Min&(bs.Min-1) != 0 || bs.Min > MaxMinBlock {
		return fmt.Errorf("%w: minimum block size %d is not a power of 2 in [1, 65536]", ErrMalformed, bs.Min)
	}
	if bs.Preferred == 0 || bs.Preferred&(bs.Preferred-1) != 0 || bs.Preferred < bs.Min {
		return fmt.Errorf("%w: preferred block size %d is not a power of 2 at least %d", ErrMalformed, bs.Preferred, bs.Min)
	}
	if bs.Max != 0xffffffff && (bs.Max < bs.Min || bs.Max%bs.Min != 0) {
		return fmt.Errorf("%w: maximum block size %d is not a multiple of the minimum %d", ErrMalformed, bs.Max, bs.Min)
	}
	return nil
}

// Info is a decoded NBD_REP_INFO payload. Only the field matching Type is
// set.
type Info struct {
	Type      uint16
	Export    ExportInfo
	BlockSize BlockSize
	Text      string // InfoName, InfoDescription
}

// ParseInfo decodes the payload of an NBD_REP_INFO reply. Unknown
// information types are returned with only Type set.
func ParseInfo(b []byte) (Info, error) {
	if len(b) < 2 {
		return Info{}, fmt.Errorf("%w: NBD_REP_INFO of %d bytes", ErrMalformed, len(b))
	}
	in := Info{Type: be.Uint16(b)}
	p := b[2:]
	switch in.Type {
	case InfoExport:
		if len(p) != 10 {
			return Info{}, fmt.Errorf("%w: NBD_INFO_EXPORT of %d bytes, want 12", ErrMalformed, len(b))
		}
		in.Export = ExportInfo{Size: be.Uint64(p), Flags: be.Uint16(p[8:])}
	case InfoBlockSize:
		if len(p) != 12 {
			return Info{}, fmt.Errorf("%w: NBD_INFO_BLOCK_SIZE of %d bytes, want 14", ErrMalformed, len(b))
		}
		in.BlockSize = BlockSize{Min: be.Uint32(p), Preferred: be.Uint32(p[4:]), Max: be.Uint32(p[8:])}
	case InfoName, InfoDescription:
		if len(p) > MaxString {
			return Info{}, fmt.Errorf("%w: string of %d bytes", ErrMalformed, len(p))
		}
		in.Text = string(p)
	}
	return in, nil
}

// ParseMetaContext decodes the payload of an NBD_REP_META_CONTEXT reply.
func ParseMetaContext(b []byte) (id uint32, name string, err error) {
	if len(b) < 4 || len(b) > 4+MaxString {
		return 0, "", fmt.Errorf("%w: NBD_REP_META_CONTEXT of %d bytes", ErrMalformed, len(b))
	}
	return be.Uint32(b), string(b[4:]), nil
}

// ParseExportName decodes the reply to NBD_OPT_EXPORT_NAME (without the
// optional 124 bytes of zeroes).
func ParseExportName(b []byte) (ExportInfo, error) {
	if len(b) != 10 {
		return ExportInfo{}, fmt.Errorf("%w: export reply of %d bytes", ErrMalformed, len(b))
	}
	return ExportInfo{Size: be.Uint64(b), Flags: be.Uint16(b[8:])}, nil
}

// SimpleReply is a simple reply header.
type SimpleReply struct {
	Error  uint32
	Cookie uint64
}

// ParseSimpleReply decodes a simple reply header, magic included.
func ParseSimpleReply(b []byte) (SimpleReply, error) {
	if len(b) != SimpleReplySize || be.Uint32(b) != MagicSimpleReply {
		return SimpleReply{}, fmt.Errorf("%w: simple reply header", ErrMalformed)
	}
	return SimpleReply{Error: be.Uint32(b[4:]), Cookie: be.Uint64(b[8:])}, nil
}

// Chunk is a structured reply chunk header.
type Chunk struct {
	Flags  uint16
	Type   uint16
	Cookie uint64
	Length uint32
}

// Done reports whether the chunk is the last of its reply.
func (c Chunk) Done() bool { return c.Flags&ReplyFlagDone != 0 }

// ParseChunk decodes a structured reply chunk header, magic included, and
// checks the payload length of the known chunk types.
func ParseChunk(b []byte) (Chunk, error) {
	if len(b) != StructuredHeaderSize || be.Uint32(b) != MagicStructured {
		return Chunk{}, fmt.Errorf("%w: structured reply header", ErrMalformed)
	}
	c := Chunk{Flags: be.Uint16(b[4:]), Type: be.Uint16(b[6:]), Cookie: be.Uint64(b[8:]), Length: be.Uint32(b[16:])}
	var bad bool
	switch c.Type {
	case ReplyTypeNone:
		bad = c.Length != 0 || !c.Done()
	case ReplyTypeOffsetData:
		bad = c.Length < 9
	case ReplyTypeOffsetHole:
		bad = c.Length != OffsetHoleLen
	case ReplyTypeBlockStatus:
		bad = c.Length < 4+BlockDescriptorSize || (c.Length-4)%BlockDescriptorSize != 0
	case ReplyTypeError:
		bad = c.Length < ErrorChunkMin
	case ReplyTypeErrorOffset:
		bad = c.Length < ErrorOffsetChunkMin
	default:
		bad = c.Type&ReplyTypeErrorBit == 0 // unknown non-error types are fatal
	}
	if bad {
		return Chunk{}, fmt.Errorf("%w: chunk type %d with flags %#x and length %d", ErrMalformed, c.Type, c.Flags, c.Length)
	}
	return c, nil
}

// ErrorChunk is the decoded payload of an error chunk.
type ErrorChunk struct {
	Error     uint32
	Message   string
	Offset    uint64
	HasOffset bool
}

// ParseErrorChunk decodes the payload of an error chunk of type typ. For
// unknown error types (bit 15 set) the payload may be shorter than 6 bytes;
// the error is then reported as EINVAL, which the protocol prescribes for
// unexpected values.
func ParseErrorChunk(typ uint16, b []byte) (ErrorChunk, error) {
	if len(b) < ErrorChunkMin {
		if typ != ReplyTypeError && typ != ReplyTypeErrorOffset {
			return ErrorChunk{Error: EINVAL, Message: fmt.Sprintf("unknown error chunk type %#x", typ)}, nil
		}
		return ErrorChunk{}, fmt.Errorf("%w: error chunk of %d bytes", ErrMalformed, len(b))
	}
	e := ErrorChunk{Error: be.Uint32(b)}
	n := int(be.Uint16(b[4:]))
	rest := b[ErrorChunkMin:]
	if n > len(rest) {
		return ErrorChunk{}, fmt.Errorf("%w: error message of %d bytes in a chunk of %d", ErrMalformed, n, len(b))
	}
	e.Message = string(rest[:n])
	rest = rest[n:]
	switch typ {
	case ReplyTypeError:
		if len(rest) != 0 {
			return ErrorChunk{}, fmt.Errorf("%w: %d trailing bytes in NBD_REPLY_TYPE_ERROR", ErrMalformed, len(rest))
		}
	case ReplyTypeErrorOffset:
		if len(rest) != 8 {
			return ErrorChunk{}, fmt.Errorf("%w: NBD_REPLY_TYPE_ERROR_OFFSET has %d bytes after the message, want 8", ErrMalformed, len(rest))
		}
		e.Offset, e.HasOffset = be.Uint64(rest), true
	}
	if e.Error == 0 {
		return ErrorChunk{}, fmt.Errorf("%w: error chunk with error 0", ErrMalformed)
	}
	return e, nil
}

// ParseOffsetHole decodes the payload of an NBD_REPLY_TYPE_OFFSET_HOLE
// chunk.
func ParseOffsetHole(b []byte) (off uint64, size uint32, err error) {
	if len(b) != OffsetHoleLen {
		return 0, 0, fmt.Errorf("%w: hole chunk of %d bytes", ErrMalformed, len(b))
	}
	off, size = be.Uint64(b), be.Uint32(b[8:])
	if size == 0 {
		return 0, 0, fmt.Errorf("%w: hole of 0 bytes", ErrMalformed)
	}
	return off, size, nil
}

// BlockDescriptor is one extent of an NBD_REPLY_TYPE_BLOCK_STATUS chunk.
type BlockDescriptor struct {
	Length uint32
	Status uint32
}

// ParseBlockDescriptor decodes one block descriptor.
func ParseBlockDescriptor(b []byte) (BlockDescriptor, error) {
	if len(b) != BlockDescriptorSize {
		return BlockDescriptor{}, fmt.Errorf("%w: block descriptor of %d bytes", ErrMalformed, len(b))
	}
	d := BlockDescriptor{Length: be.Uint32(b), Status: be.Uint32(b[4:])}
	if d.Length == 0 {
		return BlockDescriptor{}, fmt.Errorf("%w: block descriptor of length 0", ErrMalformed)
	}
	return d, nil
}

// Uint32 and Uint64 decode big-endian integers; they exist so that callers
// need not import encoding/binary for one field.
func Uint32(b []byte) uint32 { return be.Uint32(b) }

// Uint64 decodes a big-endian uint64.
func Uint64(b []byte) uint64 { return be.Uint64(b) }

// Uint16 decodes a big-endian uint16.
func Uint16(b []byte) uint16 { return be.Uint16(b) }

// The server side: decoding what clients send and encoding replies.

// Sizes of fixed server messages in bytes.
const (
	// GreetingSize is the server's opening: NBDMAGIC, IHAVEOPT and the
	// handshake flags.
	GreetingSize = 18
	// ExportNameReplySize is the reply to NBD_OPT_EXPORT_NAME without its
	// 124 bytes of zero padding.
	ExportNameReplySize = 10
	// ExportNamePadding is the zero padding after the reply to
	// NBD_OPT_EXPORT_NAME that clients without NBD_FLAG_C_NO_ZEROES expect.
	ExportNamePadding = 124
)

// AppendGreeting appends the fixed newstyle greeting with handshake flags
// to b.
func AppendGreeting(b []byte, flags uint16) []byte {
	b = be.AppendUint64(b, MagicInit)
	b = be.AppendUint64(b, MagicOpt)
	return be.AppendUint16(b, flags)
}

// OptHeader is the header of an option request.
type OptHeader struct {
	Option uint32
	Length uint32 // length of the option data that follows
}

// ParseOptHeader decodes an option request header and checks its magic.
func ParseOptHeader(b []byte) (OptHeader, error) {
	if len(b) != OptHeaderSize {
		return OptHeader{}, fmt.Errorf("%w: option header of %d bytes", ErrMalformed, len(b))
	}
	if m := be.Uint64(b); m != MagicOpt {
		return OptHeader{}, fmt.Errorf("%w: option magic %#x is not IHAVEOPT", ErrMalformed, m)
	}
	return OptHeader{Option: be.Uint32(b[8:]), Length: be.Uint32(b[12:])}, nil
}

// AppendOptReply appends an option reply with its data to b.
func AppendOptReply(b []byte, opt, typ uint32, data []byte) []byte {
	b = be.AppendUint64(b, MagicOptReply)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, typ)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// ParseGoData decodes the data of NBD_OPT_GO or NBD_OPT_INFO: the export
// name and the information requests. It is the inverse of GoData.
func ParseGoData(b []byte) (export string, infos []uint16, err error) {
	if len(b) < 6 {
		return "", nil, fmt.Errorf("%w: NBD_OPT_GO data of %d bytes", ErrMalformed, len(b))
	}
	n := be.Uint32(b)
	if n > MaxString || int(n) > len(b)-6 {
		return "", nil, fmt.Errorf("%w: export name of %d bytes in NBD_OPT_GO data of %d", ErrMalformed, n, len(b))
	}
	export = string(b[4 : 4+n])
	rest := b[4+n:]
	k := int(be.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*k {
		return "", nil, fmt.Errorf("%w: %d information requests in %d bytes", ErrMalformed, k, len(rest))
	}
	infos = make([]uint16, k)
	for i := range infos {
		infos[i] = be.Uint16(rest[2*i:])
	}
	return export, infos, nil
}

// ParseMetaContextData decodes the data of NBD_OPT_SET_META_CONTEXT or
// NBD_OPT_LIST_META_CONTEXT. It is the inverse of MetaContextData.
func ParseMetaContextData(b []byte) (export string, queries []string, err error) {
	str := func(what string) (string, error) {
		if len(b) < 4 {
			return "", fmt.Errorf("%w: meta context data ends before the %s", ErrMalformed, what)
		}
		n := be.Uint32(b)
		if n > MaxString || int(n) > len(b)-4 {
			return "", fmt.Errorf("%w: %s of %d bytes in %d", ErrMalformed, what, n, len(b)-4)
		}
		s := string(b[4 : 4+n])
		b = b[4+n:]
		return s, nil
	}
	if export, err = str("export name"); err != nil {
		return "", nil, err
	}
	if len(b) < 4 {
		return "", nil, fmt.Errorf("%w: meta context data lacks the number of queries", ErrMalformed)
	}
	k := be.Uint32(b)
	b = b[4:]
	if uint64(k)*4 > uint64(len(b)) {
		return "", nil, fmt.Errorf("%w: %d queries in %d bytes", ErrMalformed, k, len(b))
	}
	queries = make([]string, 0, k)
	for range k {
		q, err := str("query")
		if err != nil {
			return "", nil, err
		}
		queries = append(queries, q)
	}
	if len(b) != 0 {
		return "", nil, fmt.Errorf("%w: %d bytes after the last query", ErrMalformed, len(b))
	}
	return export, queries, nil
}

// AppendInfoExport appends the payload of NBD_REP_INFO with
// NBD_INFO_EXPORT to b.
func AppendInfoExport(b []byte, e ExportInfo) []byte {
	b = be.AppendUint16(b, InfoExport)
	b = be.AppendUint64(b, e.Size)
	return be.AppendUint16(b, e.Flags)
}

// AppendInfoBlockSize appends the payload of NBD_REP_INFO with
// NBD_INFO_BLOCK_SIZE to b.
func AppendInfoBlockSize(b []byte, bs BlockSize) []byte {
	b = be.AppendUint16(b, InfoBlockSize)
	b = be.AppendUint32(b, bs.Min)
	b = be.AppendUint32(b, bs.Preferred)
	return be.AppendUint32(b, bs.Max)
}

// AppendInfoText appends the payload of NBD_REP_INFO with a string
// information type (NBD_INFO_NAME, NBD_INFO_DESCRIPTION) to b.
func AppendInfoText(b []byte, typ uint16, s string) []byte {
	return append(be.AppendUint16(b, typ), s...)
}

// AppendExportName appends the reply to NBD_OPT_EXPORT_NAME to b, with the
// 124 bytes of padding unless noZeroes.
func AppendExportName(b []byte, e ExportInfo, noZeroes bool) []byte {
	b = be.AppendUint64(b, e.Size)
	b = be.AppendUint16(b, e.Flags)
	if !noZeroes {
		b = append(b, make([]byte, ExportNamePadding)...)
	}
	return b
}

// AppendString appends a length-prefixed (32 bits) string to b, the
// payload of NBD_REP_SERVER.
func AppendString(b []byte, s string) []byte {
	return append(be.AppendUint32(b, uint32(len(s))), s...)
}

// AppendMetaContext appends the payload of NBD_REP_META_CONTEXT to b.
func AppendMetaContext(b []byte, id uint32, name string) []byte {
	return append(be.AppendUint32(b, id), name...)
}

// ParseRequest decodes a transmission request header and checks its magic.
func ParseRequest(b []byte) (Request, error) {
	if len(b) != RequestSize {
		return Request{}, fmt.Errorf("%w: request header of %d bytes", ErrMalformed, len(b))
	}
	if m := be.Uint32(b); m != MagicRequest {
		return Request{}, fmt.Errorf("%w: request magic %#x", ErrMalformed, m)
	}
	return Request{
		Flags:  be.Uint16(b[4:]),
		Type:   be.Uint16(b[6:]),
		Cookie: be.Uint64(b[8:]),
		Offset: be.Uint64(b[16:]),
		Length: be.Uint32(b[24:]),
	}, nil
}

// AppendSimpleReply appends a simple reply header to b.
func AppendSimpleReply(b []byte, errno uint32, cookie uint64) []byte {
	b = be.AppendUint32(b, MagicSimpleReply)
	b = be.AppendUint32(b, errno)
	return be.AppendUint64(b, cookie)
}

// AppendChunk appends a structured reply chunk header for a payload of
// length bytes to b.
func AppendChunk(b []byte, flags, typ uint16, cookie uint64, length uint32) []byte {
	b = be.AppendUint32(b, MagicStructured)
	b = be.AppendUint16(b, flags)
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, cookie)
	return be.AppendUint32(b, length)
}

// AppendErrorChunk appends a complete final NBD_REPLY_TYPE_ERROR chunk,
// header included, to b. msg is cut to MaxString bytes.
func AppendErrorChunk(b []byte, cookie uint64, errno uint32, msg string) []byte {
	if len(msg) > MaxString {
		msg = msg[:MaxString]
	}
	b = AppendChunk(b, ReplyFlagDone, ReplyTypeError, cookie, uint32(ErrorChunkMin+len(msg)))
	b = be.AppendUint32(b, errno)
	b = be.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// AppendBlockDescriptor appends one block descriptor to b.
func AppendBlockDescriptor(b []byte, d BlockDescriptor) []byte {
	b = be.AppendUint32(b, d.Length)
	return be.AppendUint32(b, d.Status)
}

// AppendUint32 and AppendUint64 encode big-endian integers, so that
// callers need not import encoding/binary.
func AppendUint32(b []byte, v uint32) []byte { return be.AppendUint32(b, v) }

// AppendUint64 appends a big-endian uint64 to b.
func AppendUint64(b []byte, v uint64) []byte { return be.AppendUint64(b, v) }
