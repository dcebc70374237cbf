package nbd

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
)

// DefaultPort is the IANA-assigned NBD port used when a TCP location has
// none.
const DefaultPort = "10809"

// URI is a parsed NBD location (NetworkBlockDevice/nbd doc/uri.md).
type URI struct {
	// Scheme is "nbd", "nbds", "nbd+unix" or "nbds+unix".
	Scheme string
	// Host is the TCP host name or IP address (without brackets); empty
	// for Unix sockets.
	Host string
	// Port is the TCP port, DefaultPort when the location has none.
	Port string
	// Socket is the Unix socket path (query parameter "socket"). A path
	// that starts with NUL or '@' names a Linux abstract socket.
	Socket string
	// Export is the export name: the path without its leading '/',
	// percent-decoded. It may be empty (the server's default export).
	Export string

	// TLS is true for the nbds schemes: the connection must be encrypted.
	TLS bool
	// TLSHostname is the name the server certificate is checked against
	// (query parameter "tls-hostname"); empty means Host, or "localhost"
	// for Unix sockets.
	TLSHostname string
	// TLSNoVerify is true when the location says tls-verify-peer=0.
	TLSNoVerify bool
	// TLSCertificates is a directory (query parameter "tls-certificates")
	// holding ca-cert.pem and optionally client-cert.pem and
	// client-key.pem, laid out as for nbdkit and libnbd.
	TLSCertificates string
}

// ParseURI parses an NBD location:
//
//	nbd://HOST[:PORT][/EXPORT]
//	nbds://HOST[:PORT][/EXPORT]
//	nbd+unix:///[EXPORT]?socket=PATH
//	nbds+unix:///[EXPORT]?socket=PATH
//
// with the optional query parameters tls-hostname, tls-verify-peer (0 or
// 1), tls-type (only "x509" is supported) and tls-certificates (DIR).
// Errors wrap ErrBadURI. Unknown query parameters, user information
// (TLS-PSK user names), fragments, a socket on a TCP scheme and a host on a
// Unix scheme are rejected rather than ignored.
func ParseURI(s string) (*URI, error) {
	bad := func(format string, args ...any) (*URI, error) {
		return nil, fmt.Errorf("%w: %q: %s", ErrBadURI, s, fmt.Sprintf(format, args...))
	}
	if msg := unbracketedIPv6(s); msg != "" {
		return bad("%s", msg)
	}
	u, err := url.Parse(s)
	if err != nil {
		return bad("%v", err)
	}
	r := &URI{Scheme: strings.ToLower(u.Scheme)}
	var unix bool
	switch r.Scheme {
	case "nbd":
	case "nbds":
		r.TLS = true
	case "nbd+unix":
		unix = true
	case "nbds+unix":
		unix, r.TLS = true, true
	case "":
		return bad("no scheme (want nbd://, nbds://, nbd+unix:// or nbds+unix://)")
	default:
		return bad("unsupported scheme %q (want nbd, nbds, nbd+unix or nbds+unix)", u.Scheme)
	}
	if u.Opaque != "" {
		return bad("missing // after the scheme")
	}
	if u.User != nil {
		return bad("user information (TLS-PSK user names) is not supported")
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return bad("fragments are not allowed")
	}
	r.Export = strings.TrimPrefix(u.Path, "/")
	if strings.IndexByte(r.Export, 0) >= 0 {
		return bad("export name contains NUL")
	}
	if len(r.Export) > proto.MaxString {
		return bad("export name of %d bytes is longer than %d", len(r.Export), proto.MaxString)
	}

	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("query: %v", err)
	}
	for k, v := range q {
		if len(v) != 1 {
			return bad("query parameter %q given %d times", k, len(v))
		}
		val := v[0]
		switch k {
		case "socket":
			if !unix {
				return bad("socket parameter on a TCP location (use nbd+unix://)")
			}
			r.Socket = val
		case "tls-hostname":
			r.TLSHostname = val
		case "tls-verify-peer":
			switch val {
			case "0", "false":
				r.TLSNoVerify = true
			case "1", "true":
			default:
				return bad("tls-verify-peer=%q (want 0 or 1)", val)
			}
		case "tls-type":
			if val != "x509" {
				return bad("tls-type=%q is not supported (only x509)", val)
			}
		case "tls-certificates":
			if val == "" {
				return bad("empty tls-certificates")
			}
			r.TLSCertificates = val
		default:
			return bad("unknown query parameter %q", k)
		}
	}
	if (r.TLSHostname != "" || r.TLSNoVerify || r.TLSCertificates != "") && !r.TLS {
		return bad("TLS parameters on a location without TLS (use nbds:// or nbds+unix://)")
	}

	if unix {
		if u.Host != "" {
			return bad("host %q on a Unix socket location (write nbd+unix:///EXPORT?socket=PATH)", u.Host)
		}
		if r.Socket == "" {
			return bad("missing socket=PATH")
		}
		if strings.IndexByte(r.Socket[1:], 0) >= 0 {
			return bad("socket path contains NUL")
		}
		return r, nil
	}
	r.Host = u.Hostname()
	if r.Host == "" {
		return bad("missing host")
	}
	if strings.ContainsAny(r.Host, "%\x00") {
		return bad("host %q is not supported (no zones or NUL)", r.Host)
	}
	// url.Parse takes "]::1" as host "]:" and port 1: a host with a
	// bracket, or a colon outside an IPv6 address, names nothing and
	// would not survive String.
	if strings.ContainsAny(r.Host, "[]") || strings.Contains(r.Host, ":") && net.ParseIP(r.Host) == nil {
		return bad("host %q is neither a host name nor an IP address (write an IPv6 address in brackets, as in nbd://[::1]:10809/EXPORT)", r.Host)
	}
	r.Port = u.Port()
	if r.Port == "" {
		if strings.HasSuffix(u.Host, ":") {
			return bad("empty port")
		}
		r.Port = DefaultPort
	}
	if n, err := strconv.ParseUint(r.Port, 10, 16); err != nil || n == 0 {
		return bad("port %q is not a number in 1..65535", r.Port)
	}
	return r, nil
}

// unbracketedIPv6 returns a message when the authority of s holds more
// than one colon outside brackets: an IPv6 address written without the
// brackets RFC 3986 demands. url.Parse would split it at its last colon
// ("nbd://::1" as host ":" port 1). The message shows the bracketed forms
// the address can have been meant as. It returns "" otherwise.
func unbracketedIPv6(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return ""
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	auth, tail := rest[:end], rest[end:]
	if strings.ContainsAny(auth, "[]@") || strings.Count(auth, ":") < 2 {
		return ""
	}
	if tail == "" || tail[0] != '/' {
		tail = "/" + tail
	}
	prefix := strings.ToLower(scheme) + "://"
	var forms []string
	if i := strings.LastIndexByte(auth, ':'); i > 0 {
		host, port := auth[:i], auth[i+1:]
		if _, err := strconv.ParseUint(port, 10, 16); err == nil && net.ParseIP(host) != nil {
			forms = append(forms, prefix+"["+host+"]:"+port+tail)
		}
	}
	if net.ParseIP(auth) != nil {
		forms = append(forms, prefix+"["+auth+"]"+tail)
	}
	if len(forms) == 0 {
		return fmt.Sprintf("host %q has several colons: an IPv6 address must be written in brackets, as in nbd://[::1]:10809/EXPORT", auth)
	}
	return fmt.Sprintf("an IPv6 address must be written in brackets: %s", strings.Join(forms, " or "))
}

// network returns the dial network and address.
func (u *URI) network() (network, addr string) {
	if u.Socket != "" {
		s := u.Socket
		if s[0] == 0 {
			s = "@" + s[1:] // Go's spelling of the abstract namespace
		}
		return "unix", s
	}
	return "tcp", net.JoinHostPort(u.Host, u.Port)
}

// String returns the location in canonical form: the default port written
// out, query parameters sorted. It never contains credentials (this client
// accepts none in locations).
func (u *URI) String() string {
	v := url.Values{}
	if u.Socket != "" {
		v.Set("socket", u.Socket)
	}
	if u.TLSHostname != "" {
		v.Set("tls-hostname", u.TLSHostname)
	}
	if u.TLSNoVerify {
		v.Set("tls-verify-peer", "0")
	}
	if u.TLSCertificates != "" {
		v.Set("tls-certificates", u.TLSCertificates)
	}
	x := url.URL{Scheme: u.Scheme, Path: "/" + u.Export, RawQuery: v.Encode()}
	if u.Socket == "" {
		x.Host = net.JoinHostPort(u.Host, u.Port)
	} else {
		x.OmitHost = false
	}
	s := x.String()
	if u.Socket != "" && !strings.HasPrefix(s, u.Scheme+"://") {
		// url.URL drops the empty authority; the NBD spelling keeps it.
		s = u.Scheme + "://" + strings.TrimPrefix(s, u.Scheme+":")
	}
	return s
}

// identity is the string two handles of the same export share: the
// transport address (socket made absolute, host lower-cased) and the
// export, without TLS details.
func (u *URI) identity() string {
	if u.Socket != "" {
		s := u.Socket
		if s[0] != 0 && s[0] != '@' {
			if abs, err := filepath.Abs(s); err == nil {
				s = abs
			}
		}
		return "nbd:nbd+unix:///" + url.PathEscape(u.Export) + "?socket=" + url.QueryEscape(s)
	}
	return "nbd:nbd://" + net.JoinHostPort(strings.ToLower(u.Host), u.Port) + "/" + url.PathEscape(u.Export)
}
