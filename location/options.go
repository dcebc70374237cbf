package location

import (
	"time"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/nbd"
)

// Defaults applied to zero Options fields.
const (
	// DefaultConnections is the number of connections opened to an NBD
	// export when Options.NBD is nil: 4, chosen by measurement
	// (docs/PERFORMANCE.md, "NBD connections"): with the 4 MiB socket
	// send buffer, 1 GiB file -> nbdkit took 1.42-1.47 s with 4 against
	// 2.87-3.70 with 2, nbdkit -> nbdkit 2.13-2.24 against 3.35-3.57,
	// and nbdkit -> file 1.74-2.03 against 2.03-2.12 (3 interleaved
	// rounds each, quiet machine).
	DefaultConnections = 4
	// DefaultConnectTimeout bounds connecting to an NBD server (TCP, TLS
	// and handshake) when Options.ConnectTimeout is 0.
	DefaultConnectTimeout = 30 * time.Second
	// WriteBehind is device.FileOptions.WriteBehind for files opened for
	// writing: how far behind the newest write the page cache is written
	// back and dropped. Measured on 1 GiB NBD -> new file
	// (docs/PERFORMANCE.md, "NBD to file"): the final fdatasync fell from
	// 0.84 s to 0.08-0.18 s, and 4 MiB beat 0, 16 and 64 MiB in each of 3
	// interleaved rounds; 1 GiB to 4 new files took a third of the time it
	// took without write-behind.
	WriteBehind = 4 << 20
)

// Options say how Open, Create and Grow open a location. The zero value
// (or nil) opens it read-only, through the page cache, with the NBD
// defaults. The options are copied; later changes have no effect.
type Options struct {
	// Write opens the location for writing. Default false. A block device
	// opened for writing takes the kernel's exclusive claim (O_EXCL), so
	// a mounted device, an LVM/md/dm member or active swap is refused
	// with an error wrapping blockdev.ErrBusy; a regular file gets
	// WriteBehind; an NBD export the server marks read-only is refused
	// with ErrReadOnlyExport before anything is written.
	Write bool
	// Direct opens files and block devices with O_DIRECT and never falls
	// back to buffered I/O: a file system or device that refuses it fails
	// the open. Default false. It does not apply to NBD exports, whose
	// client has no page cache. Hazard: buffers and offsets must then
	// meet the device's Limits.
	Direct bool
	// BlockDirect opens block devices with O_DIRECT when Direct is not
	// set, falling back to the page cache (not failing) when the device
	// refuses it; Location.AutoDirect then tells, and ReopenBuffered
	// reopens the device through the page cache for regions O_DIRECT
	// cannot serve. Default false. kcopyd sets it unless --buffered: a
	// copy tool has no use for the cache it would fill, and 1 GiB loop
	// -> loop took 4.3 s and 5.6 CPU seconds through the page cache
	// against 2.0 s and 0.4 with O_DIRECT (docs/PERFORMANCE.md).
	BlockDirect bool
	// Force writes to a block device even when its exclusive claim fails
	// (it is mounted or in use): the device is opened without the claim
	// and Location.Forced says so. Default false. Hazard: writing under a
	// mounted file system corrupts it.
	Force bool
	// KeepAllocation zeroes regular files in place rather than punching
	// holes (device.FileOptions.KeepAllocation): a wipe that keeps the
	// file's allocation, as fallocate --zero-range does. Default false.
	KeepAllocation bool
	// DropBehind makes reads of regular files through the page cache
	// leave no page cached that was not cached before
	// (device.FileOptions.DropBehind), so that a copy does not push the
	// rest of the page cache out; files written get WriteBehind for the
	// same reason. Default false: a server, whose clients read the same
	// data again, wants the cache. kcopyd copy, zero and verify set it.
	DropBehind bool
	// NBD configures the client for nbd://, nbds://, nbd+unix:// and
	// nbds+unix:// locations; its ReadOnly is replaced by !Write. Default
	// (nil): DefaultConnections connections and the nbd package's
	// defaults otherwise.
	NBD *nbd.Config
	// ConnectTimeout bounds connecting to an NBD server (TCP, TLS and the
	// handshake); an attempt that runs out fails with an error wrapping
	// ErrConnectTimeout. Default (0): DefaultConnectTimeout; negative:
	// no bound, which a server that never answers turns into a caller that
	// never returns.
	ConnectTimeout time.Duration
	// Names are how error messages name options when they advise what to
	// change. Default: the names of the Go fields (a command sets its
	// flags' names).
	Names Names
}

// Names name options in the advice of error messages ("refusing to write
// to it (--force overrides)"). An empty field takes the default in
// parentheses.
type Names struct {
	Create         string // who creates a missing file (Location.Create)
	Direct         string // Options.Direct
	Force          string // Options.Force
	CAFile         string // nbd.Config.CAFile
	Insecure       string // nbd.Config.InsecureSkipVerify
	ConnectTimeout string // Options.ConnectTimeout
}

// withDefaults returns a copy of n with its empty fields defaulted.
func (n Names) withDefaults() Names {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&n.Create, "Location.Create")
	def(&n.Direct, "Options.Direct")
	def(&n.Force, "Options.Force")
	def(&n.CAFile, "nbd.Config.CAFile")
	def(&n.Insecure, "nbd.Config.InsecureSkipVerify")
	def(&n.ConnectTimeout, "Options.ConnectTimeout")
	return n
}

// withDefaults returns a copy of o (nil for the zero Options) with its
// defaults applied. The NBD Config is copied too.
func (o *Options) withDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	if c.NBD == nil {
		c.NBD = &nbd.Config{Connections: DefaultConnections}
	} else {
		cfg := *c.NBD
		c.NBD = &cfg
	}
	c.NBD.ReadOnly = !c.Write
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	c.Names = c.Names.withDefaults()
	return c
}

// fileOptions returns the options that open a regular file.
func (o *Options) fileOptions() device.FileOptions {
	// IOUring applies under Direct. Measured, 1 GiB file -> file with
	// --direct on ext4: 0.45-0.51 CPU seconds with the ring against
	// 0.71-0.85 without (new destination), 0.32 against 0.43 (existing
	// one); dd took 0.26-0.36.
	f := device.FileOptions{ReadOnly: !o.Write, Direct: o.Direct, KeepAllocation: o.KeepAllocation, IOUring: true, DropBehind: o.DropBehind}
	if o.Write {
		f.WriteBehind = WriteBehind
	}
	return f
}
