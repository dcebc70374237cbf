package nbd

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
)

// serveReads answers read requests on srv with zero-filled structured
// replies, or with garbage when bad is set, until srv is closed.
func serveReads(srv net.Conn, bad bool) {
	defer srv.Close()
	var hdr [proto.RequestSize]byte
	for {
		if _, err := io.ReadFull(srv, hdr[:]); err != nil {
			return
		}
		cookie := binary.BigEndian.Uint64(hdr[8:])
		off := binary.BigEndian.Uint64(hdr[16:])
		n := binary.BigEndian.Uint32(hdr[24:])
		if binary.BigEndian.Uint16(hdr[6:]) == proto.CmdDisc {
			return
		}
		if bad {
			srv.Write([]byte("garbage!"))
			continue
		}
		if _, err := srv.Write(chunk(done, proto.ReplyTypeOffsetData, cookie, offData(off, make([]byte, n)))); err != nil {
			return
		}
	}
}

// TestBrokenConnectionIsolated checks that a connection that breaks the
// protocol fails only its own requests; later calls use the healthy one.
func TestBrokenConnectionIsolated(t *testing.T) {
	bad, badSrv := pipeConn(true, 4)
	good, goodSrv := pipeConn(true, 4)
	go serveReads(badSrv, true)
	go serveReads(goodSrv, false)
	d := &Device{uri: &URI{Scheme: "nbd+unix", Socket: "/fake"}, name: "fake", conns: []*conn{bad, good}, ex: *fakeExport(true)}
	d.setLimits(&Config{MaxRequest: DefaultMaxRequest})
	defer d.Close()

	var failed int
	p := make([]byte, 4096)
	for i := range 20 {
		_, err := d.ReadAt(p, int64(i)*4096)
		if err != nil {
			var ioe *device.IOError
			if !errors.Is(err, ErrProtocol) || !errors.Is(err, ErrDisconnected) || !errors.As(err, &ioe) {
				t.Fatalf("ReadAt %d = %v; want an *IOError wrapping ErrProtocol", i, err)
			}
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d reads failed; want exactly the one sent on the bad connection", failed)
	}
	if bad.broken() == nil || good.broken() != nil {
		t.Errorf("broken() = %v, %v; want the bad connection down and the good one up", bad.broken(), good.broken())
	}
}
