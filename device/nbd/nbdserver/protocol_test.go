package nbdserver_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
	"github.com/kcopyd/kcopyd/device/nbd/nbdserver"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

// TestRequestErrors sends malformed requests and checks each is refused
// with the protocol's error value while the connection stays usable.
func TestRequestErrors(t *testing.T) {
	const size = 1 << 20
	const big = 33 << 20
	type req struct {
		typ, flags uint16
		off        uint64
		length     uint32
		payload    []byte
	}
	cases := []struct {
		name       string
		structured bool
		r          req
		want       uint32
	}{
		{"ReadPastEnd", false, req{typ: proto.CmdRead, off: size - 4096, length: 8192}, proto.EINVAL},
		{"ReadOffsetOverflow", true, req{typ: proto.CmdRead, off: 1<<64 - 512, length: 1024}, proto.EINVAL},
		{"WritePastEnd", false, req{typ: proto.CmdWrite, off: size - 100, length: 200, payload: make([]byte, 200)}, proto.ENOSPC},
		{"WriteTooBig", false, req{typ: proto.CmdWrite, length: big, payload: make([]byte, big)}, proto.EINVAL},
		{"ReadTooBig", true, req{typ: proto.CmdRead, length: big}, proto.EINVAL},
		{"ReadTooBigDF", true, req{typ: proto.CmdRead, flags: proto.CmdFlagDF, length: big}, proto.EOVERFLOW},
		{"DFWithoutStructured", false, req{typ: proto.CmdRead, flags: proto.CmdFlagDF, length: 512}, proto.EINVAL},
		{"TrimPastEnd", false, req{typ: proto.CmdTrim, off: size, length: 1}, proto.EINVAL},
		{"ZeroPastEnd", false, req{typ: proto.CmdWriteZeroes, off: size - 1, length: 2}, proto.ENOSPC},
		{"ZeroEmpty", false, req{typ: proto.CmdWriteZeroes, off: 0, length: 0}, proto.EINVAL},
		{"UnknownCommand", false, req{typ: 99}, proto.EINVAL},
		{"UnknownFlag", false, req{typ: proto.CmdRead, flags: 1 << 9, length: 512}, proto.EINVAL},
		{"FlagOfAnotherCommand", false, req{typ: proto.CmdRead, flags: proto.CmdFlagNoHole, length: 512}, proto.EINVAL},
		{"FastZeroOnWrite", false, req{typ: proto.CmdWrite, flags: proto.CmdFlagFastZero, length: 4, payload: []byte("abcd")}, proto.EINVAL},
		{"FlushWithRange", false, req{typ: proto.CmdFlush, off: 0, length: 512}, proto.EINVAL},
		{"BlockStatusWithoutContext", true, req{typ: proto.CmdBlockStatus, length: 512}, proto.EINVAL},
		{"CacheNotOffered", false, req{typ: proto.CmdCache, length: 512}, proto.EINVAL},
	}
	m := memDev(t, size)
	testutil.WritePattern(t, m, 3, 0, size)
	s := serve(t, m, nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, s)
			r.start(tc.structured, false)
			r.request(tc.r.typ, tc.r.flags, 7, tc.r.off, tc.r.length, tc.r.payload)
			if cookie, e, _ := r.reply(); cookie != 7 || e != tc.want {
				t.Errorf("reply = cookie %d, error %d; want cookie 7, error %d", cookie, e, tc.want)
			}
			// The connection still works and nothing was written.
			r.request(proto.CmdRead, 0, 8, size-4096, 4096, nil)
			cookie, e, data := r.reply()
			if !tc.structured {
				data = r.read(4096)
			}
			if cookie != 8 || e != 0 || !bytes.Equal(data, testutil.Pattern(3, size-4096, 4096)) {
				t.Errorf("read after the error: cookie %d, error %d, data intact %v", cookie, e, bytes.Equal(data, testutil.Pattern(3, size-4096, 4096)))
			}
			r.request(proto.CmdDisc, 0, 9, 0, 0, nil)
			r.expectClosed()
		})
	}
	if !testutil.CheckPattern(t, m, 3, 0, size) {
		t.Error("a refused request changed the device")
	}
}

// TestBadMagicHangsUp checks that a request with a bad magic number ends
// the connection (nothing after it can be trusted).
func TestBadMagicHangsUp(t *testing.T) {
	s := serve(t, memDev(t, 1<<20), nil)
	r := dialRaw(t, s)
	r.start(false, false)
	r.write(bytes.Repeat([]byte{0x55}, proto.RequestSize))
	r.expectClosed()
}

// noZero hides the device's native write-zeroes.
type noZero struct{ device.Device }

func TestFastZero(t *testing.T) {
	for _, native := range []bool{true, false} {
		t.Run(fmt.Sprintf("native=%v", native), func(t *testing.T) {
			m := memDev(t, 1<<20)
			testutil.WritePattern(t, m, 5, 0, 1<<20)
			var dev device.Device = m
			if !native {
				dev = noZero{m}
			}
			s := serve(t, dev, nil)
			r := dialRaw(t, s)
			r.start(true, false)
			fast := func(flags uint16, cookie uint64) uint32 {
				r.request(proto.CmdWriteZeroes, flags, cookie, 4096, 8192, nil)
				_, e, _ := r.reply()
				return e
			}
			want := uint32(proto.ENOTSUP)
			if native {
				want = 0
			}
			if e := fast(proto.CmdFlagFastZero, 1); e != want {
				t.Fatalf("WRITE_ZEROES|FAST_ZERO = error %d; want %d", e, want)
			}
			if !native && !testutil.CheckPattern(t, m, 5, 0, 1<<20) {
				t.Fatal("a fast zero that failed with ENOTSUP changed the device")
			}
			// NO_HOLE forbids the native path, which may punch holes.
			if e := fast(proto.CmdFlagFastZero|proto.CmdFlagNoHole, 2); e != proto.ENOTSUP {
				t.Fatalf("WRITE_ZEROES|FAST_ZERO|NO_HOLE = error %d; want ENOTSUP", e)
			}
			if e := fast(proto.CmdFlagNoHole|proto.CmdFlagFUA, 3); e != 0 {
				t.Fatalf("WRITE_ZEROES|NO_HOLE|FUA = error %d", e)
			}
			if !testutil.CheckZero(t, m, 4096, 8192) || !testutil.CheckPattern(t, m, 5, 12288, 1<<20-12288) {
				t.Fatal("WRITE_ZEROES did not zero exactly its range")
			}
		})
	}
}

// TestBlockStatusRaw checks REQ_ONE and that descriptors never describe
// bytes past the request.
func TestBlockStatusRaw(t *testing.T) {
	m := memDev(t, 1<<20)
	testutil.WriteRange(t, m, 8192, make([]byte, 4096))
	s := serve(t, m, nil)
	r := dialRaw(t, s)
	r.start(true, true)
	for _, tc := range []struct {
		flags       uint16
		off         uint64
		length      uint32
		descriptors []proto.BlockDescriptor
	}{
		{0, 0, 1 << 20, []proto.BlockDescriptor{{Length: 8192, Status: 3}, {Length: 4096, Status: 0}, {Length: 1<<20 - 12288, Status: 3}}},
		{proto.CmdFlagReqOne, 0, 1 << 20, []proto.BlockDescriptor{{Length: 8192, Status: 3}}},
		{0, 4096, 6000, []proto.BlockDescriptor{{Length: 4096, Status: 3}, {Length: 1904, Status: 0}}},
	} {
		r.request(proto.CmdBlockStatus, tc.flags, 1, tc.off, tc.length, nil)
		_, e, p := r.reply()
		if e != 0 || len(p) < 4 || proto.Uint32(p) != 1 {
			t.Fatalf("BLOCK_STATUS(%d, %d) = error %d, payload %x", tc.off, tc.length, e, p)
		}
		var got []proto.BlockDescriptor
		for p = p[4:]; len(p) >= 8; p = p[8:] {
			d, err := proto.ParseBlockDescriptor(p[:8])
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, d)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.descriptors) {
			t.Errorf("BLOCK_STATUS(flags %#x, %d, %d) = %v; want %v", tc.flags, tc.off, tc.length, got, tc.descriptors)
		}
	}
}

// TestOptions checks the answers to options, good and bad.
func TestOptions(t *testing.T) {
	s := serve(t, memDev(t, 1<<20), &nbdserver.Options{Name: "disk"})
	r := dialRaw(t, s)
	r.flags(proto.ClientFixedNewstyle)
	r.expectOpt(42, nil, proto.RepErrUnsup)
	r.expectOpt(proto.OptExtendedHeaders, nil, proto.RepErrUnsup)
	r.expectOpt(proto.OptList, []byte("x"), proto.RepErrInvalid)
	r.expectOpt(proto.OptStartTLS, nil, proto.RepErrUnsup)
	r.expectOpt(proto.OptSetMetaContext, proto.MetaContextData("disk", "base:allocation"), proto.RepErrInvalid)
	r.expectOpt(proto.OptStructuredReply, []byte{1}, proto.RepErrInvalid)
	r.expectOpt(proto.OptGo, proto.GoData("other"), proto.RepErrUnknown)
	r.expectOpt(proto.OptGo, []byte{0, 0, 0, 9, 'd'}, proto.RepErrInvalid)
	r.expectOpt(proto.OptInfo, make([]byte, 100<<10), proto.RepErrTooBig)

	rep, p := r.opt(proto.OptList, nil)
	if rep.Type != proto.RepServer || string(p) != "\x00\x00\x00\x04disk" {
		t.Fatalf("NBD_OPT_LIST = %#x %q", rep.Type, p)
	}
	r.optReply(proto.OptList) // the ACK
	r.expectOpt(proto.OptStructuredReply, nil, proto.RepAck)
	rep, p = r.opt(proto.OptListMetaContext, proto.MetaContextData("disk"))
	if id, name, _ := proto.ParseMetaContext(p); rep.Type != proto.RepMetaContext || id != 0 || name != "base:allocation" {
		t.Fatalf("NBD_OPT_LIST_META_CONTEXT = %#x %d %q", rep.Type, id, name)
	}
	r.optReply(proto.OptListMetaContext)
	r.expectOpt(proto.OptSetMetaContext, proto.MetaContextData("disk", "qemu:dirty-bitmap:x"), proto.RepAck)

	// NBD_OPT_INFO reports, NBD_OPT_EXPORT_NAME enters transmission.
	rep, p = r.opt(proto.OptInfo, proto.GoData("disk", proto.InfoName))
	in, err := proto.ParseInfo(p)
	if rep.Type != proto.RepInfo || err != nil || in.Type != proto.InfoExport || in.Export.Size != 1<<20 {
		t.Fatalf("NBD_OPT_INFO first reply = %#x %+v %v", rep.Type, in, err)
	}
	for rep.Type == proto.RepInfo {
		rep, _ = r.optReply(proto.OptInfo)
	}
	if rep.Type != proto.RepAck {
		t.Fatalf("NBD_OPT_INFO ended with %#x", rep.Type)
	}
	r.write(proto.AppendOption(nil, proto.OptExportName, []byte("disk")))
	if b := r.read(proto.ExportNameReplySize + proto.ExportNamePadding); proto.Uint64(b) != 1<<20 {
		t.Fatalf("NBD_OPT_EXPORT_NAME reply %x", b)
	}
	r.request(proto.CmdRead, 0, 1, 0, 512, nil)
	if _, e, data := r.reply(); e != 0 || len(data) != 512 {
		t.Fatalf("read after NBD_OPT_EXPORT_NAME: error %d, %d bytes", e, len(data))
	}
}

// TestAbortAndUnknownExportName checks the two ways option haggling ends
// without transmission.
func TestAbortAndUnknownExportName(t *testing.T) {
	s := serve(t, memDev(t, 1<<20), nil)
	r := dialRaw(t, s)
	r.flags(proto.ClientFixedNewstyle)
	r.expectOpt(proto.OptAbort, nil, proto.RepAck)
	r.expectClosed()

	r = dialRaw(t, s)
	r.flags(0) // plain newstyle: only NBD_OPT_EXPORT_NAME exists
	r.write(proto.AppendOption(nil, proto.OptExportName, []byte("nope")))
	r.expectClosed()

	r = dialRaw(t, s)
	r.flags(1 << 5) // unknown client flag
	r.expectClosed()
}

// TestFUAFlushes checks that FUA writes are flushed before the reply and
// plain writes are not.
func TestFUAFlushes(t *testing.T) {
	var flushes atomic.Int32
	dev := faultdev.Wrap(memDev(t, 1<<20), faultdev.InjectorFunc(func(op faultdev.Op) faultdev.Fault {
		if op.Kind == device.OpFlush {
			flushes.Add(1)
		}
		return faultdev.Fault{}
	}))
	s := serve(t, dev, nil)
	r := dialRaw(t, s)
	r.start(false, false)
	for i, tc := range []struct {
		typ, flags uint16
		payload    []byte
		want       int32
	}{
		{proto.CmdWrite, 0, make([]byte, 512), 0},
		{proto.CmdWrite, proto.CmdFlagFUA, make([]byte, 512), 1},
		{proto.CmdWriteZeroes, proto.CmdFlagFUA, nil, 2},
		{proto.CmdTrim, proto.CmdFlagFUA, nil, 3},
		{proto.CmdFlush, 0, nil, 4},
	} {
		n := uint32(len(tc.payload))
		if tc.typ == proto.CmdWriteZeroes || tc.typ == proto.CmdTrim {
			n = 512
		}
		r.request(tc.typ, tc.flags, uint64(i), 0, n, tc.payload)
		if _, e, _ := r.reply(); e != 0 || flushes.Load() != tc.want {
			t.Fatalf("command %d flags %#x: error %d, %d flushes; want %d", tc.typ, tc.flags, e, flushes.Load(), tc.want)
		}
	}
}

// TestDeviceErrors checks that device failures reach the client as EIO
// (ENOSPC for a full disk) with no device message, and that the
// connection survives them.
func TestDeviceErrors(t *testing.T) {
	fail := func(op faultdev.Op) faultdev.Fault {
		switch {
		case op.Kind == device.OpRead && op.Off == 0:
			return faultdev.Fault{Err: errors.New("/secret/path broke")}
		case op.Kind == device.OpWrite && op.Off == 0:
			return faultdev.Fault{Err: syscall.ENOSPC}
		}
		return faultdev.Fault{}
	}
	s := serve(t, faultdev.Wrap(memDev(t, 1<<20), faultdev.InjectorFunc(fail)), nil)
	r := dialRaw(t, s)
	r.start(true, false)
	r.request(proto.CmdRead, 0, 1, 0, 4096, nil)
	h := r.read(proto.StructuredHeaderSize)
	c, err := proto.ParseChunk(h)
	if err != nil || c.Type != proto.ReplyTypeError {
		t.Fatalf("failed read answered %+v, %v; want an error chunk", c, err)
	}
	ec, err := proto.ParseErrorChunk(c.Type, r.read(int(c.Length)))
	if err != nil || ec.Error != proto.EIO || strings.Contains(ec.Message, "secret") {
		t.Fatalf("error chunk %+v, %v; want EIO without the device's message", ec, err)
	}
	r.request(proto.CmdWrite, 0, 2, 0, 512, make([]byte, 512))
	if _, e, _ := r.reply(); e != proto.ENOSPC {
		t.Fatalf("write on a full device = error %d; want ENOSPC", e)
	}
	r.request(proto.CmdRead, 0, 3, 4096, 4096, nil)
	if _, e, data := r.reply(); e != 0 || len(data) != 4096 {
		t.Fatalf("read after the failures = error %d, %d bytes", e, len(data))
	}
}

// TestSparseReads checks that structured reads send runs of zeroes as hole
// chunks, except with DF or for small reads, and that the bytes are right
// either way.
func TestSparseReads(t *testing.T) {
	m := memDev(t, 1<<20)
	testutil.WritePattern(t, m, 10, 256<<10, 128<<10)
	want := m.Bytes()
	s := serve(t, m, nil)
	r := dialRaw(t, s)
	r.start(true, false)
	for _, tc := range []struct {
		flags     uint16
		off, n    uint32
		wantHoles int
	}{
		{0, 0, 1 << 20, 2},
		{proto.CmdFlagDF, 0, 1 << 20, 0},
		{0, 4096, 4096, 0},
		{0, 300 << 10, 200 << 10, 1},
		{0, 512 << 10, 256 << 10, 1},
	} {
		r.request(proto.CmdRead, tc.flags, 1, uint64(tc.off), tc.n, nil)
		data, holes, e := r.readChunks(uint64(tc.off), tc.n)
		if e != 0 || holes != tc.wantHoles || !bytes.Equal(data, want[tc.off:tc.off+tc.n]) {
			t.Errorf("read(flags %#x, %d, %d): error %d, %d hole chunks (want %d), data right %v",
				tc.flags, tc.off, tc.n, e, holes, tc.wantHoles, bytes.Equal(data, want[tc.off:tc.off+tc.n]))
		}
	}
}
