package location

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"syscall"
	"time"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/nbd"
)

// Errors of opening NBD locations, to be tested with errors.Is.
var (
	// ErrReadOnlyExport is returned by Open for an NBD export opened for
	// writing that the server marks read-only; the export was closed
	// again without a write.
	ErrReadOnlyExport = errors.New("the NBD export is read-only")
	// ErrConnectTimeout is returned by Open when connecting to an NBD
	// server ran out of Options.ConnectTimeout.
	ErrConnectTimeout = errors.New("no answer within the connect timeout")
	// ErrUnknownScheme is returned by Open for a URL whose scheme is not
	// one of nbd, nbds, nbd+unix and nbds+unix.
	ErrUnknownScheme = errors.New("unknown URL scheme")
)

// connectTimeoutError is a connection attempt that ran out of the connect
// timeout; it wraps ErrConnectTimeout and the client's error.
type connectTimeoutError struct {
	name    string // how the timeout option is called
	timeout time.Duration
	err     error
}

// Error implements error.
func (e *connectTimeoutError) Error() string {
	return fmt.Sprintf("no answer within %s (%v): %v", e.name, e.timeout, e.err)
}

// Unwrap returns ErrConnectTimeout and the client's error.
func (e *connectTimeoutError) Unwrap() []error { return []error{ErrConnectTimeout, e.err} }

// explained is an error whose message says all there is to say about err,
// which it wraps for errors.Is and errors.As.
type explained struct {
	msg string
	err error
}

// Error implements error.
func (e *explained) Error() string { return e.msg }

// Unwrap returns the error explained.
func (e *explained) Unwrap() error { return e.err }

// openURL opens a URL location and returns the remarks the client made
// while opening it. This is the one place that knows URL schemes.
func openURL(ctx context.Context, spec string, o *Options) (device.Device, []string, error) {
	switch scheme := Scheme(spec); scheme {
	case "nbd", "nbd+unix", "nbds", "nbds+unix":
		// Direct does not apply: the client has no page cache.
		d, err := openNBD(ctx, spec, o)
		if err != nil {
			return nil, nil, err
		}
		return d, d.Notes(), nil
	default:
		return nil, nil, fmt.Errorf("%w %q (kcopyd knows nbd://, nbd+unix://, nbds://, nbds+unix://)", ErrUnknownScheme, scheme)
	}
}

// openNBD opens an NBD location with o's Config and connect timeout.
// Opened for writing, an export the server marks read-only is closed again
// and ErrReadOnlyExport returned: nothing is written to it.
func openNBD(ctx context.Context, spec string, o *Options) (*nbd.Device, error) {
	parent := ctx
	var deadline time.Time
	if o.ConnectTimeout > 0 {
		deadline = time.Now().Add(o.ConnectTimeout)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	d, err := nbd.Open(ctx, spec, o.NBD)
	if err != nil {
		// The client sets the deadline on its sockets too, so the error
		// may be a socket timeout rather than the context's.
		if !deadline.IsZero() && !time.Now().Before(deadline) && parent.Err() == nil {
			err = &connectTimeoutError{o.Names.ConnectTimeout, o.ConnectTimeout, err}
		}
		return nil, err
	}
	if o.Write && d.ReadOnly() {
		d.Close()
		return nil, ErrReadOnlyExport
	}
	return d, nil
}

// nbdOpenError explains a failed open of the NBD location spec, or
// returns nil when err needs no NBD-specific explanation.
func nbdOpenError(spec string, err error, n *Names) error {
	var (
		cve     *tls.CertificateVerificationError
		dialErr *net.OpError
	)
	switch {
	case errors.Is(err, ErrReadOnlyExport):
		return &explained{fmt.Sprintf("%s is a read-only NBD export (the server refuses writes; nothing was written)", spec), err}
	case errors.As(err, &cve):
		return fmt.Errorf("%s cannot be opened: the server's TLS certificate does not verify (give its CA with %s or tls-certificates=DIR in the URL; %s skips the check): %w", spec, n.CAFile, n.Insecure, err)
	case errors.Is(err, nbd.ErrUnknownExport):
		u, perr := nbd.ParseURI(spec)
		if perr == nil && u.Export == "" {
			return fmt.Errorf("%s cannot be opened: the server has no default export (name one in the URL's path): %w", spec, err)
		}
		export := ""
		if perr == nil {
			export = u.Export
		}
		return fmt.Errorf("%s cannot be opened: the server has no export named %q: %w", spec, export, err)
	case errors.Is(err, ErrConnectTimeout):
		return fmt.Errorf("%s cannot be opened: %w", spec, err)
	case errors.As(err, &dialErr) && dialErr.Op == "dial" && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)):
		return fmt.Errorf("%s cannot be opened: no server listens there: %w", spec, err)
	}
	return nil
}
