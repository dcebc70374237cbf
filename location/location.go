package location

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/blockdev"
)

// Kind is what a location names.
type Kind int

const (
	File  Kind = iota // a regular file, existing or to be created
	Block             // a block device
	URL               // a URL such as nbd://host/export
)

// String returns "file", "block device" or "URL".
func (k Kind) String() string {
	switch k {
	case File:
		return "file"
	case Block:
		return "block device"
	case URL:
		return "URL"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// A Location is one location string, inspected and then opened. Inspect
// fills in what stat tells without opening anything; Open, Create or Grow
// then set Dev. The exported fields are for reading; only the package's
// methods change them. A Location is not safe for concurrent use.
type Location struct {
	Spec   string // as given
	Kind   Kind
	Exists bool // false: a regular file still to be created (Create)
	// Size is the size in bytes: before opening, stat's size of a file
	// (0 for block devices, URLs and missing files); after Open, Dev's
	// size; after Create or Grow, the size before them.
	Size int64
	// Dev is the opened device, nil before Open, Create or Grow and after
	// Close.
	Dev     device.Device
	Created bool // Create made the file
	Grown   bool // Grow extended the file from Size to Dev.Size()
	Forced  bool // a block device opened without its exclusive claim (Options.Force)
	// AutoDirect is true for a block device opened with O_DIRECT because
	// of Options.BlockDirect (not Direct): see ReopenBuffered.
	AutoDirect bool
	// Notes are remarks of the NBD client made while opening (fewer
	// connections than asked for, see nbd.Device.Notes).
	Notes []string

	// key identifies the storage before it is opened, in the format of
	// device identities (see Key).
	key string
	// growFile is a second descriptor of a file Grow extended, kept to
	// truncate that very file back in Undo, whatever its path names by
	// then.
	growFile *os.File
	// opened holds the options Open used, for ReopenBuffered.
	opened Options
}

// urlRE matches the scheme of a URL location.
var urlRE = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*)://`)

// Scheme returns the lower-cased scheme of spec ("nbd+unix") when spec is
// a URL, else "".
func Scheme(spec string) string {
	m := urlRE.FindStringSubmatch(spec)
	if m == nil {
		return ""
	}
	return strings.ToLower(m[1])
}

// IsTLS reports whether spec is a URL whose scheme uses TLS (nbds://,
// nbds+unix://).
func IsTLS(spec string) bool {
	s := Scheme(spec)
	return s == "nbds" || s == "nbds+unix"
}

// Inspect classifies spec without opening it: a URL, a regular file (that
// may not exist yet: Exists false) or a block device. It refuses an empty
// spec, a dangling symbolic link, directories and file types kcopyd cannot
// read at offsets (FIFOs, sockets, character devices). o supplies only
// Names for the messages; nil is the defaults.
func Inspect(spec string, o *Options) (*Location, error) {
	if spec == "" {
		return nil, errors.New("empty location")
	}
	if urlRE.MatchString(spec) {
		return &Location{Spec: spec, Kind: URL, Exists: true}, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(spec, &st); err != nil {
		if !errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%s: %w", spec, err)
		}
		if target, err := os.Readlink(spec); err == nil {
			return nil, fmt.Errorf("%s is a symbolic link to %s, which does not exist", spec, target)
		}
		l := &Location{Spec: spec, Kind: File}
		var pst unix.Stat_t
		if err := unix.Stat(filepath.Dir(spec), &pst); err == nil {
			l.key = fmt.Sprintf("new:%d:%d/%s", pst.Dev, pst.Ino, filepath.Base(spec))
		} else {
			l.key = "new:" + spec
		}
		return l, nil
	}
	l := &Location{Spec: spec, Exists: true}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		l.Kind = File
		l.Size = st.Size
		l.key = device.FileIdentity(st.Dev, st.Ino)
	case unix.S_IFBLK:
		l.Kind = Block
		l.key = BlockIdentity(st.Rdev)
	case unix.S_IFDIR:
		var names Names
		if o != nil {
			names = o.Names
		}
		return nil, fmt.Errorf("%s is a directory; name a file in it (with %s to make a new one), a block device, or an nbd:// export", spec, names.withDefaults().Create)
	case unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFCHR:
		return nil, fmt.Errorf("%s is a %s, which kcopyd cannot use: it reads and writes at offsets, so it needs a regular file, a block device or an nbd:// export (for a stream, use dd or cat)", spec, device.FileKind(st.Mode))
	default:
		return nil, fmt.Errorf("%s is a %s, not a regular file, a block device or an nbd:// export", spec, device.FileKind(st.Mode))
	}
	return l, nil
}

// Open inspects spec and opens it; a file that does not exist is an error
// (use Inspect and Create to make one). It is Inspect followed by
// Location.Open, for callers that need nothing in between.
func Open(ctx context.Context, spec string, o *Options) (*Location, error) {
	l, err := Inspect(spec, o)
	if err != nil {
		return nil, err
	}
	if err := l.Open(ctx, o); err != nil {
		return nil, err
	}
	return l, nil
}

// BlockIdentity is the identity of the block device with device number
// rdev, as blockdev.Device.Identity spells it.
func BlockIdentity(rdev uint64) string {
	return fmt.Sprintf("blk:%d:%d", unix.Major(rdev), unix.Minor(rdev))
}

// Key identifies the storage as stat saw it before opening, in the format
// of device identities: "file:DEV:INO" (device.FileIdentity), "blk:MAJ:MIN"
// (BlockIdentity), or "new:DEV:INO/NAME" (the parent directory and name)
// for a file to be created. It is empty for URLs, whose identity is known
// only from the opened device (Identity). Two locations with one non-empty
// Key are the same storage under two names.
func (l *Location) Key() string { return l.key }

// Direct reports whether the opened location reads and writes with
// O_DIRECT: a file or block device opened with Options.Direct, or a block
// device with Options.BlockDirect (AutoDirect). An NBD export never does.
func (l *Location) Direct() bool {
	return l.Dev != nil && l.Kind != URL && (l.AutoDirect || l.opened.Direct)
}

// checkOpened refuses a device that is not the storage Inspect examined:
// the path was replaced (a symbolic link swapped, a file renamed over it)
// between the check and the open. Identity comes from the opened
// descriptor, so the checks made on key hold for what is written.
func (l *Location) checkOpened() error {
	if l.key == "" || strings.HasPrefix(l.key, "new:") {
		return nil
	}
	if id := device.IdentityOf(l.Dev); id != l.key {
		return fmt.Errorf("%s changed while kcopyd was opening it (it was %s, it is now %s); nothing was written: check who else is changing it and run again", l.Spec, l.key, id)
	}
	return nil
}

// Placement returns the store l lies in and its byte offset there: the
// opened device's device.PlacementOf (a loop device lies in its backing
// file, a partition in its disk), else Identity at 0.
func (l *Location) Placement() (store string, base int64) {
	if l.Dev != nil {
		return device.PlacementOf(l.Dev)
	}
	return l.Identity(), 0
}

// Identity returns the key that tells whether two locations are the same
// storage: Key when there is one, else device.IdentityOf of the opened
// device, else "spec:" and the spec.
func (l *Location) Identity() string {
	if l.key != "" {
		return l.key
	}
	if l.Dev != nil {
		return device.IdentityOf(l.Dev)
	}
	return "spec:" + l.Spec
}

// Open opens the existing location l with o (nil: the defaults) and sets
// Dev and Size. A block device opened for writing takes the kernel's
// exclusive claim; when that fails because the device is mounted or in use,
// Open fails unless o.Force is set. An opened file or block device that is
// not the one Inspect saw is closed and refused. On failure l is left
// unopened; the error names l.Spec and explains the cause.
func (l *Location) Open(ctx context.Context, o *Options) error {
	c := o.withDefaults()
	var (
		dev device.Device
		err error
	)
	switch l.Kind {
	case URL:
		dev, l.Notes, err = openURL(ctx, l.Spec, &c)
	case Block:
		dev, err = l.openBlock(&c)
	case File:
		if !l.Exists {
			return fmt.Errorf("%s does not exist", l.Spec)
		}
		var f *device.File
		f, err = device.OpenFile(l.Spec, c.fileOptions())
		if err == nil {
			dev = f
		}
	}
	if err != nil {
		return l.openError(err, &c)
	}
	l.Dev, l.opened = dev, c
	if err := l.checkOpened(); err != nil {
		dev.Close()
		l.Dev = nil
		return err
	}
	l.Size = dev.Size()
	return nil
}

// openBlock opens a block device: with O_DIRECT under o.Direct, or under
// o.BlockDirect when the device allows it; without its exclusive claim
// when that fails and o.Force is set.
func (l *Location) openBlock(o *Options) (device.Device, error) {
	auto := !o.Direct && o.BlockDirect
	// No io_uring (blockdev.Options.IOUring) here: loop devices cannot
	// take requests without blocking (no NOWAIT support), so io_uring
	// hands each one to a kernel worker thread. Measured, 1 GiB loop ->
	// loop with O_DIRECT: 0.8-1.0 CPU seconds with the ring, 0.6-0.7
	// without.
	opts := blockdev.Options{ReadOnly: !o.Write, Direct: o.Direct || auto, Exclusive: o.Write}
	bd, err := blockdev.Open(l.Spec, opts)
	if auto && errors.Is(err, blockdev.ErrDirectNotSupported) {
		opts.Direct, auto = false, false
		bd, err = blockdev.Open(l.Spec, opts)
	}
	if errors.Is(err, blockdev.ErrBusy) && o.Force {
		opts.Exclusive = false
		bd, err = blockdev.Open(l.Spec, opts)
		l.Forced = err == nil
	}
	if err != nil {
		return nil, err
	}
	l.AutoDirect = auto
	return bd, nil
}

// ReopenBuffered reopens a block device that Open opened with O_DIRECT
// because of Options.BlockDirect (AutoDirect) through the page cache, with
// the options it was opened with otherwise: for regions that O_DIRECT
// cannot serve (not aligned to the device's logical block size). It
// panics when l is not such a device.
func (l *Location) ReopenBuffered() error {
	if !l.AutoDirect || l.Dev == nil {
		panic("location: ReopenBuffered on a location not opened with BlockDirect")
	}
	if err := l.Dev.Close(); err != nil {
		return fmt.Errorf("%s: %w", l.Spec, err)
	}
	l.Dev = nil
	o := l.opened
	o.BlockDirect = false
	return l.Open(context.Background(), &o)
}

// openError explains a failed open.
func (l *Location) openError(err error, o *Options) error {
	if l.Kind == URL {
		if e := nbdOpenError(l.Spec, err, &o.Names); e != nil {
			return e
		}
	}
	switch {
	case errors.Is(err, blockdev.ErrBusy):
		return fmt.Errorf("%s is in use (mounted, part of a device-mapper/LVM/md stack, active swap, or opened exclusively by another process); refusing to write to it (%s overrides): %w", l.Spec, o.Names.Force, err)
	case o.Direct && (errors.Is(err, blockdev.ErrDirectNotSupported) || errors.Is(err, device.ErrNotSupported)):
		return fmt.Errorf("%s: %s refuses O_DIRECT (the file system or device does not support it; run without %s): %w", o.Names.Direct, l.Spec, o.Names.Direct, err)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist: %w", l.Spec, err)
	}
	return fmt.Errorf("%s cannot be opened: %w", l.Spec, err)
}

// Create creates the missing regular file l as a sparse file of size bytes
// and opens it for writing with o (Write is implied). Undo removes it
// again. It panics when l is not a missing file.
func (l *Location) Create(size int64, o *Options) error {
	if l.Kind != File || l.Exists {
		panic("location: Create on an existing location")
	}
	c := o.withDefaults()
	c.Write = true
	if _, err := os.Stat(filepath.Dir(l.Spec)); err != nil {
		return fmt.Errorf("cannot create %s: %w", l.Spec, err)
	}
	f, err := device.CreateFile(l.Spec, size, c.fileOptions())
	if err != nil {
		return l.openError(err, &c)
	}
	l.Dev, l.Created = f, true
	return nil
}

// Grow extends the existing regular file l to size bytes (the new part is
// a hole) and opens it for writing with o (Write is implied). Undo
// truncates it back. The file is opened first and checked to be the one
// Inspect saw, and extended through that descriptor, never by path
// (O_RDWR does not block on a FIFO). It panics unless l is an unopened
// existing file shorter than size.
func (l *Location) Grow(size int64, o *Options) error {
	if l.Kind != File || !l.Exists || l.Dev != nil || size <= l.Size {
		panic("location: Grow on a location that cannot grow")
	}
	c := o.withDefaults()
	c.Write = true
	f, err := os.OpenFile(l.Spec, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return l.openError(err, &c)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return l.openError(err, &c)
	}
	if id := device.FileIdentity(st.Dev, st.Ino); st.Mode&unix.S_IFMT != unix.S_IFREG || id != l.key {
		f.Close()
		return fmt.Errorf("%s changed while kcopyd was opening it (it was %s, it is now a %s %s); nothing was written: check who else is changing it and run again", l.Spec, l.key, device.FileKind(st.Mode), id)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("cannot extend %s to %d bytes: %w", l.Spec, size, err)
	}
	l.Grown, l.growFile = true, f
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return fmt.Errorf("cannot open %s: %w", l.Spec, err)
	}
	unix.CloseOnExec(fd)
	dev, err := device.NewFile(os.NewFile(uintptr(fd), l.Spec), c.fileOptions())
	if err != nil {
		return l.openError(err, &c)
	}
	l.Dev = dev
	return nil
}

// Undo closes l and reverts what Create or Grow did, for a caller that
// stops before its first write: a created file is removed, a grown one
// truncated back to Size through the descriptor that grew it (the very
// same file, whatever its path names by then).
func (l *Location) Undo() error {
	var err error
	if l.Grown {
		err = l.growFile.Truncate(l.Size)
		l.Grown = false
	}
	err = errors.Join(err, l.Close())
	if l.Created {
		err = errors.Join(err, os.Remove(l.Spec))
		l.Created = false
	}
	return err
}

// Close closes l's device, if open, and sets Dev to nil. It is safe to
// call on an unopened or closed Location.
func (l *Location) Close() error {
	var err error
	if l.growFile != nil {
		err = l.growFile.Close()
		l.growFile = nil
	}
	if l.Dev == nil {
		return err
	}
	err = errors.Join(err, l.Dev.Close())
	l.Dev = nil
	return err
}
