package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
)

// Encoders for server messages, used to script replies.

func simpleReply(errno uint32, cookie uint64, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, proto.MagicSimpleReply)
	b = binary.BigEndian.AppendUint32(b, errno)
	b = binary.BigEndian.AppendUint64(b, cookie)
	return append(b, data...)
}

func chunk(flags, typ uint16, cookie uint64, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, proto.MagicStructured)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

func offData(off uint64, data []byte) []byte {
	return append(binary.BigEndian.AppendUint64(nil, off), data...)
}

func offHole(off uint64, n uint32) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, off), n)
}

func errPayload(errno uint32, msg string, off ...uint64) []byte {
	b := binary.BigEndian.AppendUint32(nil, errno)
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	b = append(b, msg...)
	for _, o := range off {
		b = binary.BigEndian.AppendUint64(b, o)
	}
	return b
}

func bsPayload(id uint32, desc ...uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, id)
	for _, d := range desc {
		b = binary.BigEndian.AppendUint32(b, d)
	}
	return b
}

const (
	done   = proto.ReplyFlagDone
	metaID = 7
)

// fakeExport is the export of the scripted connections.
func fakeExport(structured bool) *export {
	return &export{
		size:       1 << 20,
		flags:      proto.FlagHasFlags | proto.FlagSendFlush | proto.FlagSendWriteZeroes | proto.FlagSendTrim,
		structured: structured,
		hasMeta:    structured,
		metaID:     metaID,
	}
}

// pipeConn returns a conn whose server side is srv.
func pipeConn(structured bool, maxInFlight int) (*conn, net.Conn) {
	cli, srv := net.Pipe()
	return newConn(cli, cli, fakeExport(structured), maxInFlight, 0), srv
}

// fuzzRequests are the requests the reply fuzzer answers; cookies are 1..n
// in this order.
var fuzzRequests = []struct {
	typ      uint16
	off, len uint32
}{
	{proto.CmdRead, 1000, 4096},
	{proto.CmdWrite, 0, 512},
	{proto.CmdBlockStatus, 0, 1 << 20},
	{proto.CmdRead, 0, 16},
	{proto.CmdFlush, 0, 0},
	{proto.CmdWriteZeroes, 4096, 8192},
}

const guard = 64

// replay sends fuzzRequests on a scripted connection, feeds data as the
// server's reply stream, and checks the invariants: every request
// completes, no byte outside a read buffer is touched, successful replies
// are complete, and errors are of the documented kinds.
func replay(t *testing.T, structured bool, data []byte) []error {
	c, srv := pipeConn(structured, len(fuzzRequests))
	var total int
	for _, r := range fuzzRequests {
		total += proto.RequestSize
		if r.typ == proto.CmdWrite {
			total += int(r.len)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		defer srv.Close()
		if _, err := io.ReadFull(srv, make([]byte, total)); err != nil {
			return
		}
		srv.Write(data)
	})
	reqs := make([]*request, len(fuzzRequests))
	bufs := make([][]byte, len(fuzzRequests))
	for i, fr := range fuzzRequests {
		r := &request{typ: fr.typ, off: uint64(fr.off), length: fr.len, done: make(chan struct{})}
		switch fr.typ {
		case proto.CmdRead:
			bufs[i] = bytes.Repeat([]byte{0xEE}, int(fr.len)+2*guard)
			r.data = bufs[i][guard : guard+int(fr.len) : guard+int(fr.len)]
		case proto.CmdWrite:
			r.data = make([]byte, fr.len)
		}
		if err := c.submit(r); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		reqs[i] = r
	}
	errs := make([]error, len(reqs))
	for i, r := range reqs {
		<-r.done
		errs[i] = r.err
		if b := bufs[i]; b != nil {
			for j := range guard {
				if b[j] != 0xEE || b[len(b)-1-j] != 0xEE {
					t.Fatalf("request %d: bytes outside the read buffer were written", i)
				}
			}
		}
		var se *ServerError
		switch {
		case r.err == nil:
			if r.typ == proto.CmdRead && structured && r.spans.total != r.length {
				t.Fatalf("request %d succeeded with %d of %d bytes", i, r.spans.total, r.length)
			}
			if r.typ == proto.CmdBlockStatus && len(r.status) == 0 {
				t.Fatalf("block status succeeded without descriptors")
			}
		case errors.As(r.err, &se):
			if se.Errno == 0 {
				t.Fatalf("request %d: server error with errno 0", i)
			}
		case errors.Is(r.err, ErrDisconnected):
		default:
			t.Fatalf("request %d: unexpected error %v", i, r.err)
		}
	}
	c.closeConn(device.ErrClosed, false)
	wg.Wait()
	return errs
}

// seedReplies are valid and invalid reply streams for fuzzFeplies, keyed by
// a name; the first byte selects structured (1) or simple (0) replies.
func seedReplies() map[string][]byte {
	read1 := bytes.Repeat([]byte{1}, 4096)
	s := map[string][]byte{
		"simple-all": append([]byte{0}, bytes.Join([][]byte{
			simpleReply(0, 1, read1), simpleReply(0, 2, nil), simpleReply(proto.EINVAL, 3, nil),
			simpleReply(0, 4, make([]byte, 16)), simpleReply(0, 5, nil), simpleReply(proto.EIO, 6, nil),
		}, nil)...),
		"structured-all": append([]byte{1}, bytes.Join([][]byte{
			chunk(0, proto.ReplyTypeOffsetData, 1, offData(1000+2048, read1[:2048])),
			chunk(0, proto.ReplyTypeOffsetHole, 1, offHole(1000, 1024)),
			chunk(done, proto.ReplyTypeOffsetData, 1, offData(1000+1024, read1[:1024])),
			simpleReply(0, 2, nil),
			chunk(done, proto.ReplyTypeBlockStatus, 3, bsPayload(metaID, 65536, 3, 1<<20, 0)),
			chunk(0, proto.ReplyTypeErrorOffset, 4, errPayload(proto.EIO, "bad sector", 8)),
			chunk(done, proto.ReplyTypeOffsetData, 4, offData(0, make([]byte, 8))),
			chunk(done, proto.ReplyTypeNone, 5, nil),
			chunk(done, proto.ReplyTypeError, 6, errPayload(proto.ENOSPC, "full")),
		}, nil)...),
		"overlap": append([]byte{1},
			append(chunk(0, proto.ReplyTypeOffsetData, 1, offData(1000, read1[:100])),
				chunk(done, proto.ReplyTypeOffsetData, 1, offData(1050, read1[:100]))...)...),
		"outside":       append([]byte{1}, chunk(done, proto.ReplyTypeOffsetData, 1, offData(999, read1))...),
		"short-success": append([]byte{1}, chunk(done, proto.ReplyTypeOffsetData, 4, offData(0, make([]byte, 8)))...),
		"unknown-error": append([]byte{1}, chunk(done, 0x8123, 2, []byte{0, 0})...),
		"bad-magic":     {1, 0xde, 0xad, 0xbe, 0xef},
		"huge-error":    append(append([]byte{1}, chunk(done, proto.ReplyTypeError, 2, nil)[:16]...), 0xff, 0xff, 0xff, 0xff),
	}
	return s
}

func TestReplies(t *testing.T) {
	for name, data := range seedReplies() {
		t.Run(name, func(t *testing.T) {
			errs := replay(t, data[0]&1 == 1, data[1:])
			switch name {
			case "simple-all", "structured-all":
				want := []string{"<nil>", "<nil>", "NBD_EINVAL", "<nil>", "<nil>", "NBD_EIO"}
				if name == "structured-all" {
					want = []string{"<nil>", "<nil>", "<nil>", "NBD_EIO (input/output error) at offset 8", "<nil>", "NBD_ENOSPC"}
				}
				for i, err := range errs {
					if got := fmt.Sprint(err); !strings.HasPrefix(got, want[i]) {
						t.Errorf("request %d: err = %q; want prefix %q", i, got, want[i])
					}
				}
			case "unknown-error":
				// An unknown error chunk fails its request only.
				var se *ServerError
				if !errors.As(errs[1], &se) || se.Errno != EINVAL || errors.Is(errs[1], ErrProtocol) {
					t.Errorf("request 1: err = %v; want a server error EINVAL", errs[1])
				}
			default:
				if !errors.Is(errs[0], ErrProtocol) && !errors.Is(errs[1], ErrProtocol) && !errors.Is(errs[3], ErrProtocol) {
					t.Errorf("errors = %v; want a protocol violation", errs)
				}
			}
		})
	}
}

// FuzzReplies feeds arbitrary server bytes to a connection with requests in
// flight. The seed corpus is in testdata/fuzz/FuzzReplies (regenerate with
// NBD_WRITE_SEEDS=1 go test -run TestWriteSeeds). Minimising the large
// seeds is slow: run with -fuzzminimizetime=2s.
func FuzzReplies(f *testing.F) {
	for _, data := range seedReplies() {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		replay(t, data[0]&1 == 1, data[1:])
	})
}

// FuzzHandshake feeds arbitrary server bytes to the handshake.
func FuzzHandshake(f *testing.F) {
	for _, s := range seedHandshakes() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rw := &scripted{r: bytes.NewReader(data)}
		_, ex, err := handshake(rw, "disk", nil)
		if err == nil {
			if ex.size < 0 || ex.flags&proto.FlagHasFlags == 0 {
				t.Fatalf("handshake accepted export %+v", ex)
			}
			if ex.blockSize != (proto.BlockSize{}) && ex.blockSize.Validate() != nil {
				t.Fatalf("handshake accepted block sizes %+v", ex.blockSize)
			}
		}
	})
}

// scripted is a stream whose reads come from r and whose writes are
// discarded.
type scripted struct {
	r io.Reader
	w bytes.Buffer
}

func (s *scripted) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *scripted) Write(p []byte) (int, error) { return s.w.Write(p) }

func optReply(opt, typ uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, proto.MagicOptReply)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

func greeting(hflags uint16) []byte {
	b := binary.BigEndian.AppendUint64(nil, proto.MagicInit)
	b = binary.BigEndian.AppendUint64(b, proto.MagicOpt)
	return binary.BigEndian.AppendUint16(b, hflags)
}

func infoExport(size uint64, flags uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, proto.InfoExport)
	b = binary.BigEndian.AppendUint64(b, size)
	return binary.BigEndian.AppendUint16(b, flags)
}

func infoBlockSize(lo, pref, hi uint32) []byte {
	b := binary.BigEndian.AppendUint16(nil, proto.InfoBlockSize)
	b = binary.BigEndian.AppendUint32(b, lo)
	b = binary.BigEndian.AppendUint32(b, pref)
	return binary.BigEndian.AppendUint32(b, hi)
}

func seedHandshakes() map[string][]byte {
	flags := proto.FlagHasFlags | proto.FlagSendFlush | proto.FlagCanMultiConn
	meta := append(binary.BigEndian.AppendUint32(nil, 3), metaAllocation...)
	full := bytes.Join([][]byte{
		greeting(proto.HandshakeFixedNewstyle | proto.HandshakeNoZeroes),
		optReply(proto.OptStructuredReply, proto.RepAck, nil),
		optReply(proto.OptSetMetaContext, proto.RepMetaContext, meta),
		optReply(proto.OptSetMetaContext, proto.RepAck, nil),
		optReply(proto.OptGo, proto.RepInfo, infoBlockSize(512, 4096, 1<<25)),
		optReply(proto.OptGo, proto.RepInfo, infoExport(1<<30, flags)),
		optReply(proto.OptGo, proto.RepAck, nil),
	}, nil)
	exportName := bytes.Join([][]byte{
		greeting(proto.HandshakeFixedNewstyle),
		optReply(proto.OptStructuredReply, proto.RepErrUnsup, nil),
		optReply(proto.OptGo, proto.RepErrUnsup, nil),
		binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint64(nil, 1<<20), flags),
		make([]byte, 124),
	}, nil)
	return map[string][]byte{
		"full":        full,
		"export-name": exportName,
		"unknown": bytes.Join([][]byte{greeting(proto.HandshakeFixedNewstyle),
			optReply(proto.OptStructuredReply, proto.RepAck, nil),
			optReply(proto.OptSetMetaContext, proto.RepAck, nil),
			optReply(proto.OptGo, proto.RepErrUnknown, []byte("no such export"))}, nil),
		"oldstyle": binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, proto.MagicInit), proto.MagicOldstyle),
	}
}

func TestHandshakeScripts(t *testing.T) {
	tests := []struct {
		name string
		want error
	}{
		{"full", nil}, {"export-name", nil}, {"unknown", ErrUnknownExport}, {"oldstyle", ErrOldstyle},
	}
	seeds := seedHandshakes()
	for _, tt := range tests {
		rw := &scripted{r: bytes.NewReader(seeds[tt.name])}
		_, ex, err := handshake(rw, "disk", nil)
		if !errors.Is(err, tt.want) {
			t.Errorf("handshake(%s) = %v; want %v", tt.name, err, tt.want)
			continue
		}
		if err == nil && (ex.size == 0 || ex.flags == 0) {
			t.Errorf("handshake(%s) = %+v; want an export", tt.name, ex)
		}
	}
	rw := &scripted{r: bytes.NewReader(seeds["full"])}
	_, ex, err := handshake(rw, "disk", nil)
	want := export{size: 1 << 30, flags: proto.FlagHasFlags | proto.FlagSendFlush | proto.FlagCanMultiConn,
		blockSize: proto.BlockSize{Min: 512, Preferred: 4096, Max: 1 << 25}, structured: true, metaID: 3, hasMeta: true, fixedNewstyle: true}
	if err != nil || *ex != want {
		t.Errorf("handshake(full) = %+v, %v; want %+v", ex, err, want)
	}
}

// TestWriteSeeds writes the seed corpora to testdata/fuzz when
// NBD_WRITE_SEEDS=1.
func TestWriteSeeds(t *testing.T) {
	if os.Getenv("NBD_WRITE_SEEDS") == "" {
		t.Skip("set NBD_WRITE_SEEDS=1 to regenerate testdata/fuzz")
	}
	write := func(fuzz string, seeds map[string][]byte) {
		dir := filepath.Join("testdata", "fuzz", fuzz)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("FuzzReplies", seedReplies())
	write("FuzzHandshake", seedHandshakes())
}
