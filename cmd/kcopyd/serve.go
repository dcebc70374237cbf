package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/nbd/nbdserver"
)

const serveLong = `Serve a file or block device over NBD until SIGINT or SIGTERM, then answer
the requests in flight, flush the device and exit 0.

Exactly one of --socket (a Unix socket, created; a stale socket left by a
killed server is replaced) or --listen (TCP, HOST:PORT; port 0 picks a free
one) is required. The export is named by --export (default: the empty name,
the default export; clients may always use the empty name). Once listening,
kcopyd prints the export's NBD URL on standard output, one line.

The export supports reads, writes, write-zeroes (fast when the device has
native zeroing), trim (when the device can discard), flush, FUA, block
status (base:allocation, from the holes of a sparse file) and multiple
connections per client. --read-only refuses writes with EPERM; a block
device served read-write is claimed exclusively (refused when mounted).

TLS: --tls-certificates DIR (server-cert.pem and server-key.pem, the layout
of nbdkit and qemu-nbd) makes TLS mandatory; --tls-verify-peer also requires
client certificates signed by DIR/ca-cert.pem.

Exit status:
  0    stopped by SIGINT or SIGTERM; requests in flight were answered and
       the device flushed
  1    bad usage or input (no device, socket in use, bad certificates);
       nothing was served
  3    the final flush failed, or the listener failed`

const serveExample = `  # export a disk image on a Unix socket
  kcopyd serve disk.img --socket /run/disk.sock
  nbdinfo 'nbd+unix:///?socket=/run/disk.sock'

  # export a block device read-only over TCP as "sdb"
  kcopyd serve --read-only --listen 0.0.0.0:10809 --export sdb /dev/sdb

  # with TLS
  kcopyd serve disk.img --listen :10809 --tls-certificates /etc/pki/nbd`

// serveOptions are the flags of kcopyd serve.
type serveOptions struct {
	socket, listen, export string
	readOnly               bool
	tlsDir                 string
	tlsVerifyPeer          bool
}

func newServeCmd(e *env) *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:     "serve [options] DEVICE (--socket PATH | --listen HOST:PORT)",
		Short:   "Serve a file or block device over NBD",
		Long:    serveLong,
		Example: serveExample,
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServe(cmd.Context(), e, o, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.socket, "socket", "", "serve on the Unix socket `PATH`")
	f.StringVar(&o.listen, "listen", "", "serve on TCP `HOST:PORT`")
	f.StringVar(&o.export, "export", "", "export `NAME` (default: the empty name)")
	f.BoolVar(&o.readOnly, "read-only", false, "serve read-only")
	f.StringVar(&o.tlsDir, "tls-certificates", "", "require TLS with the server certificate and key in `DIR`")
	f.BoolVar(&o.tlsVerifyPeer, "tls-verify-peer", false, "require client certificates signed by DIR/ca-cert.pem")
	return cmd
}

// check validates the command line before anything is opened.
func (o *serveOptions) check(args []string) error {
	switch {
	case len(args) != 1:
		return usageErrorf("serve needs exactly one DEVICE, got %d arguments", len(args))
	case (o.socket == "") == (o.listen == ""):
		return usageErrorf("serve needs exactly one of --socket and --listen")
	case o.tlsVerifyPeer && o.tlsDir == "":
		return usageErrorf("--tls-verify-peer needs --tls-certificates")
	}
	return nil
}

func runServe(ctx context.Context, e *env, o *serveOptions, args []string) error {
	if err := o.check(args); err != nil {
		return err
	}
	tc, err := o.tlsConfig()
	if err != nil {
		return inputError(err)
	}
	l, err := inspectLocation(args[0])
	if err != nil {
		return inputError(err)
	}
	if l.Kind == locURL || !l.Exists {
		return inputError(fmt.Errorf("%s: serve exports an existing file or block device", l.Spec))
	}
	// buffered: NBD clients send requests of any alignment.
	if err := openLocation(ctx, l, openMode{write: !o.readOnly, buffered: true, keepCache: true}); err != nil {
		return inputError(err)
	}
	defer l.Close()
	srv, err := nbdserver.New(l.Dev, o.serverOptions(e, "serve", tc))
	if err != nil {
		return inputError(err)
	}
	ln, err := o.listenOn()
	if err != nil {
		return inputError(err)
	}
	if o.socket != "" {
		defer os.Remove(o.socket)
	}
	fmt.Fprintln(e.stdout, nbdserver.ExportURL(ln.Addr(), o.export, tc != nil))
	serveErr := srv.Run(ctx, ln, nbdserver.DefaultShutdownTimeout)
	if f, ok := l.Dev.(device.Flusher); ok && !o.readOnly {
		if err := f.Flush(); err != nil {
			return &exitError{code: exitWriteError, err: fmt.Errorf("flushing %s: %w", device.Name(l.Dev), err)}
		}
	}
	if serveErr != nil {
		return &exitError{code: exitWriteError, err: serveErr}
	}
	return nil
}

// serverOptions returns the NBD server's options; cmd names the command
// in its messages.
func (o *serveOptions) serverOptions(e *env, cmd string, tc *tls.Config) *nbdserver.Options {
	return &nbdserver.Options{
		Name: o.export, ReadOnly: o.readOnly, TLSConfig: tc, TLSRequired: tc != nil,
		Logf: func(format string, args ...any) { fmt.Fprintf(e.stderr, "kcopyd: "+cmd+": "+format+"\n", args...) },
	}
}

// listenOn opens the listener: TCP, or a Unix socket that replaces a stale
// one (nbdserver.ListenUnix), with the flag's name in its refusals.
func (o *serveOptions) listenOn() (net.Listener, error) {
	if o.listen != "" {
		return net.Listen("tcp", o.listen)
	}
	l, err := nbdserver.ListenUnix(o.socket)
	if errors.Is(err, nbdserver.ErrNotSocket) || errors.Is(err, nbdserver.ErrSocketInUse) {
		err = fmt.Errorf("--socket %w", err)
	}
	return l, err
}

// tlsConfig loads the server certificate (and the CA for client
// certificates) from --tls-certificates, or returns nil without it.
func (o *serveOptions) tlsConfig() (*tls.Config, error) {
	if o.tlsDir == "" {
		return nil, nil
	}
	cfg, err := nbdserver.LoadTLSConfig(o.tlsDir)
	if err != nil {
		return nil, fmt.Errorf("--tls-certificates: %w", err)
	}
	if o.tlsVerifyPeer {
		if err := nbdserver.RequireClientCerts(cfg, filepath.Join(o.tlsDir, nbdserver.TLSCAFile)); err != nil {
			return nil, fmt.Errorf("--tls-verify-peer: %w", err)
		}
	}
	return cfg, nil
}
