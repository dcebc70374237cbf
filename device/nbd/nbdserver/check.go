package nbdserver

import "github.com/kcopyd/kcopyd/device/nbd/internal/proto"

// knownCmdFlags are the command flags the server understands.
const knownCmdFlags = proto.CmdFlagFUA | proto.CmdFlagNoHole | proto.CmdFlagDF |
	proto.CmdFlagReqOne | proto.CmdFlagFastZero

// check validates a request against the protocol and the negotiated
// export. It returns the error value to answer with, or 0. The values
// follow the protocol: EPERM for writes to a read-only export, ENOSPC for
// writes past the end, EINVAL for other bad ranges, misalignment, unknown
// commands and flags not valid for the command, EOVERFLOW for a read too
// large for one chunk when NBD_CMD_FLAG_DF is set.
func (c *conn) check(r proto.Request) uint32 {
	ex := &c.s.ex
	writes := r.Type == proto.CmdWrite || r.Type == proto.CmdWriteZeroes || r.Type == proto.CmdTrim
	if writes && c.s.opts.ReadOnly {
		return proto.EPERM
	}
	if r.Flags&^c.allowedFlags(r.Type) != 0 {
		return proto.EINVAL
	}
	size := uint64(ex.size)
	inRange := r.Offset <= size && uint64(r.Length) <= size-r.Offset
	aligned := r.Offset%uint64(ex.align) == 0 && uint64(r.Length)%uint64(ex.align) == 0
	tooBig := r.Length > uint32(c.s.opts.MaxPayload)
	switch r.Type {
	case proto.CmdRead:
		switch {
		case tooBig && r.Flags&proto.CmdFlagDF != 0:
			return proto.EOVERFLOW
		case tooBig, !inRange, !aligned:
			return proto.EINVAL
		}
	case proto.CmdWrite, proto.CmdWriteZeroes:
		switch {
		case tooBig && r.Type == proto.CmdWrite, !aligned, r.Length == 0 && r.Type == proto.CmdWriteZeroes:
			return proto.EINVAL
		case !inRange:
			return proto.ENOSPC
		}
	case proto.CmdTrim:
		if ex.discarder == nil || !inRange || !aligned || r.Length == 0 {
			return proto.EINVAL
		}
	case proto.CmdFlush:
		if c.s.opts.ReadOnly || r.Offset != 0 || r.Length != 0 {
			return proto.EINVAL
		}
	case proto.CmdBlockStatus:
		if !c.neg.meta || !inRange || r.Length == 0 {
			return proto.EINVAL
		}
	default:
		return proto.EINVAL
	}
	return 0
}

// allowedFlags returns the command flags valid on a command of type typ
// on this connection: FUA on every command when NBD_FLAG_SEND_FUA was
// announced, the others on the one command each belongs to.
func (c *conn) allowedFlags(typ uint16) uint16 {
	var f uint16
	flags := c.s.ex.transmissionFlags(c.neg.structured)
	if flags&proto.FlagSendFUA != 0 {
		f |= proto.CmdFlagFUA
	}
	switch typ {
	case proto.CmdRead:
		if flags&proto.FlagSendDF != 0 {
			f |= proto.CmdFlagDF
		}
	case proto.CmdWriteZeroes:
		f |= proto.CmdFlagNoHole
		if flags&proto.FlagSendFastZero != 0 {
			f |= proto.CmdFlagFastZero
		}
	case proto.CmdBlockStatus:
		f |= proto.CmdFlagReqOne
	}
	return f & knownCmdFlags
}
