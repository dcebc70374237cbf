package nbd_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"testing"

	"github.com/kcopyd/kcopyd/device/nbd"
	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
)

func TestTLS(t *testing.T) {
	good := nbdtest.NewPKI(t, false)
	other := nbdtest.NewPKI(t, false)
	s := nbdkit(t, "--tls=require", "--tls-certificates="+good.Dir, "memory", "16M")

	t.Run("CAFile", func(t *testing.T) {
		d := open(t, s.TLSURI(), &nbd.Config{CAFile: good.CA(), Connections: 2})
		if !d.Info().TLS {
			t.Errorf("Info().TLS = false")
		}
		writeRead(t, d, 0, mib(4), 1<<20, 31)
	})
	t.Run("URIParameter", func(t *testing.T) {
		d := open(t, s.TLSURI()+"&tls-certificates="+url.QueryEscape(good.Dir), nil)
		writeRead(t, d, 4096, 100000, 30000, 32)
	})
	t.Run("WrongCA", func(t *testing.T) {
		_, err := nbd.Open(context.Background(), s.TLSURI(), &nbd.Config{CAFile: other.CA()})
		var cve *tls.CertificateVerificationError
		if !errors.As(err, &cve) {
			t.Fatalf("Open with the wrong CA = %v; want a *tls.CertificateVerificationError", err)
		}
	})
	t.Run("SystemRootsRejectTestCA", func(t *testing.T) {
		_, err := nbd.Open(context.Background(), s.TLSURI(), nil)
		var cve *tls.CertificateVerificationError
		if !errors.As(err, &cve) {
			t.Fatalf("Open without a CA = %v; want a *tls.CertificateVerificationError", err)
		}
	})
	t.Run("WrongHostname", func(t *testing.T) {
		_, err := nbd.Open(context.Background(), s.TLSURI()+"&tls-hostname=example.org", &nbd.Config{CAFile: good.CA()})
		var cve *tls.CertificateVerificationError
		if !errors.As(err, &cve) {
			t.Fatalf("Open with tls-hostname=example.org = %v; want a verification error", err)
		}
	})
	t.Run("NoVerify", func(t *testing.T) {
		d := open(t, s.TLSURI()+"&tls-verify-peer=0", &nbd.Config{CAFile: other.CA()})
		writeRead(t, d, 0, 65536, 65536, 33)
		d2 := open(t, s.TLSURI(), &nbd.Config{InsecureSkipVerify: true})
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
		_, err := nbd.Open(context.Background(), plain.TLSURI(), &nbd.Config{CAFile: good.CA()})
		if !errors.Is(err, nbd.ErrTLSUnavailable) {
			t.Fatalf("Open(nbds+unix) on a server without TLS = %v; want ErrTLSUnavailable", err)
		}
	})
}

func TestTLSTCP(t *testing.T) {
	p := nbdtest.NewPKI(t, false)
	port := nbdtest.FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", port)
	startTCP(t, "nbdkit", addr, "-f", "--exit-with-parent", "-i", "127.0.0.1", "-p", port,
		"--tls=require", "--tls-certificates="+p.Dir, "memory", "8M")
	d := open(t, "nbds://"+addr+"/", &nbd.Config{CAFile: p.CA()})
	writeRead(t, d, 0, mib(2), 1<<20, 35)
}

func TestTLSClientCertificate(t *testing.T) {
	p := nbdtest.NewPKI(t, true)
	s := nbdkit(t, "--tls=require", "--tls-verify-peer", "--tls-certificates="+p.Dir, "memory", "8M")
	// tls-certificates supplies the CA and the client certificate.
	d := open(t, s.TLSURI()+"&tls-certificates="+url.QueryEscape(p.Dir), nil)
	writeRead(t, d, 0, mib(1), 65536, 36)
	// Without a client certificate the server refuses.
	if _, err := nbd.Open(context.Background(), s.TLSURI(), &nbd.Config{CAFile: p.CA()}); err == nil {
		t.Fatal("Open without a client certificate succeeded on nbdkit --tls-verify-peer")
	}
}
