package main

import (
	"context"

	loc "github.com/kcopyd/kcopyd/location"
)

// A location is one SOURCE or DEST argument: package location inspects,
// opens, creates and grows it. The command only maps its flags to
// location.Options (openMode) and prints what goes wrong.
type location = loc.Location

// The kinds of location, by their names in the command.
const (
	locFile  = loc.File
	locBlock = loc.Block
	locURL   = loc.URL
)

// cliNames make location's error messages advise the command's flags.
var cliNames = loc.Names{
	Create:         "--create",
	Direct:         "--direct",
	Force:          "--force",
	CAFile:         "--tls-ca FILE",
	Insecure:       "--tls-insecure",
	ConnectTimeout: "--nbd-connect-timeout",
}

// inspectLocation classifies spec without opening it (location.Inspect).
func inspectLocation(spec string) (*location, error) {
	return loc.Inspect(spec, &loc.Options{Names: cliNames})
}

// openMode says how to open a location, in the flags' terms.
type openMode struct {
	write    bool
	direct   bool // --direct
	buffered bool // --buffered: block devices through the page cache too
	force    bool // --force
	// keepAllocation zeroes files in place rather than punching holes
	// (kcopyd zero without --punch-holes: a wipe keeps the file's
	// allocation, as fallocate --zero-range does).
	keepAllocation bool
	// nbd holds the NBD flags; nil means their defaults.
	nbd *nbdOptions
	// keepCache lets file reads fill the page cache (serve, clone: their
	// clients read the same data again); copy, zero and verify read with
	// location.Options.DropBehind.
	keepCache bool
}

// options maps m to location.Options.
func (m openMode) options() *loc.Options {
	n := m.nbd
	if n == nil {
		n = &nbdOptions{connections: defaultConnections, connectTimeout: defaultConnectTimeout}
	}
	ct := n.connectTimeout
	if ct == 0 {
		ct = -1 // --nbd-connect-timeout 0: never give up
	}
	return &loc.Options{
		Write: m.write, Direct: m.direct, BlockDirect: !m.direct && !m.buffered, Force: m.force, KeepAllocation: m.keepAllocation,
		DropBehind: !m.keepCache,
		NBD:        n.config(m.write), ConnectTimeout: ct, Names: cliNames,
	}
}

// openLocation opens the existing location l in mode m. The NBD client's
// notes (fewer connections than asked for) are kept only when the user
// asked for a number of connections with --connections.
func openLocation(ctx context.Context, l *location, m openMode) error {
	err := l.Open(ctx, m.options())
	if m.nbd == nil || !m.nbd.connectionsSet {
		l.Notes = nil
	}
	return err
}
