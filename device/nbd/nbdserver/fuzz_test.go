package nbdserver_test

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
	"github.com/kcopyd/kcopyd/device/nbd/nbdserver"
)

// scriptConn is a net.Conn whose client side is a fixed byte script: the
// server reads the script and its writes are counted and dropped. EOF at
// the end of the script ends the session.
type scriptConn struct {
	r       *bytes.Reader
	written int64
}

func (c *scriptConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error)        { c.written += int64(len(p)); return len(p), nil }
func (c *scriptConn) Close() error                       { return nil }
func (c *scriptConn) LocalAddr() net.Addr                { return &net.UnixAddr{Name: "fuzz", Net: "unix"} }
func (c *scriptConn) RemoteAddr() net.Addr               { return &net.UnixAddr{Name: "fuzz", Net: "unix"} }
func (c *scriptConn) SetDeadline(t time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(t time.Time) error { return nil }

// session builds a client byte stream: flags, options, then requests.
type session struct{ b []byte }

func (s *session) flags(f uint32) *session { s.b = proto.AppendUint32(s.b, f); return s }
func (s *session) opt(o uint32, data []byte) *session {
	s.b = proto.AppendOption(s.b, o, data)
	return s
}
func (s *session) req(typ, flags uint16, off uint64, n uint32, payload []byte) *session {
	var b [proto.RequestSize]byte
	(&proto.Request{Type: typ, Flags: flags, Cookie: uint64(len(s.b)), Offset: off, Length: n}).Put(&b)
	s.b = append(append(s.b, b[:]...), payload...)
	return s
}

// seeds are the sessions of the seed corpus (also in
// testdata/fuzz/FuzzServerRequests, written by TestWriteFuzzSeeds).
func seeds() map[string][]byte {
	go_ := func(s *session) *session {
		return s.opt(proto.OptStructuredReply, nil).
			opt(proto.OptSetMetaContext, proto.MetaContextData("", "base:allocation")).
			opt(proto.OptGo, proto.GoData("", proto.InfoBlockSize))
	}
	fixed := proto.ClientFixedNewstyle | proto.ClientNoZeroes
	return map[string][]byte{
		"all-commands": go_(new(session).flags(fixed)).
			req(proto.CmdWrite, proto.CmdFlagFUA, 4096, 512, make([]byte, 512)).
			req(proto.CmdRead, proto.CmdFlagDF, 0, 8192, nil).
			req(proto.CmdWriteZeroes, proto.CmdFlagFastZero, 0, 4096, nil).
			req(proto.CmdWriteZeroes, proto.CmdFlagNoHole, 0, 4096, nil).
			req(proto.CmdTrim, 0, 8192, 4096, nil).
			req(proto.CmdFlush, 0, 0, 0, nil).
			req(proto.CmdBlockStatus, proto.CmdFlagReqOne, 0, 65536, nil).
			req(proto.CmdDisc, 0, 0, 0, nil).b,
		"bad-requests": go_(new(session).flags(fixed)).
			req(proto.CmdRead, 0, 1<<63, 512, nil).
			req(proto.CmdWrite, 0, 65530, 100, make([]byte, 100)).
			req(99, 0xffff, 0, 0, nil).
			req(proto.CmdRead, 0, 0, 1<<31, nil).b,
		"options": new(session).flags(fixed).
			opt(proto.OptList, nil).
			opt(proto.OptListMetaContext, proto.MetaContextData("", "base:")).
			opt(proto.OptInfo, proto.GoData("x", proto.InfoName, proto.InfoDescription)).
			opt(proto.OptStartTLS, nil).
			opt(77, []byte("junk")).
			opt(proto.OptAbort, nil).b,
		"export-name": new(session).flags(0).opt(proto.OptExportName, nil).
			req(proto.CmdRead, 0, 0, 512, nil).b,
		"simple": new(session).flags(fixed).opt(proto.OptGo, proto.GoData("")).
			req(proto.CmdWrite, 0, 0, 3, []byte("abc")).
			req(proto.CmdRead, 0, 0, 3, nil).b,
	}
}

// FuzzServerRequests feeds arbitrary client byte streams to a server on a
// 64 KiB memory device. The server must never panic, hang, or write more
// than it was asked to read (a bound on what a client can make it do).
func FuzzServerRequests(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		m := memDev(t, 64<<10)
		srv, err := nbdserver.New(m, &nbdserver.Options{MaxPayload: 65536, MaxInFlightBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		c := &scriptConn{r: bytes.NewReader(script)}
		if err := srv.ServeConn(c); err != nil {
			t.Fatal(err)
		}
		// Every reply answers a request of at least 28 bytes (or an
		// option of 16) with at most a 64 KiB read, a few KiB of block
		// status, or a handshake reply.
		if limit := int64(len(script)+1) * (65536 + 4096); c.written > limit {
			t.Fatalf("server wrote %d bytes for a script of %d", c.written, len(script))
		}
		srv.Close()
	})
}

// TestWriteFuzzSeeds writes the seed corpus to testdata when
// KCOPYD_WRITE_SEEDS is set; otherwise it checks the files are there.
func TestWriteFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzServerRequests")
	for name, b := range seeds() {
		p := filepath.Join(dir, name)
		want := "go test fuzz v1\n[]byte(" + quote(b) + ")\n"
		if os.Getenv("KCOPYD_WRITE_SEEDS") != "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != want {
			t.Errorf("seed %s is missing or stale (regenerate with KCOPYD_WRITE_SEEDS=1): %v", p, err)
		}
	}
}

// quote formats b as a Go string literal.
func quote(b []byte) string {
	var s bytes.Buffer
	s.WriteByte('"')
	for _, c := range b {
		s.WriteString(`\x`)
		s.WriteByte("0123456789abcdef"[c>>4])
		s.WriteByte("0123456789abcdef"[c&15])
	}
	s.WriteByte('"')
	return s.String()
}
