package nbdserver_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
	"github.com/kcopyd/kcopyd/device/nbd/nbdserver"
	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

// gate holds device reads until the test lets them through, and counts
// them.
type gate struct {
	entered chan struct{} // one send per read that reached the gate
	open    chan struct{} // one receive lets one read through
	all     chan struct{} // closed when the test ends: everything passes
	running atomic.Int32  // reads between the gate and their end
	peak    atomic.Int32  // most reads at the gate at once
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}, 64), open: make(chan struct{}, 64), all: make(chan struct{})}
}

// releaseAtEnd lets every read through when the test ends, before the
// server's cleanup (register it after serve) waits for them.
func (g *gate) releaseAtEnd(tb testing.TB) {
	tb.Cleanup(func() { close(g.all) })
}

// wrap returns dev with its reads gated.
func (g *gate) wrap(dev device.Device) device.Device {
	return faultdev.Wrap(dev, faultdev.InjectorFunc(func(op faultdev.Op) faultdev.Fault {
		if op.Kind == device.OpRead {
			n := g.running.Add(1)
			for {
				p := g.peak.Load()
				if n <= p || g.peak.CompareAndSwap(p, n) {
					break
				}
			}
			select {
			case g.entered <- struct{}{}:
			default: // nobody counts any more
			}
			select {
			case <-g.open:
			case <-g.all:
			}
			g.running.Add(-1)
		}
		return faultdev.Fault{}
	}))
}

// wait waits until n more reads reached the gate.
func (g *gate) wait(tb testing.TB, n int) {
	for range n {
		select {
		case <-g.entered:
		case <-time.After(30 * time.Second):
			tb.Fatal("reads did not reach the device")
		}
	}
}

// none checks that no further read reaches the gate for a while. It can
// only fail when the server admits a request it should hold back; a slow
// machine makes it less sensitive, never wrong.
func (g *gate) none(tb testing.TB) {
	tb.Helper()
	select {
	case <-g.entered:
		tb.Fatalf("a read beyond the limit reached the device (%d at the gate)", g.running.Load())
	case <-time.After(200 * time.Millisecond):
	}
}

// TestShutdownAnswersInFlight starts reads that block in the device, shuts
// the server down, and checks that the reads are answered before the
// connection closes and that Shutdown waits for them.
func TestShutdownAnswersInFlight(t *testing.T) {
	m := memDev(t, 1<<20)
	testutil.WritePattern(t, m, 6, 0, 1<<20)
	g := newGate()
	s := serve(t, g.wrap(m), nil)
	g.releaseAtEnd(t)
	r := dialRaw(t, s)
	r.start(true, false)
	for i := range 3 {
		r.request(proto.CmdRead, 0, uint64(i), uint64(i)*65536, 65536, nil)
	}
	g.wait(t, 3)

	shut := make(chan error, 1)
	go func() { shut <- s.srv.Shutdown(context.Background()) }()
	// The listener closes first: wait for that, so that the reads are
	// released while Shutdown is in progress.
	for {
		c, err := net.Dial("unix", s.sock)
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(5 * time.Millisecond) // a readiness poll, not a timing assertion
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with reads in flight", err)
	default:
	}
	for range 3 {
		g.open <- struct{}{}
	}
	seen := map[uint64]bool{}
	for range 3 {
		cookie, e, data := r.reply()
		if e != 0 || !bytes.Equal(data, testutil.Pattern(6, int64(cookie)*65536, 65536)) {
			t.Fatalf("read %d answered with error %d during shutdown", cookie, e)
		}
		seen[cookie] = true
	}
	if len(seen) != 3 {
		t.Fatalf("answered cookies %v", seen)
	}
	r.expectClosed()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if err := <-s.served; !errors.Is(err, nbdserver.ErrServerClosed) {
		t.Fatalf("Serve = %v; want ErrServerClosed", err)
	}
	s.served <- nbdserver.ErrServerClosed // for the cleanup
}

// TestShutdownDeadline checks that a Shutdown whose context ends drops the
// connections whose requests are stuck in the device.
func TestShutdownDeadline(t *testing.T) {
	g := newGate()
	s := serve(t, g.wrap(memDev(t, 1<<20)), nil)
	g.releaseAtEnd(t)
	r := dialRaw(t, s)
	r.start(false, false)
	r.request(proto.CmdRead, 0, 1, 0, 4096, nil)
	g.wait(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	go func() { done <- s.srv.Shutdown(ctx) }()
	r.expectClosed()
	g.open <- struct{}{} // the device call ends; Shutdown can return
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown = %v; want context.Canceled", err)
	}
}

// TestBackpressure checks that a connection never has more than
// MaxInFlight requests in the device, and that all are answered.
func TestBackpressure(t *testing.T) {
	const n, limit = 12, 3
	g := newGate()
	s := serve(t, g.wrap(memDev(t, 1<<20)), &nbdserver.Options{MaxInFlight: limit})
	g.releaseAtEnd(t)
	r := dialRaw(t, s)
	r.start(true, false)
	for i := range n {
		r.request(proto.CmdRead, 0, uint64(i), 0, 4096, nil)
	}
	g.wait(t, limit)
	g.none(t)
	for range n {
		g.open <- struct{}{}
	}
	for range n {
		if _, e, _ := r.reply(); e != 0 {
			t.Fatalf("read answered error %d", e)
		}
	}
	if p := g.peak.Load(); p > limit {
		t.Fatalf("%d reads were in the device at once; MaxInFlight is %d", p, limit)
	}
}

// TestByteBudget checks that MaxInFlightBytes bounds the payload held: two
// reads of 4 KiB fit in 8 KiB, a third waits.
func TestByteBudget(t *testing.T) {
	g := newGate()
	s := serve(t, g.wrap(memDev(t, 1<<20)), &nbdserver.Options{MaxPayload: 4096, MaxInFlightBytes: 8192})
	g.releaseAtEnd(t)
	r := dialRaw(t, s)
	r.start(true, false)
	for i := range 6 {
		r.request(proto.CmdRead, 0, uint64(i), 0, 4096, nil)
	}
	g.wait(t, 2)
	g.none(t)
	for range 6 {
		g.open <- struct{}{}
	}
	for range 6 {
		if _, e, _ := r.reply(); e != 0 {
			t.Fatalf("read answered error %d", e)
		}
	}
	if p := g.peak.Load(); p > 2 {
		t.Fatalf("%d reads of 4 KiB in flight with a budget of 8 KiB", p)
	}
}

// TestHandshakeTimeout checks that a client that stalls in option
// haggling is disconnected.
func TestHandshakeTimeout(t *testing.T) {
	s := serve(t, memDev(t, 1<<20), &nbdserver.Options{HandshakeTimeout: 50 * time.Millisecond})
	r := dialRaw(t, s)
	r.flags(proto.ClientFixedNewstyle)
	r.expectClosed()
}

// TestShutdownDuringHandshake checks that Shutdown disconnects clients
// still haggling and returns without waiting for them.
func TestShutdownDuringHandshake(t *testing.T) {
	s := serve(t, memDev(t, 1<<20), &nbdserver.Options{HandshakeTimeout: -1})
	r := dialRaw(t, s)
	r.flags(proto.ClientFixedNewstyle)
	r.expectOpt(proto.OptStructuredReply, nil, proto.RepAck)
	if err := s.srv.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	r.expectClosed()
}

// TestCloseWithStuckClient checks that Close returns when a TLS client
// stops reading its replies, so that handlers are blocked writing them.
func TestCloseWithStuckClient(t *testing.T) {
	p := nbdtest.NewPKI(t, false)
	srv, err := nbdserver.New(memDev(t, 32<<20), &nbdserver.Options{TLSConfig: tlsConfig(t, p, false), TLSRequired: true})
	if err != nil {
		t.Fatal(err)
	}
	server, client := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeConn(server)
	}()
	r := &rawClient{tb: t, c: client}
	r.read(proto.GreetingSize)
	r.flags(proto.ClientFixedNewstyle | proto.ClientNoZeroes)
	r.expectOpt(proto.OptStartTLS, nil, proto.RepAck)
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(p.CA())
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pem)
	tc := tls.Client(client, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	r.c = tc
	r.expectOpt(proto.OptGo, proto.GoData(""), proto.RepAck)
	for i := range 8 {
		r.request(proto.CmdRead, 0, uint64(i), 0, 1<<20, nil)
	}
	// The server is (or soon will be) blocked writing replies nobody
	// reads; net.Pipe has no buffer at all.
	closed := make(chan struct{})
	go func() {
		srv.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close hangs on a client that does not read")
	}
	<-done
	client.Close()
}
