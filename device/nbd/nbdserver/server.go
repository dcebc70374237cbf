package nbdserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/nbd/internal/proto"
	"github.com/kcopyd/kcopyd/internal/bufpool"
)

// Defaults applied by New to zero Options fields.
const (
	// DefaultMaxPayload is the largest read or write one request may
	// carry: 32 MiB, the size the protocol tells clients they may always
	// use.
	DefaultMaxPayload = 32 << 20
	// DefaultMaxInFlight is the number of requests of one connection the
	// server works on at once.
	DefaultMaxInFlight = 16
	// DefaultMaxInFlightBytes is the payload memory one connection may
	// hold for requests in flight.
	DefaultMaxInFlightBytes = 64 << 20
	// DefaultHandshakeTimeout bounds option haggling.
	DefaultHandshakeTimeout = 30 * time.Second
)

// Options configure a Server. The zero value (or nil) serves the device
// read-write as the export "" without TLS. New copies the Options; later
// changes by the caller have no effect.
type Options struct {
	// Name is the export name announced by NBD_OPT_LIST. Clients reach
	// the export by this name or by the empty name (the default export);
	// any other name is an unknown export. Default "".
	Name string
	// Description is sent as NBD_INFO_DESCRIPTION to clients that ask.
	// Default none.
	Description string

	// ReadOnly serves the export read-only: it is marked
	// NBD_FLAG_READ_ONLY and writes, zeroing and trims fail with EPERM.
	// Default false.
	ReadOnly bool

	// TLSConfig, when non-nil, offers NBD_OPT_STARTTLS with this
	// configuration, which must hold the server certificate. Set
	// ClientAuth to tls.RequireAndVerifyClientCert (and ClientCAs) to
	// check client certificates. It is cloned; TLS 1.2 is the minimum.
	// Default nil: STARTTLS is answered NBD_REP_ERR_UNSUP.
	TLSConfig *tls.Config
	// TLSRequired refuses every option but NBD_OPT_STARTTLS and
	// NBD_OPT_ABORT until TLS is up (the protocol's FORCEDTLS mode). It
	// needs TLSConfig. Default false: TLS is available but optional
	// (SELECTIVETLS with no TLS-only export). Hazard: without it, data
	// and export names may travel in clear.
	TLSRequired bool

	// MaxPayload caps the length of one READ or WRITE and is advertised
	// as the maximum block size. Default and upper bound 32 MiB, lower
	// bound 4 KiB; it is rounded down to the device's alignment. Larger requests fail with
	// EINVAL (EOVERFLOW for reads with NBD_CMD_FLAG_DF); the payload of
	// an oversized write is read and dropped.
	MaxPayload int
	// MaxInFlight is the number of requests of one connection handled at
	// once. Default 16. The server stops reading a connection's requests
	// while it is reached (backpressure).
	MaxInFlight int
	// MaxInFlightBytes caps the read and write payload memory one
	// connection holds at once. Default 64 MiB; it is raised to
	// MaxPayload when smaller. The server also keeps up to this much in
	// payload buffers for reuse across connections (one buffer of
	// MaxPayload from New on). Hazard: memory use grows with it times
	// the number of clients.
	MaxInFlightBytes int64
	// HandshakeTimeout bounds option haggling; a client that has not
	// entered transmission within it is disconnected. Default 30 s;
	// negative means no limit.
	HandshakeTimeout time.Duration

	// Logf, when non-nil, receives one line per connection event worth
	// knowing (a client that broke the protocol, a device error).
	Logf func(format string, args ...any)
}

// withDefaults returns a copy of o (nil means zero) with defaults applied,
// or an error for settings that cannot work.
func (o *Options) withDefaults(align int64) (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	if len(r.Name) > proto.MaxString || len(r.Description) > proto.MaxString {
		return r, fmt.Errorf("%w: export name or description longer than %d bytes", ErrBadOptions, proto.MaxString)
	}
	if r.TLSRequired && r.TLSConfig == nil {
		return r, fmt.Errorf("%w: TLSRequired without TLSConfig", ErrBadOptions)
	}
	if r.TLSConfig != nil {
		r.TLSConfig = r.TLSConfig.Clone()
		if r.TLSConfig.MinVersion < tls.VersionTLS12 {
			r.TLSConfig.MinVersion = tls.VersionTLS12
		}
	}
	if r.MaxPayload <= 0 || r.MaxPayload > DefaultMaxPayload {
		r.MaxPayload = DefaultMaxPayload
	}
	r.MaxPayload -= r.MaxPayload % int(align)
	r.MaxPayload = max(r.MaxPayload, int(max(align, 4096))) // at least the preferred block size
	if r.MaxInFlight <= 0 {
		r.MaxInFlight = DefaultMaxInFlight
	}
	if r.MaxInFlightBytes <= 0 {
		r.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	r.MaxInFlightBytes = max(r.MaxInFlightBytes, int64(r.MaxPayload))
	if r.HandshakeTimeout == 0 {
		r.HandshakeTimeout = DefaultHandshakeTimeout
	}
	return r, nil
}

// Server serves one device as one NBD export to any number of clients.
// Every connection uses the same device object, so a flush on one
// connection covers writes completed on all of them, which is why the
// export advertises NBD_FLAG_CAN_MULTI_CONN. Its methods are safe for
// concurrent use.
type Server struct {
	dev  device.Device
	opts Options
	ex   exportInfo
	pool *bufpool.Pool // payload buffers, shared by every connection

	mu struct {
		sync.Mutex
		closing   bool // Shutdown or Close was called
		listeners map[net.Listener]struct{}
		conns     map[*conn]struct{}
	}
	wg sync.WaitGroup // one per Serve and per connection
}

// New returns a server for dev. The server does not own dev: the caller
// closes it after Shutdown or Close returned. It fails with an error
// wrapping ErrBadOptions when the options cannot work or the device's
// alignment cannot be advertised (above 64 KiB).
func New(dev device.Device, o *Options) (*Server, error) {
	ex, err := newExportInfo(dev)
	if err != nil {
		return nil, err
	}
	opts, err := o.withDefaults(ex.align)
	if err != nil {
		return nil, err
	}
	ex.finish(&opts)
	pool, err := bufpool.New(opts.MaxPayload, opts.MaxInFlightBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadOptions, err)
	}
	s := &Server{dev: dev, opts: opts, ex: ex, pool: pool}
	s.mu.listeners = make(map[net.Listener]struct{})
	s.mu.conns = make(map[*conn]struct{})
	return s, nil
}

// Serve accepts connections on l and serves each on its own goroutines
// until Shutdown or Close; it then returns ErrServerClosed. Temporary
// accept errors (too many open files) are retried after a growing pause of
// up to 1 s; any other accept error closes l and is returned. Serve takes
// ownership of l.
func (s *Server) Serve(l net.Listener) error {
	if !s.track(l, true) {
		l.Close()
		return ErrServerClosed
	}
	defer s.track(l, false)
	var delay time.Duration // backoff after temporary accept errors
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.closing() {
				return ErrServerClosed
			}
			// Out of file descriptors and the like: wait, as net/http does.
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logf("nbdserver: accept: %v; retrying in %v", err, delay)
				time.Sleep(delay)
				continue
			}
			l.Close()
			return fmt.Errorf("nbdserver: accept: %w", err)
		}
		delay = 0
		c := newConn(s, nc)
		if !s.add(c) {
			nc.Close()
			continue
		}
		go func() {
			defer s.remove(c)
			c.serve()
		}()
	}
}

// ServeConn serves one client on nc and returns when the client
// disconnects, breaks the protocol, or the server shuts down. It takes
// ownership of nc and closes it. It returns ErrServerClosed when called
// after Shutdown or Close.
func (s *Server) ServeConn(nc net.Conn) error {
	c := newConn(s, nc)
	if !s.add(c) {
		nc.Close()
		return ErrServerClosed
	}
	defer s.remove(c)
	c.serve()
	return nil
}

// track registers (add) or unregisters a listener. It reports false when
// the server is closing and l was not registered.
func (s *Server) track(l net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.mu.listeners, l)
		s.wg.Done()
		return true
	}
	if s.mu.closing {
		return false
	}
	s.mu.listeners[l] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) add(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closing {
		return false
	}
	s.mu.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) remove(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.mu.conns, c)
	s.wg.Done()
}

func (s *Server) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.closing
}

// beginClose marks the server closing, closes its listeners and returns
// the connections open at that moment.
func (s *Server) beginClose() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.closing = true
	for l := range s.mu.listeners {
		l.Close()
	}
	conns := make([]*conn, 0, len(s.mu.conns))
	for c := range s.mu.conns {
		conns = append(conns, c)
	}
	return conns
}

// Shutdown stops the server gracefully: it closes the listeners, stops
// reading new requests, answers every request already read, and closes
// each connection once its replies are sent. Clients still negotiating
// are disconnected. It waits until every Serve and ServeConn returned, or
// until ctx is done; then it closes the remaining connections at once
// (their requests in flight go unanswered) and returns ctx.Err(). It does
// not flush or close the device. Later calls wait the same way.
func (s *Server) Shutdown(ctx context.Context) error {
	for _, c := range s.beginClose() {
		c.stopReading()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		<-done
		return ctx.Err()
	}
}

// Close stops the server at once: it closes the listeners and every
// connection without answering requests in flight, and waits until every
// Serve and ServeConn returned (device calls in progress finish first).
// It does not flush or close the device.
func (s *Server) Close() error {
	for _, c := range s.beginClose() {
		c.close()
	}
	s.wg.Wait()
	return nil
}

// logf reports an event through Options.Logf.
func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}
