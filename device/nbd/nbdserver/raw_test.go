package nbdserver_test

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
)

// rawClient speaks the protocol byte by byte, to send what well-behaved
// clients never send.
type rawClient struct {
	tb testing.TB
	c  net.Conn
}

// dialRaw connects to the server's socket and reads the greeting.
func dialRaw(tb testing.TB, s *served) *rawClient {
	tb.Helper()
	c, err := net.Dial("unix", s.sock)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := &rawClient{tb: tb, c: c}
	g := r.read(proto.GreetingSize)
	if proto.Uint64(g) != proto.MagicInit || proto.Uint64(g[8:]) != proto.MagicOpt {
		tb.Fatalf("greeting %x", g)
	}
	if f := proto.Uint16(g[16:]); f != proto.HandshakeFixedNewstyle|proto.HandshakeNoZeroes {
		tb.Fatalf("handshake flags %#x", f)
	}
	return r
}

func (r *rawClient) write(b []byte) {
	r.tb.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.tb.Fatalf("write: %v", err)
	}
}

func (r *rawClient) read(n int) []byte {
	r.tb.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r.c, b); err != nil {
		r.tb.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

// flags sends the client flags.
func (r *rawClient) flags(f uint32) { r.write(proto.AppendUint32(nil, f)) }

// opt sends an option and reads one reply.
func (r *rawClient) opt(opt uint32, data []byte) (proto.OptReply, []byte) {
	r.tb.Helper()
	r.write(proto.AppendOption(nil, opt, data))
	return r.optReply(opt)
}

func (r *rawClient) optReply(opt uint32) (proto.OptReply, []byte) {
	r.tb.Helper()
	rep, err := proto.ParseOptReply(r.read(proto.OptReplyHeaderSize))
	if err != nil {
		r.tb.Fatal(err)
	}
	if rep.Option != opt {
		r.tb.Fatalf("reply to option %d, want %d", rep.Option, opt)
	}
	return rep, r.read(int(rep.Length))
}

// expectOpt sends an option and checks the type of its final reply.
func (r *rawClient) expectOpt(opt uint32, data []byte, want uint32) {
	r.tb.Helper()
	rep, _ := r.opt(opt, data)
	for rep.Type == proto.RepInfo || rep.Type == proto.RepServer || rep.Type == proto.RepMetaContext {
		rep, _ = r.optReply(opt)
	}
	if rep.Type != want {
		r.tb.Fatalf("option %d answered %#x; want %#x", opt, rep.Type, want)
	}
}

// start negotiates fixed newstyle, optionally structured replies and
// base:allocation, and enters transmission with NBD_OPT_GO.
func (r *rawClient) start(structured, meta bool) {
	r.tb.Helper()
	r.flags(proto.ClientFixedNewstyle | proto.ClientNoZeroes)
	if structured {
		r.expectOpt(proto.OptStructuredReply, nil, proto.RepAck)
	}
	if meta {
		r.expectOpt(proto.OptSetMetaContext, proto.MetaContextData("", "base:allocation"), proto.RepAck)
	}
	r.expectOpt(proto.OptGo, proto.GoData("", proto.InfoBlockSize), proto.RepAck)
}

// request sends a transmission request with an optional payload.
func (r *rawClient) request(typ, flags uint16, cookie, off uint64, length uint32, payload []byte) {
	r.tb.Helper()
	var b [proto.RequestSize]byte
	(&proto.Request{Type: typ, Flags: flags, Cookie: cookie, Offset: off, Length: length}).Put(&b)
	r.write(append(b[:], payload...))
}

// reply reads one whole reply (simple, or all chunks of a structured one)
// and returns its cookie, error value and data (read data, or the block
// status payload).
func (r *rawClient) reply() (cookie uint64, errno uint32, data []byte) {
	r.tb.Helper()
	h := r.read(4)
	switch proto.Uint32(h) {
	case proto.MagicSimpleReply:
		sr, err := proto.ParseSimpleReply(append(h, r.read(proto.SimpleReplySize-4)...))
		if err != nil {
			r.tb.Fatal(err)
		}
		return sr.Cookie, sr.Error, nil
	case proto.MagicStructured:
		for {
			ch, err := proto.ParseChunk(append(h, r.read(proto.StructuredHeaderSize-4)...))
			if err != nil {
				r.tb.Fatal(err)
			}
			p := r.read(int(ch.Length))
			cookie = ch.Cookie
			switch {
			case ch.Type&proto.ReplyTypeErrorBit != 0:
				ec, err := proto.ParseErrorChunk(ch.Type, p)
				if err != nil {
					r.tb.Fatal(err)
				}
				errno = ec.Error
			case ch.Type == proto.ReplyTypeOffsetData:
				data = append(data, p[8:]...)
			case ch.Type == proto.ReplyTypeBlockStatus:
				data = p
			}
			if ch.Done() {
				return cookie, errno, data
			}
			h = r.read(4)
		}
	}
	r.tb.Fatalf("reply magic %x", h)
	return 0, 0, nil
}

// expectClosed checks that the server closed the connection.
func (r *rawClient) expectClosed() {
	r.tb.Helper()
	var b [1]byte
	if n, err := r.c.Read(b[:]); err == nil {
		r.tb.Fatalf("read %d bytes from a connection the server should have closed", n)
	}
}

// readChunks reads the structured reply to a read of n bytes at off,
// placing data and hole chunks by their offsets, and counts the holes.
func (r *rawClient) readChunks(off uint64, n uint32) (data []byte, holes int, errno uint32) {
	r.tb.Helper()
	data = bytes.Repeat([]byte{0xee}, int(n)) // bytes no chunk covers stay 0xee
	for {
		ch, err := proto.ParseChunk(r.read(proto.StructuredHeaderSize))
		if err != nil {
			r.tb.Fatal(err)
		}
		p := r.read(int(ch.Length))
		switch ch.Type {
		case proto.ReplyTypeOffsetData:
			copy(data[proto.Uint64(p)-off:], p[8:])
		case proto.ReplyTypeOffsetHole:
			o, k, err := proto.ParseOffsetHole(p)
			if err != nil {
				r.tb.Fatal(err)
			}
			clear(data[o-off : o-off+uint64(k)])
			holes++
		case proto.ReplyTypeError:
			ec, _ := proto.ParseErrorChunk(ch.Type, p)
			errno = ec.Error
		}
		if ch.Done() {
			return data, holes, errno
		}
	}
}
