package nbdserver_test

import (
	"bytes"
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/devicetest"
	"github.com/kcopyd/kcopyd/device/nbd"
	"github.com/kcopyd/kcopyd/device/nbd/nbdserver"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestConformance runs the device suite against our client talking to our
// server over a Unix socket, with two connections: it proves both sides.
func TestConformance(t *testing.T) {
	devicetest.Run(t, func(t *testing.T, size int64) device.Device {
		s := serve(t, memDev(t, size), nil)
		return open(t, s.uri, &nbd.Config{Connections: 2})
	})
}

// TestClientNegotiation checks what our client negotiates with the server.
func TestClientNegotiation(t *testing.T) {
	s := serve(t, memDev(t, 8<<20), &nbdserver.Options{Name: "disk", Description: "test disk"})
	d := open(t, s.uri, &nbd.Config{Connections: 4})
	in := d.Info()
	want := nbd.Info{
		Export: "disk", Description: "test disk", Size: 8 << 20,
		CanFlush: true, CanFUA: true, CanTrim: true, CanWriteZeroes: true, CanFastZero: true,
		CanMultiConn: true, CanDF: true,
		MinBlock: 1, PreferredBlock: 4096, MaxBlock: 32 << 20,
		StructuredReplies: true, BaseAllocation: true, FixedNewstyle: true, Connections: 4,
	}
	if in != want {
		t.Errorf("Info() = %+v\nwant %+v", in, want)
	}
}

// TestMultiConnCoherent writes through one connection of a multi-conn
// client and reads through another: the shared device makes every write
// visible at once.
func TestMultiConnCoherent(t *testing.T) {
	s := serve(t, memDev(t, 16<<20), nil)
	a := open(t, s.uri, &nbd.Config{Connections: 4})
	b := open(t, s.uri, &nbd.Config{Connections: 4})
	testutil.WritePattern(t, a, 7, 0, 16<<20)
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if !testutil.CheckPattern(t, b, 7, 0, 16<<20) {
		t.Fatal("second client does not read what the first wrote")
	}
}

// TestBlockStatus checks that holes of the device reach the client as
// extents.
func TestBlockStatus(t *testing.T) {
	m := memDev(t, 1<<20)
	testutil.WriteRange(t, m, 64<<10, bytes.Repeat([]byte{1}, 8192))
	s := serve(t, m, nil)
	d := open(t, s.uri, nil)
	ext, err := d.Extents(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := []device.Extent{
		{Off: 0, Len: 64 << 10, Hole: true, Zero: true},
		{Off: 64 << 10, Len: 8192},
		{Off: 72 << 10, Len: 1<<20 - 72<<10, Hole: true, Zero: true},
	}
	if !slices.Equal(ext, want) {
		t.Errorf("Extents(0, 1MiB) = %v; want %v", ext, want)
	}
}
