package nbdserver_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
	"github.com/kcopyd/kcopyd/device/nbd/nbdserver"
	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
)

// TestListenUnix: a fresh path and a stale socket are listened on; a
// socket in use and a file are refused and left as they were.
func TestListenUnix(t *testing.T) {
	dir := nbdtest.ShortDir(t)
	fresh := filepath.Join(dir, "fresh")
	l, err := nbdserver.ListenUnix(fresh)
	if err != nil {
		t.Fatalf("ListenUnix(new path) = %v", err)
	}
	// In use: l listens there.
	if _, err := nbdserver.ListenUnix(fresh); !errors.Is(err, nbdserver.ErrSocketInUse) || err.Error() != fresh+" is in use by another server" {
		t.Errorf("ListenUnix(socket in use) = %v; want ErrSocketInUse", err)
	}
	// Stale: left behind by a listener that did not remove it.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l, err = nbdserver.ListenUnix(fresh)
	if err != nil {
		t.Fatalf("ListenUnix(stale socket) = %v", err)
	}
	l.Close()
	if _, err := os.Lstat(fresh); !os.IsNotExist(err) {
		t.Errorf("closing the listener left %s: %v", fresh, err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := nbdserver.ListenUnix(file); !errors.Is(err, nbdserver.ErrNotSocket) || err.Error() != file+" exists and is not a socket" {
		t.Errorf("ListenUnix(regular file) = %v; want ErrNotSocket", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "data" {
		t.Errorf("ListenUnix changed the file it refused: %q, %v", b, err)
	}
	if _, err := nbdserver.ListenUnix(filepath.Join(dir, "missing", "s")); err == nil {
		t.Error("ListenUnix in a missing directory succeeded")
	}
}

func TestExportURL(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tcp := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 10809}
	for _, tt := range []struct {
		addr net.Addr
		name string
		tls  bool
		want string
	}{
		{tcp, "", false, "nbd://127.0.0.1:10809/"},
		{tcp, "disk one", true, "nbds://127.0.0.1:10809/disk%20one"},
		{&net.UnixAddr{Net: "unix", Name: "/run/d.sock"}, "sdb", false, "nbd+unix:///sdb?socket=%2Frun%2Fd.sock"},
		{&net.UnixAddr{Net: "unix", Name: "rel.sock"}, "", true, "nbds+unix:///?socket=" + strings.ReplaceAll(wd, "/", "%2F") + "%2Frel.sock"},
	} {
		if got := nbdserver.ExportURL(tt.addr, tt.name, tt.tls); got != tt.want {
			t.Errorf("ExportURL(%v, %q, %v) = %q; want %q", tt.addr, tt.name, tt.tls, got, tt.want)
		}
	}
}

// TestLoadTLSConfigErrors: missing files and a CA file without a PEM
// certificate fail, and a failed RequireClientCerts leaves the
// configuration as it was. The working configurations are used by the
// TLS tests.
func TestLoadTLSConfigErrors(t *testing.T) {
	if _, err := nbdserver.LoadTLSConfig(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadTLSConfig(empty dir) = %v; want ErrNotExist", err)
	}
	p := nbdtest.NewPKI(t, false)
	cfg, err := nbdserver.LoadTLSConfig(p.Dir)
	if err != nil || cfg.MinVersion != tls.VersionTLS12 || len(cfg.Certificates) != 1 {
		t.Fatalf("LoadTLSConfig = %+v, %v", cfg, err)
	}
	junk := filepath.Join(t.TempDir(), "junk.pem")
	os.WriteFile(junk, []byte("no certificate"), 0o644)
	if err := nbdserver.RequireClientCerts(cfg, junk); err == nil || err.Error() != junk+" holds no PEM certificate" {
		t.Errorf("RequireClientCerts(junk) = %v", err)
	}
	if err := nbdserver.RequireClientCerts(cfg, filepath.Join(p.Dir, "missing.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("RequireClientCerts(missing) = %v; want ErrNotExist", err)
	}
	if cfg.ClientAuth != tls.NoClientCert || cfg.ClientCAs != nil {
		t.Error("a failed RequireClientCerts changed the configuration")
	}
}

// running is a server in Run on a fresh socket, its reads gated, with
// one read of 4096 bytes (cookie 7) held at the gate.
type running struct {
	g      *gate
	sock   string
	r      *rawClient
	cancel context.CancelFunc
	ran    chan error
}

// runWithRead starts Run with grace and a read held in the device.
func runWithRead(t *testing.T, o *nbdserver.Options, grace time.Duration) *running {
	g := newGate()
	srv, err := nbdserver.New(g.wrap(memDev(t, 1<<20)), o)
	if err != nil {
		t.Fatal(err)
	}
	g.releaseAtEnd(t)
	sock := filepath.Join(nbdtest.ShortDir(t), "s")
	l, err := nbdserver.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rn := &running{g: g, sock: sock, cancel: cancel, ran: make(chan error, 1)}
	go func() { rn.ran <- srv.Run(ctx, l, grace) }()
	rn.r = dialRaw(t, &served{sock: sock})
	rn.r.start(false, false)
	rn.r.request(proto.CmdRead, 0, 7, 0, 4096, nil)
	g.wait(t, 1)
	return rn
}

// TestRunStopsOnContext: Run serves until its context ends, answers the
// request in flight, and returns nil; the socket is gone afterwards.
func TestRunStopsOnContext(t *testing.T) {
	rn := runWithRead(t, nil, nbdserver.DefaultShutdownTimeout)
	rn.cancel()
	rn.g.open <- struct{}{}
	if cookie, e, _ := rn.r.reply(); cookie != 7 || e != 0 {
		t.Fatalf("the read in flight at the cancellation was answered %d, error %d", cookie, e)
	}
	if err := <-rn.ran; err != nil {
		t.Fatalf("Run = %v; want nil", err)
	}
	if _, err := os.Lstat(rn.sock); !os.IsNotExist(err) {
		t.Errorf("the socket is still there: %v", err)
	}
}

// TestRunGrace: a request stuck in the device past the grace is dropped,
// and Logf is told.
func TestRunGrace(t *testing.T) {
	var mu sync.Mutex
	var logs []string
	rn := runWithRead(t, &nbdserver.Options{Logf: func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		logs = append(logs, f)
	}}, 0)
	rn.cancel()
	rn.r.expectClosed()
	rn.g.open <- struct{}{} // the device call ends; Run can return
	if err := <-rn.ran; err != nil {
		t.Fatalf("Run = %v; want nil", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logs) != 1 || logs[0] != "requests still in flight after %v were dropped" {
		t.Errorf("Logf got %q", logs)
	}
}

// failingListener fails its first Accept.
type failingListener struct{ net.Listener }

func (l failingListener) Accept() (net.Conn, error) { return nil, errors.New("accept broke") }

// TestRunListenerFails: Run returns the error that ended Serve.
func TestRunListenerFails(t *testing.T) {
	srv, err := nbdserver.New(memDev(t, 1<<20), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := nbdserver.ListenUnix(filepath.Join(nbdtest.ShortDir(t), "s"))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Run(context.Background(), failingListener{l}, nbdserver.DefaultShutdownTimeout); err == nil || !strings.Contains(err.Error(), "accept broke") {
		t.Fatalf("Run = %v; want the accept error", err)
	}
}
