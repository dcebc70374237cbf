// Package nbdtest starts real NBD servers for tests and makes the
// certificates they need for TLS.
//
// Servers (nbdkit, qemu-nbd) listen on a Unix socket in a fresh directory
// with a short path, because socket paths are limited to 107 bytes and
// t.TempDir can be longer. They are killed when the test ends. A test
// whose server program is not installed is skipped with a message naming
// the Debian packages, so that tests using this package pass on developer
// machines and run fully in CI.
//
//	func TestCopy(t *testing.T) {
//		s := nbdtest.Nbdkit(t, "memory", "64M")
//		d, err := nbd.Open(ctx, s.URI, nil)
//		...
//	}
//
// NewPKI makes a throw-away certificate authority with a server (and
// optionally a client) certificate in the file layout nbdkit and libnbd
// expect, for nbdkit --tls-certificates=DIR and the tls-certificates URI
// parameter.
package nbdtest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/device/nbd"
)

// readyTimeout bounds the wait for a server to accept connections. It is a
// readiness wait, not a timing assertion: a loaded machine only makes it
// slower.
const readyTimeout = 30 * time.Second

// Server is an NBD server process started by Start. Its methods are safe
// for concurrent use.
type Server struct {
	// URI is the nbd+unix location of the server's default export.
	URI string
	// Socket is the Unix socket the server listens on.
	Socket string
	// Dir is the short-pathed directory holding Socket; it is removed when
	// the test ends.
	Dir string

	name   string
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has been waited for

	mu     sync.Mutex // guards output
	output bytes.Buffer
}

// NeedBin returns the path of the program name, or skips the test when it
// is not installed.
func NeedBin(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		tb.Skipf("%s is not installed (Debian: apt-get install nbdkit qemu-utils libnbd-bin): %v", name, err)
	}
	return p
}

// ShortDir returns a fresh directory under os.TempDir, removed when the
// test ends. Its path is short enough for Unix sockets inside it.
func ShortDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "nbdt")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Start runs the program name with args, in which every "SOCK" is
// replaced by the path of a Unix socket in a fresh directory, and waits
// until the socket accepts connections. The test fails if the program
// exits first or never listens, and is skipped if the program is not
// installed. The process is killed when the test ends; if the test
// failed, its output is logged. args is not modified.
func Start(tb testing.TB, name string, args ...string) *Server {
	tb.Helper()
	bin := NeedBin(tb, name)
	dir := ShortDir(tb)
	sock := filepath.Join(dir, "s")
	args = append([]string(nil), args...)
	for i, a := range args {
		if a == "SOCK" {
			args[i] = sock
		}
	}
	s := &Server{
		URI:    "nbd+unix:///?socket=" + url.QueryEscape(sock),
		Socket: sock,
		Dir:    dir,
		name:   name,
		exited: make(chan struct{}),
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout = (*outputWriter)(s)
	s.cmd.Stderr = (*outputWriter)(s)
	if err := s.cmd.Start(); err != nil {
		tb.Fatalf("starting %s: %v", name, err)
	}
	var waitErr error
	go func() {
		waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	tb.Cleanup(func() {
		s.Kill()
		if tb.Failed() {
			if out := s.Output(); out != "" {
				tb.Logf("%s output:\n%s", name, out)
			}
		}
	})
	deadline := time.Now().Add(readyTimeout)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return s
		}
		select {
		case <-s.exited:
			tb.Fatalf("%s %q exited before serving: %v\n%s", name, args, waitErr, s.Output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s %q did not listen on %s within %v\n%s", name, args, sock, readyTimeout, s.Output())
		}
	}
}

// Nbdkit starts nbdkit in the foreground on a Unix socket with the given
// arguments (options, plugin, plugin parameters; filters with
// --filter=NAME before the plugin). nbdkit exits with the test binary
// (--exit-with-parent).
func Nbdkit(tb testing.TB, args ...string) *Server {
	tb.Helper()
	return Start(tb, "nbdkit", append([]string{"-f", "--exit-with-parent", "-U", "SOCK"}, args...)...)
}

// QemuNBD starts qemu-nbd serving image (a raw file) as the export named
// export on a Unix socket, persistent and with up to 8 clients, plus any
// extra arguments (given before the image).
func QemuNBD(tb testing.TB, image, export string, extra ...string) *Server {
	tb.Helper()
	args := []string{"-f", "raw", "-k", "SOCK", "-x", export, "--persistent", "-e", "8"}
	args = append(append(args, extra...), image)
	return Start(tb, "qemu-nbd", args...)
}

// ExportURI returns the nbd+unix location of the export called name.
func (s *Server) ExportURI(name string) string {
	return "nbd+unix:///" + url.PathEscape(name) + "?socket=" + url.QueryEscape(s.Socket)
}

// TLSURI returns the nbds+unix location of the default export.
func (s *Server) TLSURI() string {
	return "nbds+unix:///?socket=" + url.QueryEscape(s.Socket)
}

// Kill kills the server with SIGKILL and waits for it to exit. Later calls
// do nothing.
func (s *Server) Kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// Output returns what the server wrote on stdout and stderr so far.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.output.String()
}

// outputWriter collects a server's output under its lock.
type outputWriter Server

func (w *outputWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.output.Write(p)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// WaitTCP waits until addr accepts TCP connections, failing the test
// after 30 s.
func WaitTCP(tb testing.TB, addr string) {
	tb.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s does not accept connections: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PKI is a throw-away certificate authority with certificates for the
// name "localhost" (and 127.0.0.1, ::1), valid from an hour ago for a day.
type PKI struct {
	// Dir holds ca-cert.pem, server-cert.pem, server-key.pem and, when
	// asked for, client-cert.pem and client-key.pem: the layout of
	// nbdkit --tls-certificates and of the tls-certificates URI parameter.
	// The keys are mode 0600.
	Dir string
}

// NewPKI makes a CA and a server certificate in a fresh directory, and a
// client certificate too when withClient is set. Keys are ECDSA P-256.
func NewPKI(tb testing.TB, withClient bool) *PKI {
	tb.Helper()
	dir := ShortDir(tb)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kcopyd test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		tb.Fatal(err)
	}
	writePEM(tb, filepath.Join(dir, "ca-cert.pem"), "CERTIFICATE", caDER)

	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: "localhost"},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			tb.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			tb.Fatal(err)
		}
		writePEM(tb, filepath.Join(dir, name+"-cert.pem"), "CERTIFICATE", der)
		writePEM(tb, filepath.Join(dir, name+"-key.pem"), "PRIVATE KEY", kder)
	}
	leaf("server", 2, x509.ExtKeyUsageServerAuth)
	if withClient {
		leaf("client", 3, x509.ExtKeyUsageClientAuth)
	}
	return &PKI{Dir: dir}
}

// CA returns the path of the CA certificate.
func (p *PKI) CA() string { return filepath.Join(p.Dir, "ca-cert.pem") }

// ClientCert returns the path of the client certificate (present only
// when NewPKI was asked for one).
func (p *PKI) ClientCert() string { return filepath.Join(p.Dir, "client-cert.pem") }

// ClientKey returns the path of the client key (present only when NewPKI
// was asked for one).
func (p *PKI) ClientKey() string { return filepath.Join(p.Dir, "client-key.pem") }

func writePEM(tb testing.TB, path, typ string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// Open opens location with the NBD client, failing the test on error, and
// closes it when the test ends (failing the test if Close fails). Opening
// must finish within 30 s.
func Open(tb testing.TB, location string, cfg *nbd.Config) *nbd.Device {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	d, err := nbd.Open(ctx, location, cfg)
	if err != nil {
		tb.Fatalf("Open(%q) = %v", location, err)
	}
	tb.Cleanup(func() {
		if err := d.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return d
}
