package nbdserver_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/kcopyd/kcopyd/device/nbd"
	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
	"github.com/kcopyd/kcopyd/device/nbd/nbdserver"
	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

func TestReadOnly(t *testing.T) {
	m := memDev(t, 1<<20)
	testutil.WritePattern(t, m, 4, 0, 1<<20)
	s := serve(t, m, &nbdserver.Options{ReadOnly: true})

	d := open(t, s.uri, nil)
	if !d.ReadOnly() || !d.Info().ReadOnly {
		t.Fatal("our client does not see the export read-only")
	}
	if !testutil.CheckPattern(t, d, 4, 0, 1<<20) {
		t.Fatal("reads of a read-only export differ")
	}

	// A client that ignores the flag gets EPERM for every kind of write.
	r := dialRaw(t, s)
	r.start(false, false)
	for i, typ := range []uint16{proto.CmdWrite, proto.CmdWriteZeroes, proto.CmdTrim} {
		var payload []byte
		if typ == proto.CmdWrite {
			payload = make([]byte, 512)
		}
		r.request(typ, 0, uint64(i), 0, 512, payload)
		if _, e, _ := r.reply(); e != proto.EPERM {
			t.Errorf("command %d on a read-only export = error %d; want EPERM", typ, e)
		}
	}

	out, err := command(t, "qemu-io", "-f", "raw", "-c", "write -P 1 0 4096", s.uri).CombinedOutput()
	if !strings.Contains(string(out), "read-only") && !strings.Contains(string(out), "ermission") && err == nil {
		t.Errorf("qemu-io wrote to a read-only export:\n%s", out)
	}
	if !testutil.CheckPattern(t, m, 4, 0, 1<<20) {
		t.Fatal("a read-only export was changed")
	}
	if out := run(t, "nbdinfo", "--json", s.uri); !strings.Contains(out, `"is_read_only": true`) {
		t.Errorf("nbdinfo does not report the export read-only:\n%s", out)
	}
}

// tlsConfig loads the server certificate of p with LoadTLSConfig; with
// verify, client certificates signed by p's CA are required
// (RequireClientCerts).
func tlsConfig(tb testing.TB, p *nbdtest.PKI, verify bool) *tls.Config {
	tb.Helper()
	cfg, err := nbdserver.LoadTLSConfig(p.Dir)
	if err != nil {
		tb.Fatal(err)
	}
	if verify {
		if err := nbdserver.RequireClientCerts(cfg, p.CA()); err != nil {
			tb.Fatal(err)
		}
	}
	return cfg
}

func TestTLS(t *testing.T) {
	p := nbdtest.NewPKI(t, false)
	s := serve(t, memDev(t, 4<<20), &nbdserver.Options{TLSConfig: tlsConfig(t, p, false), TLSRequired: true})

	d := open(t, s.tlsURI(), &nbd.Config{CAFile: p.CA(), Connections: 2})
	if !d.Info().TLS {
		t.Fatal("Info().TLS = false")
	}
	testutil.WritePattern(t, d, 8, 0, 4<<20)
	if !testutil.CheckPattern(t, d, 8, 0, 4<<20) {
		t.Fatal("data differs over TLS")
	}
	if _, err := nbd.Open(context.Background(), s.uri, nil); !errors.Is(err, nbd.ErrTLSRequired) {
		t.Fatalf("plain Open of a TLS-only export = %v; want ErrTLSRequired", err)
	}
	// libnbd (GnuTLS) agrees.
	out := run(t, "nbdinfo", "--json", s.tlsURI()+"&tls-certificates="+url.QueryEscape(p.Dir))
	if !strings.Contains(out, `"TLS": true`) {
		t.Errorf("nbdinfo over TLS:\n%s", out)
	}
	if out, err := command(t, "nbdinfo", s.uri).CombinedOutput(); err == nil {
		t.Errorf("nbdinfo without TLS succeeded on a TLS-only server:\n%s", out)
	}
}

// TestTLSRequiredRefusesOptions checks FORCEDTLS: every option but
// STARTTLS and ABORT is refused before TLS, EXPORT_NAME hangs up.
func TestTLSRequiredRefusesOptions(t *testing.T) {
	p := nbdtest.NewPKI(t, false)
	s := serve(t, memDev(t, 1<<20), &nbdserver.Options{TLSConfig: tlsConfig(t, p, false), TLSRequired: true})
	r := dialRaw(t, s)
	r.flags(proto.ClientFixedNewstyle)
	for _, opt := range []uint32{proto.OptGo, proto.OptInfo, proto.OptList, proto.OptStructuredReply, proto.OptSetMetaContext, 42} {
		r.expectOpt(opt, nil, proto.RepErrTLSReqd)
	}
	r.write(proto.AppendOption(nil, proto.OptExportName, nil))
	r.expectClosed()

	// Optional TLS: the same options are answered in clear.
	s2 := serve(t, memDev(t, 1<<20), &nbdserver.Options{TLSConfig: tlsConfig(t, p, false)})
	open(t, s2.uri, nil)
	open(t, s2.tlsURI(), &nbd.Config{CAFile: p.CA()})
}

func TestTLSClientCertificate(t *testing.T) {
	p := nbdtest.NewPKI(t, true)
	s := serve(t, memDev(t, 1<<20), &nbdserver.Options{TLSConfig: tlsConfig(t, p, true), TLSRequired: true})
	d := open(t, s.tlsURI()+"&tls-certificates="+url.QueryEscape(p.Dir), nil)
	testutil.WritePattern(t, d, 9, 0, 1<<20)
	if _, err := nbd.Open(context.Background(), s.tlsURI(), &nbd.Config{CAFile: p.CA()}); err == nil {
		t.Fatal("Open without a client certificate succeeded on a server that verifies clients")
	}
	other := nbdtest.NewPKI(t, true)
	if _, err := nbd.Open(context.Background(), s.tlsURI(), &nbd.Config{CAFile: p.CA(), CertFile: other.ClientCert(), KeyFile: other.ClientKey()}); err == nil {
		t.Fatal("Open with a client certificate from another CA succeeded")
	}
	run(t, "nbdinfo", s.tlsURI()+"&tls-certificates="+url.QueryEscape(p.Dir))
}
