package nbd_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/device/nbd"
)

// pki is a throw-away certificate authority with a server and a client
// certificate, written in the layout nbdkit and libnbd expect.
type pki struct {
	dir string // ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem, client-key.pem
}

func newPKI(tb testing.TB, withClient bool) *pki {
	tb.Helper()
	dir := t0Dir(tb)
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
	ca, _ := x509.ParseCertificate(caDER)
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
	return &pki{dir: dir}
}

// t0Dir is a short-pathed temporary directory.
func t0Dir(tb testing.TB) string { return shortDir(tb) }

func writePEM(tb testing.TB, path, typ string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
}

func (p *pki) ca() string { return filepath.Join(p.dir, "ca-cert.pem") }

func tlsURI(s *server) string { return "nbds+unix:///?socket=" + url.QueryEscape(s.Socket) }

func TestTLS(t *testing.T) {
	good := newPKI(t, false)
	other := newPKI(t, false)
	s := nbdkit(t, "--tls=require", "--tls-certificates="+good.dir, "memory", "16M")

	t.Run("CAFile", func(t *testing.T) {
		d := open(t, tlsURI(s), &nbd.Config{CAFile: good.ca(), Connections: 2})
		if !d.Info().TLS {
			t.Errorf("Info().TLS = false")
		}
		writeRead(t, d, 0, mib(4), 1<<20, 31)
	})
	t.Run("URIParameter", func(t *testing.T) {
		d := open(t, tlsURI(s)+"&tls-certificates="+url.QueryEscape(good.dir), nil)
		writeRead(t, d, 4096, 100000, 30000, 32)
	})
	t.Run("WrongCA", func(t *testing.T) {
		_, err := nbd.Open(context.Background(), tlsURI(s), &nbd.Config{CAFile: other.ca()})
		var cve *tls.CertificateVerificationError
		if !errors.As(err, &cve) {
			t.Fatalf("Open with the wrong CA = %v; want a *tls.CertificateVerificationError", err)
		}
	})
	t.Run("SystemRootsRejectTestCA", func(t *testing.T) {
		_, err := nbd.Open(context.Background(), tlsURI(s), nil)
		var cve *tls.CertificateVerificationError
		if !errors.As(err, &cve) {
			t.Fatalf("Open without a CA = %v; want a *tls.CertificateVerificationError", err)
		}
	})
	t.Run("WrongHostname", func(t *testing.T) {
		_, err := nbd.Open(context.Background(), tlsURI(s)+"&tls-hostname=example.org", &nbd.Config{CAFile: good.ca()})
		var cve *tls.CertificateVerificationError
		if !errors.As(err, &cve) {
			t.Fatalf("Open with tls-hostname=example.org = %v; want a verification error", err)
		}
	})
	t.Run("NoVerify", func(t *testing.T) {
		d := open(t, tlsURI(s)+"&tls-verify-peer=0", &nbd.Config{CAFile: other.ca()})
		writeRead(t, d, 0, 65536, 65536, 33)
		d2 := open(t, tlsURI(s), &nbd.Config{InsecureSkipVerify: true})
		writeRead(t, d2, 0, 65536, 65536, 34)
	})
	t.Run("PlainToTLSServer", func(t *testing.T) {
		_, err := nbd.Open(context.Background(), s.URI, nil)
		if !errors.Is(err, nbd.ErrTLSRequired) {
			t.Fatalf("Open(nbd+unix) on a TLS-only server = %v; want ErrTLSRequired", err)
		}
	})
	t.Run("TLSToPlainServer", func(t *testing.T) {
		plain := nbdkit(t, "memory", "1M")
		_, err := nbd.Open(context.Background(), tlsURI(plain), &nbd.Config{CAFile: good.ca()})
		if !errors.Is(err, nbd.ErrTLSUnavailable) {
			t.Fatalf("Open(nbds+unix) on a server without TLS = %v; want ErrTLSUnavailable", err)
		}
	})
}

func TestTLSTCP(t *testing.T) {
	p := newPKI(t, false)
	port := freePort(t)
	addr := net.JoinHostPort("127.0.0.1", port)
	startTCP(t, "nbdkit", addr, "-f", "--exit-with-parent", "-i", "127.0.0.1", "-p", port,
		"--tls=require", "--tls-certificates="+p.dir, "memory", "8M")
	d := open(t, "nbds://"+addr+"/", &nbd.Config{CAFile: p.ca()})
	writeRead(t, d, 0, mib(2), 1<<20, 35)
}

func TestTLSClientCertificate(t *testing.T) {
	p := newPKI(t, true)
	s := nbdkit(t, "--tls=require", "--tls-verify-peer", "--tls-certificates="+p.dir, "memory", "8M")
	// tls-certificates supplies the CA and the client certificate.
	d := open(t, tlsURI(s)+"&tls-certificates="+url.QueryEscape(p.dir), nil)
	writeRead(t, d, 0, mib(1), 65536, 36)
	// Without a client certificate the server refuses.
	if _, err := nbd.Open(context.Background(), tlsURI(s), &nbd.Config{CAFile: p.ca()}); err == nil {
		t.Fatal("Open without a client certificate succeeded on nbdkit --tls-verify-peer")
	}
}
