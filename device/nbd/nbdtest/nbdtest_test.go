package nbdtest_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"slices"
	"testing"

	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
)

func TestNewPKI(t *testing.T) {
	p := nbdtest.NewPKI(t, true)
	caPEM, err := os.ReadFile(p.CA())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("%s holds no certificate", p.CA())
	}
	for _, tt := range []struct {
		cert, key string
		usage     x509.ExtKeyUsage
	}{
		{p.Dir + "/server-cert.pem", p.Dir + "/server-key.pem", x509.ExtKeyUsageServerAuth},
		{p.ClientCert(), p.ClientKey(), x509.ExtKeyUsageClientAuth},
	} {
		pair, err := tls.LoadX509KeyPair(tt.cert, tt.key)
		if err != nil {
			t.Fatalf("tls.LoadX509KeyPair(%s, %s) = %v", tt.cert, tt.key, err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		opts := x509.VerifyOptions{Roots: roots, DNSName: "localhost", KeyUsages: []x509.ExtKeyUsage{tt.usage}}
		if _, err := leaf.Verify(opts); err != nil {
			t.Errorf("%s does not verify against the CA for localhost: %v", tt.cert, err)
		}
		if st, err := os.Stat(tt.key); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", tt.key, st.Mode(), err)
		}
	}
	if _, err := os.Stat(nbdtest.NewPKI(t, false).ClientCert()); !os.IsNotExist(err) {
		t.Errorf("NewPKI(withClient=false) made a client certificate: %v", err)
	}
}

func TestStartAndKill(t *testing.T) {
	args := []string{"-f", "--exit-with-parent", "-U", "SOCK", "memory", "1M"}
	orig := slices.Clone(args)
	s := nbdtest.Start(t, "nbdkit", args...)
	if !slices.Equal(args, orig) {
		t.Errorf("Start modified its arguments: %q", args)
	}
	if len(s.Socket) >= 108 {
		t.Errorf("socket path %q is too long for sun_path", s.Socket)
	}
	c, err := net.Dial("unix", s.Socket)
	if err != nil {
		t.Fatalf("dialling the started server: %v", err)
	}
	c.Close()
	s.Kill()
	s.Kill() // a no-op
	if c, err := net.Dial("unix", s.Socket); err == nil {
		c.Close()
		t.Errorf("the server still accepts connections after Kill")
	}
}
