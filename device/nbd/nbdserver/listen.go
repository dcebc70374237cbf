package nbdserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Errors returned by ListenUnix, before anything is changed.
var (
	// ErrNotSocket is returned by ListenUnix when the path exists and is
	// not a socket.
	ErrNotSocket = errors.New("nbdserver: not a socket")
	// ErrSocketInUse is returned by ListenUnix when a server listens on
	// the socket already.
	ErrSocketInUse = errors.New("nbdserver: socket in use")
)

// DefaultShutdownTimeout is how long a server stopped by a signal should
// wait for the requests in flight: the grace Run is given by the kcopyd
// command.
const DefaultShutdownTimeout = 30 * time.Second

// pathError is an error about a path whose message says it all; it wraps a
// sentinel for errors.Is.
type pathError struct {
	msg string
	err error
}

// Error implements error.
func (e *pathError) Error() string { return e.msg }

// Unwrap returns the sentinel.
func (e *pathError) Unwrap() error { return e.err }

// ListenUnix listens on the Unix socket path. A path that exists is
// replaced only when it is a socket nobody listens on, left behind by a
// killed server; a socket in use fails with an error wrapping
// ErrSocketInUse, anything that is not a socket with one wrapping
// ErrNotSocket, and neither is touched. Closing the listener removes the
// socket.
func ListenUnix(path string) (net.Listener, error) {
	st, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	case st.Mode()&fs.ModeSocket == 0:
		return nil, &pathError{path + " exists and is not a socket", ErrNotSocket}
	default:
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, &pathError{path + " is in use by another server", ErrSocketInUse}
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	return net.Listen("unix", path)
}

// ExportURL returns the NBD URL of the export name served on addr, an
// address of a listener: nbd://HOST:PORT/NAME for TCP, or
// nbd+unix:///NAME?socket=PATH with PATH made absolute for a Unix socket;
// the schemes are nbds and nbds+unix when tls is true. The name is
// escaped, so that the empty name gives a URL ending in "/".
func ExportURL(addr net.Addr, name string, tls bool) string {
	scheme := "nbd"
	if tls {
		scheme = "nbds"
	}
	path := "/" + url.PathEscape(name)
	if addr.Network() == "unix" {
		sock := addr.String()
		if abs, err := filepath.Abs(sock); err == nil {
			sock = abs
		}
		return scheme + "+unix://" + path + "?socket=" + url.QueryEscape(sock)
	}
	return scheme + "://" + addr.String() + path
}

// Files of a TLS directory, in the layout of nbdkit's and qemu-nbd's
// --tls-certificates (and of the URL parameter tls-certificates=DIR).
const (
	TLSCertFile = "server-cert.pem" // the server certificate, PEM
	TLSKeyFile  = "server-key.pem"  // its private key, PEM
	TLSCAFile   = "ca-cert.pem"     // CA certificates for client certificates, PEM
)

// LoadTLSConfig returns a server TLS configuration (TLS 1.2 or later) with
// the certificate and key in dir (TLSCertFile and TLSKeyFile), for
// Options.TLSConfig. The error is crypto/tls's, which names the file.
func LoadTLSConfig(dir string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, TLSCertFile), filepath.Join(dir, TLSKeyFile))
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// RequireClientCerts makes cfg require client certificates signed by one
// of the CA certificates in the PEM file caFile. cfg is unchanged when it
// fails: caFile cannot be read or holds no PEM certificate.
func RequireClientCerts(cfg *tls.Config, caFile string) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	cfg.ClientCAs = pool
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	return nil
}

// Run serves on l until ctx is done or Serve fails, then shuts the server
// down gracefully, waiting at most grace for the requests in flight to be
// answered; those still running then are dropped (see Shutdown), which
// Options.Logf is told. It returns nil when ctx ended it, else the error
// that ended Serve. Like Shutdown, it neither flushes nor closes the
// device; the server cannot serve again afterwards.
func (s *Server) Run(ctx context.Context, l net.Listener, grace time.Duration) error {
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-served:
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if s.Shutdown(sctx) != nil {
		s.logf("requests still in flight after %v were dropped", grace)
	}
	if err == nil {
		err = <-served
	}
	if errors.Is(err, ErrServerClosed) {
		return nil
	}
	return err
}
