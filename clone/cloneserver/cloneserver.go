// Package cloneserver does what "kcopyd clone" does, for a Go program: it
// opens SOURCE and DEST by their locations (a file, a block device or an
// NBD URL), and the metadata file, starts a clone.Clone of them and serves
// it over NBD (package nbdserver) until the caller stops it or, with
// Config.UntilHydrated, until every region is copied and the last client
// has left.
//
//	s, err := cloneserver.Open(ctx, &cloneserver.Config{
//		Source: "nbd://backup/vm1", Dest: "/dev/vg/vm1", Metadata: "vm1.clone",
//		UntilHydrated: true,
//	})
//	if err != nil {
//		return err // nothing was written, nothing created is left behind
//	}
//	l, err := nbdserver.ListenUnix("/run/vm.sock")
//	if err != nil { … }
//	err = s.Serve(ctx, l)              // clients use the clone at once
//	err = errors.Join(err, s.Close()) // flushes DEST, commits the metadata
//
// Open refuses bad input before it writes anything, and removes again what
// it created (a DEST file, a metadata file) when it fails: a refused run
// leaves everything as it was. Serve and Close keep what clients wrote; a
// later run with the same Config resumes hydration where the last commit
// left it (see package clone on crash safety).
package cloneserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/kcopyd/kcopyd/clone"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/nbd/nbdserver"
	"github.com/kcopyd/kcopyd/location"
)

// Config says what to clone, how, and how to serve it. Open copies it;
// later changes have no effect.
type Config struct {
	// Source is SOURCE's location: a file, a block device or an NBD URL.
	// It is opened read-only through the page cache (the clone serves
	// requests of any alignment) and must not change while the clone
	// runs.
	Source string
	// Dest is DEST's location: a file or a block device at least as large
	// as SOURCE, opened for writing through the page cache.
	Dest string
	// CreateDest creates a missing DEST as a sparse file of SOURCE's size.
	// Default false: a missing DEST is refused.
	CreateDest bool
	// Metadata is the path of the metadata file, created blank when it
	// does not exist (clone.OpenMetadataFile); afterwards it belongs to
	// the same SOURCE, DEST and region size.
	Metadata string
	// Clone configures the clone: region size (0: the metadata's, else
	// clone.DefaultRegionSize), batch size, throttle, and so on.
	Clone clone.Options
	// Location says how SOURCE is reached when it is an NBD URL (the
	// client's Config and connect timeout) and how messages name options
	// (Names). Write, Direct and BlockDirect are ignored; Force applies to
	// a block device DEST.
	Location location.Options
	// NBD configures the export: its name, TLS, the log. ReadOnly is
	// ignored: clients write to the clone.
	NBD nbdserver.Options
	// UntilHydrated makes Serve return once every region is hydrated and
	// committed and no client is connected. Default false: Serve returns
	// only when its context ends or the listener fails.
	UntilHydrated bool
	// ShutdownTimeout bounds the wait for requests in flight when Serve
	// stops; those still running after it are dropped, which NBD.Logf is
	// told. Default nbdserver.DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Progress, when not nil, is called with the clone's status every
	// ProgressInterval while Serve runs, on a goroutine of Serve's, which
	// waits for the last call to return before it returns. Default nil.
	Progress func(clone.Status)
	// ProgressInterval is the interval of Progress calls. Default 1s.
	ProgressInterval time.Duration
	// Names name options in the advice of error messages. Default: the
	// names of the Config fields.
	Names Names
}

// Names name options in error messages ("DEST x does not exist
// (--create makes it)"); an empty field takes the default in parentheses.
type Names struct {
	CreateDest string // Config.CreateDest
	Metadata   string // Config.Metadata
}

// withDefaults returns a copy of c with its defaults applied.
func (c *Config) withDefaults() Config {
	d := *c
	if d.ShutdownTimeout == 0 {
		d.ShutdownTimeout = nbdserver.DefaultShutdownTimeout
	}
	if d.ProgressInterval <= 0 {
		d.ProgressInterval = time.Second
	}
	if d.Names.CreateDest == "" {
		d.Names.CreateDest = "Config.CreateDest"
	}
	if d.Names.Metadata == "" {
		d.Names.Metadata = "Config.Metadata"
	}
	d.NBD.ReadOnly = false
	return d
}

// A Server is a clone of two opened locations and the NBD server that
// serves it. Its exported fields are for reading.
type Server struct {
	Source, Dest *location.Location // opened by Open, closed by Close
	Clone        *clone.Clone       // the clone: Status, Throttle, Hydrated

	cfg   Config
	md    *device.File
	mdNew bool // Open created the metadata file
	nbd   *nbdserver.Server
}

// Open opens SOURCE, DEST (creating it with Config.CreateDest) and the
// metadata, starts the clone and prepares its NBD server. It refuses,
// before writing anything, a DEST that is an NBD URL, missing (without
// CreateDest), SOURCE itself or smaller than SOURCE, and metadata of
// another clone, with errors wrapping the sentinels of packages clone and
// location; on any failure it closes what it opened and removes what it
// created, and joins a failure to do so to the error.
func Open(ctx context.Context, cfg *Config) (_ *Server, err error) {
	s := &Server{cfg: cfg.withDefaults()}
	if s.Source, err = location.Inspect(cfg.Source, &s.cfg.Location); err != nil {
		return nil, err
	}
	if s.Dest, err = location.Inspect(cfg.Dest, &s.cfg.Location); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.undo())
		}
	}()
	if err := s.openDevices(ctx); err != nil {
		return nil, err
	}
	c := &s.cfg
	if s.md, s.mdNew, err = clone.OpenMetadataFile(c.Metadata, s.Source.Dev.Size(), c.Clone.RegionSize); err != nil {
		return nil, fmt.Errorf("%s: %w", c.Names.Metadata, err)
	}
	// The metadata records the devices' identities (file device and
	// inode, block device number, NBD URI).
	if s.Clone, err = clone.Open(s.Source.Dev, s.Dest.Dev, s.md, &c.Clone); err != nil {
		return nil, err
	}
	if s.nbd, err = nbdserver.New(s.Clone, &c.NBD); err != nil {
		return nil, err
	}
	return s, nil
}

// openDevices opens SOURCE and DEST, the inspected locations.
func (s *Server) openDevices(ctx context.Context) error {
	c := &s.cfg
	src, dst := s.Source, s.Dest
	if dst.Kind == location.URL {
		return fmt.Errorf("%s: DEST must be a file or block device", dst.Spec)
	}
	so := c.Location
	so.Write, so.Direct, so.BlockDirect = false, false, false
	if err := src.Open(ctx, &so); err != nil {
		return err
	}
	if !dst.Exists && !c.CreateDest {
		return fmt.Errorf("DEST %s does not exist (%s makes it)", dst.Spec, c.Names.CreateDest)
	}
	if dst.Identity() == src.Identity() {
		return fmt.Errorf("%s: %w", dst.Spec, clone.ErrSameDevice)
	}
	do := &location.Options{Write: true, Force: c.Location.Force, Names: c.Location.Names}
	var err error
	if dst.Exists {
		err = dst.Open(ctx, do)
	} else {
		err = dst.Create(src.Dev.Size(), do)
	}
	if err != nil {
		return err
	}
	if dst.Dev.Size() < src.Dev.Size() {
		return fmt.Errorf("%w: DEST %s has %d bytes, SOURCE %s has %d", clone.ErrDestTooSmall, dst.Spec, dst.Dev.Size(), src.Spec, src.Dev.Size())
	}
	return nil
}

// undo closes what Open opened and removes what it created.
func (s *Server) undo() error {
	var err error
	if s.Clone != nil {
		err = s.Clone.Close()
		s.Clone = nil
	}
	if s.md != nil {
		err = errors.Join(err, s.md.Close())
		if s.mdNew {
			err = errors.Join(err, os.Remove(s.cfg.Metadata))
		}
		s.md = nil
	}
	for _, l := range []*location.Location{s.Dest, s.Source} {
		if l != nil {
			err = errors.Join(err, l.Undo())
		}
	}
	return err
}

// Serve serves the clone on l until ctx ends, the listener fails, or (with
// Config.UntilHydrated) every region is hydrated and committed and no
// client is connected; then it answers the requests in flight, waiting at
// most Config.ShutdownTimeout (nbdserver.Server.Run). It returns nil, or
// the listener's error. It takes ownership of l and can be called once.
// The clone keeps running until Close.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	cl := newCountingListener(l)
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if s.cfg.UntilHydrated {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.stopWhenDone(runCtx, cl, stop)
		}()
	}
	if s.cfg.Progress != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.progress(runCtx)
		}()
	}
	err := s.nbd.Run(runCtx, cl, s.cfg.ShutdownTimeout)
	stop()
	wg.Wait()
	return err
}

// progress calls Config.Progress every ProgressInterval until ctx ends.
func (s *Server) progress(ctx context.Context) {
	t := time.NewTicker(s.cfg.ProgressInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.cfg.Progress(s.Clone.Status())
		}
	}
}

// stopWhenDone calls stop once the clone is hydrated and then no client
// is connected, unless ctx ends first.
func (s *Server) stopWhenDone(ctx context.Context, cl *countingListener, stop func()) {
	select {
	case <-s.Clone.Hydrated():
	case <-ctx.Done():
		return
	}
	select {
	case <-cl.idle():
		stop()
	case <-ctx.Done():
	}
}

// Close closes the clone, which stops background hydration, flushes DEST
// and commits the metadata, then the metadata file, DEST and SOURCE. Call
// it once, after Serve returned (or instead of Serve). A failure means the
// last hydration progress or DEST's flush may be lost; the next run
// resumes from the last commit.
func (s *Server) Close() error {
	return errors.Join(s.Clone.Close(), s.md.Close(), s.Dest.Close(), s.Source.Close())
}
