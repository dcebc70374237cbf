package nbd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Defaults applied by Open to zero Config fields.
const (
	// DefaultMaxInFlight is the default number of requests in flight per
	// connection.
	DefaultMaxInFlight = 64
	// DefaultMaxRequest is the largest read or write sent as one NBD
	// request unless the server advertises a smaller maximum block size:
	// 32 MiB, the size the protocol tells clients to stay under.
	DefaultMaxRequest = 32 << 20
	// DefaultSocketBuffer is the default Config.SocketBuffer.
	DefaultSocketBuffer = 4 << 20
)

// Config holds the options of Open. The zero value (or nil) opens one
// read-write connection with up to 64 requests in flight, no TLS unless
// the location says nbds, and no timeout. Open copies the Config; later
// changes by the caller have no effect.
type Config struct {
	// ReadOnly opens the export read-only: WriteAt, WriteZeroes and
	// Discard fail with device.ErrReadOnly without contacting the server.
	// Default false. An export the server marks read-only is read-only
	// whatever this says (see Device.ReadOnly).
	ReadOnly bool

	// Connections is the number of connections to open. Default 1. More
	// than one is used only when the server advertises
	// NBD_FLAG_CAN_MULTI_CONN (its caches are coherent across
	// connections); otherwise Open uses one connection and records a note
	// (see Device.Notes). Hazard: every connection holds MaxInFlight
	// requests, so memory in flight grows with both.
	Connections int

	// MaxInFlight is the number of requests in flight per connection.
	// Default 64. Callers beyond that wait for a free slot.
	MaxInFlight int

	// MaxRequest caps the length of one NBD read or write request;
	// longer calls are split. Default and upper bound 32 MiB; the server's
	// maximum block size lowers it further.
	MaxRequest int

	// SocketBuffer is the send buffer, in bytes, asked for each
	// connection over a Unix socket (SO_SNDBUFFORCE as root, else
	// SO_SNDBUF, which the kernel caps at net.core.wmem_max). With the kernel's default of 208 KiB a 1 MiB
	// write goes out in five or six writev calls, each waiting for the
	// server to drain the socket: writing 1 GiB to nbdkit took 22,936
	// system calls (5,883 writev, 920 of them EAGAIN; 3,943 futex)
	// against 8,131 (1,024 writev, 1,408 futex) with 4 MiB. TCP
	// connections keep the kernel's autotuning, which a fixed size would
	// switch off. Default DefaultSocketBuffer; negative: the kernel's
	// default.
	SocketBuffer int

	// Timeout, when positive, drops a connection (failing its pending
	// requests with ErrTimeout and ErrDisconnected) when requests are
	// pending on it and the server sends nothing for this long. It also
	// bounds Close's wait for pending requests. Default 0: wait forever,
	// which a stuck server turns into a stuck caller.
	Timeout time.Duration

	// TLS settings, used by nbds:// and nbds+unix:// locations. Server
	// certificates are verified by default, against the system roots or
	// CAFile.

	// CAFile is a PEM file of certificate authorities trusted for the
	// server certificate. Default: the tls-certificates directory's
	// ca-cert.pem when the location names one, else the system roots.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and key, for
	// servers that verify clients (nbdkit --tls-verify-peer). Default:
	// client-cert.pem and client-key.pem of the tls-certificates
	// directory if present, else none.
	CertFile, KeyFile string
	// ServerName overrides the name the server certificate must carry.
	// Default: the location's tls-hostname, its host, or "localhost"
	// for Unix sockets.
	ServerName string
	// InsecureSkipVerify disables verification of the server
	// certificate, as does tls-verify-peer=0 in the location. Hazard:
	// the connection is then open to man-in-the-middle attacks.
	InsecureSkipVerify bool
	// TLSConfig, when non-nil, is cloned and used as the base of the TLS
	// configuration; the fields above still apply on top of it.
	TLSConfig *tls.Config

	// Logf, when non-nil, receives the same notes as Device.Notes as
	// they are made.
	Logf func(format string, args ...any)
}

// withDefaults returns a copy of c (nil means zero) with defaults applied.
func (c *Config) withDefaults() Config {
	var r Config
	if c != nil {
		r = *c
	}
	if r.Connections <= 0 {
		r.Connections = 1
	}
	if r.MaxInFlight <= 0 {
		r.MaxInFlight = DefaultMaxInFlight
	}
	if r.MaxRequest <= 0 || r.MaxRequest > DefaultMaxRequest {
		r.MaxRequest = DefaultMaxRequest
	}
	if r.SocketBuffer == 0 {
		r.SocketBuffer = DefaultSocketBuffer
	}
	return r
}

// tlsConfig builds the client TLS configuration for u.
func (c *Config) tlsConfig(u *URI) (*tls.Config, error) {
	var t *tls.Config
	if c.TLSConfig != nil {
		t = c.TLSConfig.Clone()
	} else {
		t = &tls.Config{}
	}
	if t.MinVersion < tls.VersionTLS12 {
		t.MinVersion = tls.VersionTLS12 // the protocol requires 1.2 or later
	}
	switch {
	case c.ServerName != "":
		t.ServerName = c.ServerName
	case u.TLSHostname != "":
		t.ServerName = u.TLSHostname
	case t.ServerName != "":
	case u.Socket != "":
		t.ServerName = "localhost"
	default:
		t.ServerName = u.Host
	}
	if c.InsecureSkipVerify || u.TLSNoVerify {
		t.InsecureSkipVerify = true
	}

	caFile, certFile, keyFile := c.CAFile, c.CertFile, c.KeyFile
	if dir := u.TLSCertificates; dir != "" {
		if caFile == "" {
			caFile = filepath.Join(dir, "ca-cert.pem")
		}
		if certFile == "" && keyFile == "" {
			cf, kf := filepath.Join(dir, "client-cert.pem"), filepath.Join(dir, "client-key.pem")
			if _, err := os.Stat(cf); err == nil {
				certFile, keyFile = cf, kf
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("nbd: TLS client certificate: %w", err)
			}
		}
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("nbd: TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nbd: TLS CA file %s holds no PEM certificate", caFile)
		}
		t.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return nil, errors.New("nbd: TLS client certificate needs both CertFile and KeyFile")
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("nbd: TLS client certificate: %w", err)
		}
		t.Certificates = append(t.Certificates, cert)
	}
	return t, nil
}
