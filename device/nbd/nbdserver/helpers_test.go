package nbdserver_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/nbd"
	"github.com/kcopyd/kcopyd/device/nbd/nbdserver"
	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
)

// served is a server listening on a Unix socket for one test.
type served struct {
	srv    *nbdserver.Server
	sock   string
	uri    string // nbd+unix location of the export
	served chan error
}

// serve starts a server for dev on a fresh Unix socket. It is shut down
// when the test ends, and the test fails if Serve returned anything but
// ErrServerClosed.
func serve(tb testing.TB, dev device.Device, o *nbdserver.Options) *served {
	tb.Helper()
	srv, err := nbdserver.New(dev, o)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	sock := filepath.Join(nbdtest.ShortDir(tb), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		tb.Fatal(err)
	}
	name := ""
	if o != nil {
		name = o.Name
	}
	s := &served{srv: srv, sock: sock, served: make(chan error, 1),
		uri: "nbd+unix:///" + url.PathEscape(name) + "?socket=" + url.QueryEscape(sock)}
	go func() { s.served <- srv.Serve(l) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
		if err := <-s.served; !errors.Is(err, nbdserver.ErrServerClosed) {
			tb.Errorf("Serve = %v; want ErrServerClosed", err)
		}
	})
	return s
}

// tlsURI returns the nbds+unix location of the export.
func (s *served) tlsURI() string {
	return "nbds+unix:///?socket=" + url.QueryEscape(s.sock)
}

// open opens location with our client and closes it when the test ends.
func open(tb testing.TB, location string, cfg *nbd.Config) *nbd.Device {
	tb.Helper()
	return nbdtest.Open(tb, location, cfg)
}

// memDev returns a memory device of size bytes, closed when the test
// ends.
func memDev(tb testing.TB, size int64) *device.Mem {
	m := device.NewMem(size)
	tb.Cleanup(func() { m.Close() })
	return m
}
