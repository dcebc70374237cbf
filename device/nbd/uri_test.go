package nbd

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		in   string
		want URI
	}{
		{"nbd://example.com", URI{Scheme: "nbd", Host: "example.com", Port: "10809"}},
		{"nbd://example.com/", URI{Scheme: "nbd", Host: "example.com", Port: "10809"}},
		{"nbd://example.com:1234/disk", URI{Scheme: "nbd", Host: "example.com", Port: "1234", Export: "disk"}},
		{"nbd://example.com//disk", URI{Scheme: "nbd", Host: "example.com", Port: "10809", Export: "/disk"}},
		{"nbd://example.com/hello%20world", URI{Scheme: "nbd", Host: "example.com", Port: "10809", Export: "hello world"}},
		{"NBD://127.0.0.1:10810/a%2Fb", URI{Scheme: "nbd", Host: "127.0.0.1", Port: "10810", Export: "a/b"}},
		{"nbd://[::1]:5000/x", URI{Scheme: "nbd", Host: "::1", Port: "5000", Export: "x"}},
		{"nbds://h/e?tls-hostname=srv&tls-verify-peer=0", URI{Scheme: "nbds", Host: "h", Port: "10809", Export: "e", TLS: true, TLSHostname: "srv", TLSNoVerify: true}},
		{"nbds://h?tls-type=x509&tls-certificates=/etc/pki", URI{Scheme: "nbds", Host: "h", Port: "10809", TLS: true, TLSCertificates: "/etc/pki"}},
		{"nbd+unix:///disk?socket=/tmp/s", URI{Scheme: "nbd+unix", Socket: "/tmp/s", Export: "disk"}},
		{"nbd+unix:///?socket=rel.sock", URI{Scheme: "nbd+unix", Socket: "rel.sock"}},
		{"nbd+unix:///?socket=%00/abstract", URI{Scheme: "nbd+unix", Socket: "\x00/abstract"}},
		{"nbds+unix:///e?socket=/s&tls-verify-peer=1", URI{Scheme: "nbds+unix", Socket: "/s", Export: "e", TLS: true}},
	}
	for _, tt := range tests {
		got, err := ParseURI(tt.in)
		if err != nil {
			t.Errorf("ParseURI(%q) = %v; want %+v", tt.in, err, tt.want)
			continue
		}
		if !reflect.DeepEqual(*got, tt.want) {
			t.Errorf("ParseURI(%q) = %+v; want %+v", tt.in, *got, tt.want)
		}
		// String is canonical: it parses back to the same URI.
		again, err := ParseURI(got.String())
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Errorf("ParseURI(%q.String() = %q) = %+v, %v; want %+v", tt.in, got.String(), again, err, got)
		}
	}
}

func TestParseURIErrors(t *testing.T) {
	for _, in := range []string{
		"",
		"example.com:10809",
		"http://example.com/",
		"nbd:example.com",
		"nbd:///disk",
		"nbd://example.com:0/",
		"nbd://example.com:99999/",
		"nbd://example.com:port/",
		"nbd://user:secret@example.com/",
		"nbd://example.com/#frag",
		"nbd://example.com/?socket=/tmp/s",
		"nbd://example.com/?tls-hostname=x",
		"nbd://example.com/?unknown=1",
		"nbds://example.com/?tls-type=psk",
		"nbds://example.com/?tls-verify-peer=maybe",
		"nbds://example.com/?tls-hostname=a&tls-hostname=b",
		"nbd+unix:///disk",
		"nbd+unix://host/disk?socket=/s",
		"nbd://example.com/a%00b",
		"nbd://example.com/" + strings.Repeat("x", 4097),
		"nbd://example.com/%zz",
		"nBd://]::1", // found by FuzzParseURI: host "]:"
		"nbd://a]:1/",
		"nbd://[::1]]:1/",
	} {
		u, err := ParseURI(in)
		if !errors.Is(err, ErrBadURI) {
			t.Errorf("ParseURI(%q) = %+v, %v; want ErrBadURI", in, u, err)
		}
	}
}

// TestParseURIUnbracketedIPv6 checks that an IPv6 address without
// brackets is refused (url.Parse would split it at its last colon) with a
// message showing the bracketed form.
func TestParseURIUnbracketedIPv6(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string // each must appear in the message
	}{
		{"nBd://::1", []string{"nbd://[::1]/"}},
		{"nbd://::1:10809/x", []string{"nbd://[::1]:10809/x"}},
		{"nbd://::1:1080/x", []string{"nbd://[::1]:1080/x", "nbd://[::1:1080]/x"}},
		{"nbd://fe80::1/disk", []string{"nbd://[fe80::1]/disk"}},
		{"nbds://2001:db8::7:5000/e?tls-verify-peer=0", []string{"nbds://[2001:db8::7]:5000/e", "nbds://[2001:db8::7:5000]/e"}},
		{"nbd://a:b:c/", []string{"brackets"}},
	} {
		u, err := ParseURI(tt.in)
		if !errors.Is(err, ErrBadURI) {
			t.Errorf("ParseURI(%q) = %+v, %v; want ErrBadURI", tt.in, u, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ParseURI(%q) error %q; want it to mention %q", tt.in, err, w)
			}
		}
	}
}

func TestIdentity(t *testing.T) {
	a, _ := ParseURI("nbd://Example.COM/disk")
	b, _ := ParseURI("nbds://example.com:10809/disk?tls-verify-peer=0")
	c, _ := ParseURI("nbd://example.com/other")
	if a.identity() != b.identity() {
		t.Errorf("identity(%v) = %q, identity(%v) = %q; want equal", a, a.identity(), b, b.identity())
	}
	if a.identity() == c.identity() {
		t.Errorf("identity(%v) == identity(%v) = %q; want different", a, c, a.identity())
	}
	if !strings.HasPrefix(a.identity(), "nbd:") {
		t.Errorf("identity = %q; want prefix nbd:", a.identity())
	}
}

// FuzzParseURI checks that ParseURI never panics, that every accepted URI
// keeps the invariants, and that String round-trips.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"nbd://example.com:1234/disk", "nbds+unix:///e?socket=/s&tls-verify-peer=0",
		"nbd://[::1]/x%20y", "nbd+unix:///?socket=%00abs", "nbds://h?tls-certificates=/d&tls-hostname=n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			if !errors.Is(err, ErrBadURI) {
				t.Fatalf("ParseURI(%q) error %v does not wrap ErrBadURI", s, err)
			}
			return
		}
		if (u.Socket == "") == (u.Host == "") {
			t.Fatalf("ParseURI(%q) = %+v: exactly one of Socket and Host must be set", s, u)
		}
		if strings.IndexByte(u.Export, 0) >= 0 || len(u.Export) > 4096 {
			t.Fatalf("ParseURI(%q) accepted export %q", s, u.Export)
		}
		again, err := ParseURI(u.String())
		if err != nil || !reflect.DeepEqual(again, u) {
			t.Fatalf("ParseURI(%q).String() = %q parses to %+v, %v; want %+v", s, u.String(), again, err, u)
		}
	})
}
