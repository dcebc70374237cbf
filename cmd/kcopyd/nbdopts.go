package main

import (
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kcopyd/kcopyd/device/nbd"
	loc "github.com/kcopyd/kcopyd/location"
)

// nbdOptions holds the flags that configure the NBD client; copy, zero
// and verify all take them.
type nbdOptions struct {
	connections    int
	connectionsSet bool // --connections was given, not defaulted
	connectTimeout time.Duration
	timeout        time.Duration
	tlsCA          string
	tlsCert        string
	tlsKey         string
	tlsInsecure    bool
}

const (
	// defaultConnections is the default of --connections.
	defaultConnections = loc.DefaultConnections
	// maxConnections bounds --connections: each connection holds up to
	// nbd.DefaultMaxInFlight requests.
	maxConnections = 16
	// defaultConnectTimeout is the default of --nbd-connect-timeout.
	defaultConnectTimeout = loc.DefaultConnectTimeout
)

// flagGroupAnnotation marks flags listed under their own heading in
// --help; nbdGroup is the NBD options' group.
const (
	flagGroupAnnotation = "kcopyd_flag_group"
	nbdGroup            = "nbd"
)

// nbdHelp is the paragraph on NBD locations in the help of every command
// that opens locations.
const nbdHelp = `NBD options: NBD exports are opened by kcopyd's own client (no kernel nbd
device). A destination export that the server marks read-only is refused
before anything is written (status 1). --connections N opens N connections
to each export when the server advertises multi-conn, else one (with a
warning, unless --quiet, when --connections was given).
nbds:// and nbds+unix:// use TLS and verify the server's certificate
against --tls-ca FILE (default: the system's roots); --tls-cert and
--tls-key present a client certificate; --tls-insecure skips the check. The
URL parameters tls-certificates=DIR, tls-hostname=NAME and
tls-verify-peer=0 work as well.

Connecting must finish within --nbd-connect-timeout (default 30s). A server
that dies or closes its connection fails the run at once (status 2 for a
read, 3 for a write), and TCP keep-alive usually notices a vanished host
within minutes; a server that hangs with requests pending is waited for,
unless --nbd-timeout DURATION gives up on it after that long. After a
Ctrl-C, I/O in flight is waited for at most --interrupt-wait (default 30s),
saying what it waits for; a second Ctrl-C always ends kcopyd at once.`

func (n *nbdOptions) register(f *pflag.FlagSet) {
	f.IntVar(&n.connections, "connections", defaultConnections, "open `N` connections per NBD export when the server advertises multi-conn (1..16)")
	f.StringVar(&n.tlsCA, "tls-ca", "", "verify nbds:// servers against the CA certificates in PEM `FILE` (default: the system's roots)")
	f.StringVar(&n.tlsCert, "tls-cert", "", "present the client certificate in PEM `FILE` to nbds:// servers (with --tls-key)")
	f.StringVar(&n.tlsKey, "tls-key", "", "private key in PEM `FILE` of --tls-cert")
	f.BoolVar(&n.tlsInsecure, "tls-insecure", false, "do not verify the certificate of nbds:// servers (open to man-in-the-middle attacks)")
	f.DurationVar(&n.connectTimeout, "nbd-connect-timeout", defaultConnectTimeout, "give up connecting to an NBD server (TCP, TLS, handshake) after `DURATION` (0 = never)")
	f.DurationVar(&n.timeout, "nbd-timeout", 0, "drop an NBD connection when its server answers no request for `DURATION`, failing them (0 = wait forever)")
	for _, name := range []string{"connections", "tls-ca", "tls-cert", "tls-key", "tls-insecure", "nbd-connect-timeout", "nbd-timeout"} {
		_ = f.SetAnnotation(name, flagGroupAnnotation, []string{nbdGroup})
	}
}

// check validates the NBD flags against each other and against the
// location arguments.
func (n *nbdOptions) check(cmd *cobra.Command, specs []string) error {
	if n.connections < 1 || n.connections > maxConnections {
		return usageErrorf("--connections must be between 1 and %d, got %d", maxConnections, n.connections)
	}
	n.connectionsSet = cmd.Flags().Changed("connections")
	if n.connectTimeout < 0 {
		return usageErrorf("--nbd-connect-timeout must not be negative")
	}
	if n.timeout < 0 {
		return usageErrorf("--nbd-timeout must not be negative")
	}
	if (n.tlsCert == "") != (n.tlsKey == "") {
		return usageErrorf("--tls-cert and --tls-key go together")
	}
	if n.tlsInsecure && n.tlsCA != "" {
		return usageErrorf("--tls-insecure skips the certificate check that --tls-ca configures: give one of them")
	}
	// TLS flags with no TLS location would let the data go in clear
	// while the user believes it is encrypted.
	var tlsFlags []string
	for _, name := range []string{"tls-ca", "tls-cert", "tls-insecure"} {
		if cmd.Flags().Changed(name) {
			tlsFlags = append(tlsFlags, "--"+name)
		}
	}
	if len(tlsFlags) > 0 {
		anyTLS := false
		for _, s := range specs {
			anyTLS = anyTLS || loc.IsTLS(s)
		}
		if !anyTLS {
			return usageErrorf("%s applies to nbds:// and nbds+unix:// locations only, and none is given (nbd:// and nbd+unix:// never use TLS)", strings.Join(tlsFlags, ", "))
		}
	}
	return nil
}

// config returns the nbd.Config for one export.
func (n *nbdOptions) config(write bool) *nbd.Config {
	return &nbd.Config{
		ReadOnly:           !write,
		Connections:        n.connections,
		Timeout:            n.timeout,
		CAFile:             n.tlsCA,
		CertFile:           n.tlsCert,
		KeyFile:            n.tlsKey,
		InsecureSkipVerify: n.tlsInsecure,
	}
}

// The NBD options get their own heading in --help.
func init() {
	cobra.AddTemplateFunc("flagsOfGroup", func(fs *pflag.FlagSet, group string) string {
		out := pflag.NewFlagSet("", pflag.ContinueOnError)
		out.SortFlags = false
		fs.VisitAll(func(f *pflag.Flag) {
			g := f.Annotations[flagGroupAnnotation]
			if (len(g) > 0 && g[0] == group) || (group == "" && len(g) == 0) {
				out.AddFlag(f)
			}
		})
		return out.FlagUsages()
	})
}

// groupedUsageTemplate is cobra's usage template with the NBD options
// listed apart from the other flags.
const groupedUsageTemplate = `Usage:{{if .Runnable}}
  {{.UseLine}}{{end}}{{if .HasExample}}

Examples:
{{.Example}}{{end}}{{if .HasAvailableLocalFlags}}

Flags:
{{flagsOfGroup .LocalFlags "" | trimTrailingWhitespaces}}{{$nbd := flagsOfGroup .LocalFlags "nbd"}}{{if $nbd}}

NBD options (nbd://, nbd+unix://, nbds://, nbds+unix:// locations):
{{$nbd | trimTrailingWhitespaces}}{{end}}{{end}}{{if .HasAvailableInheritedFlags}}

Global Flags:
{{.InheritedFlags.FlagUsages | trimTrailingWhitespaces}}{{end}}
`
