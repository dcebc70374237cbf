package main

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

// locKind is what a location names.
type locKind int

const (
	locFile  locKind = iota // a regular file, existing or to be created
	locBlock                // a block device
	locURL                  // a URL such as nbd://host/export
)

// A location is one SOURCE or DEST argument. inspectLocation fills in what
// stat tells without opening anything; open, create and grow then make dev.
type location struct {
	spec   string // as given on the command line
	kind   locKind
	exists bool  // false: a regular file still to be created (--create)
	size   int64 // size in bytes; for a file to be created or grown, its size before the run
	// key identifies the storage before it is opened, in the format of
	// device identities: "file:DEV:INO" (device.FileIdentity),
	// "blk:MAJ:MIN", or "new:DEV:INO/NAME" (the parent directory and name)
	// for a file to be created. Empty for URLs, whose identity is only
	// known from the opened device. Once opened, the device's identity
	// must still be key (checkOpened).
	key string
	// growFile is a second descriptor of a file this run extended, kept to
	// truncate that very file back in undo, whatever its path names by
	// then.
	growFile *os.File

	dev     device.Device
	created bool // this run created the file
	grown   bool // this run extended the file from size to dev.Size()
	forced  bool // a block device opened without its exclusive claim because of --force
	// autoDirect is true for a block device opened with O_DIRECT by
	// default (not --direct): checkAlignment reopens it buffered when a
	// region is not aligned for O_DIRECT, instead of refusing the region.
	autoDirect bool
	mode       openMode // how dev was opened
	// notes are remarks of the NBD client made while opening (fewer
	// connections than asked for), to be shown as warnings.
	notes []string
}

// urlRE matches the scheme of a URL location.
var urlRE = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*)://`)

// inspectLocation classifies spec without opening it. A path that does not
// exist is returned with exists false (kind locFile); callers decide
// whether that is an error.
func inspectLocation(spec string) (*location, error) {
	if spec == "" {
		return nil, errors.New("empty location")
	}
	if urlRE.MatchString(spec) {
		return &location{spec: spec, kind: locURL, exists: true}, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(spec, &st); err != nil {
		if !errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%s: %w", spec, err)
		}
		if target, err := os.Readlink(spec); err == nil {
			return nil, fmt.Errorf("%s is a symbolic link to %s, which does not exist", spec, target)
		}
		l := &location{spec: spec, kind: locFile}
		var pst unix.Stat_t
		if err := unix.Stat(filepath.Dir(spec), &pst); err == nil {
			l.key = fmt.Sprintf("new:%d:%d/%s", pst.Dev, pst.Ino, filepath.Base(spec))
		} else {
			l.key = "new:" + spec
		}
		return l, nil
	}
	l := &location{spec: spec, exists: true}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		l.kind = locFile
		l.size = st.Size
		l.key = device.FileIdentity(st.Dev, st.Ino)
	case unix.S_IFBLK:
		l.kind = locBlock
		l.key = blockKey(st.Rdev)
	case unix.S_IFDIR:
		return nil, fmt.Errorf("%s is a directory; name a file in it (with --create to make a new one), a block device, or an nbd:// export", spec)
	case unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFCHR:
		return nil, fmt.Errorf("%s is a %s, which kcopyd cannot use: it reads and writes at offsets, so it needs a regular file, a block device or an nbd:// export (for a stream, use dd or cat)", spec, device.FileKind(st.Mode))
	default:
		return nil, fmt.Errorf("%s is a %s, not a regular file, a block device or an nbd:// export", spec, device.FileKind(st.Mode))
	}
	return l, nil
}

// blockKey is the identity of the block device with device number rdev,
// as blockdev.Device.Identity spells it.
func blockKey(rdev uint64) string {
	return fmt.Sprintf("blk:%d:%d", unix.Major(rdev), unix.Minor(rdev))
}

// checkOpened refuses a device that is not the storage inspectLocation
// examined: the path was replaced (a symbolic link swapped, a file renamed
// over it) between the check and the open. Identity comes from the opened
// descriptor, so the checks made on key hold for what is written.
func (l *location) checkOpened() error {
	if l.key == "" || strings.HasPrefix(l.key, "new:") {
		return nil
	}
	if id := device.IdentityOf(l.dev); id != l.key {
		return fmt.Errorf("%s changed while kcopyd was opening it (it was %s, it is now %s); nothing was written: check who else is changing it and run again", l.spec, l.key, id)
	}
	return nil
}

// placement returns the store l lies in and its byte offset there: the
// opened device's device.PlacementOf (a loop device lies in its backing
// file, a partition in its disk), else the stat key at 0.
func (l *location) placement() (store string, base int64) {
	if l.dev != nil {
		return device.PlacementOf(l.dev)
	}
	return l.identity(), 0
}

// openMode says how to open a location.
type openMode struct {
	write  bool
	direct bool // O_DIRECT; never falls back to buffered I/O
	// buffered (--buffered) opens block devices through the page cache;
	// without it, and without direct, they are opened with O_DIRECT
	// when they allow it (see blockDirect).
	buffered bool
	force    bool // write to a block device even when it is in use
	// keepAllocation zeroes files in place rather than punching holes
	// (kcopyd zero: a wipe keeps the file's allocation, as
	// fallocate --zero-range does, and frees nothing to discard).
	keepAllocation bool
	// nbd configures the NBD client for URL locations; nil means the
	// flags' defaults.
	nbd *nbdOptions
}

// writeBehind is device.FileOptions.WriteBehind for files opened for
// writing: how far behind the newest write the page cache is written back
// and dropped. Measured on 1 GiB NBD -> new file (docs/PERFORMANCE.md,
// "NBD to file"): the final fdatasync fell from 0.84 s to 0.08-0.18 s, and
// 4 MiB beat 0, 16 and 64 MiB in each of 3 interleaved rounds; 1 GiB to 4
// new files took a third of the time it took without write-behind.
const writeBehind = 4 << 20

// fileOptions returns the options that open a regular file in mode m.
func (m openMode) fileOptions() device.FileOptions {
	// IOUring applies under --direct. Measured, 1 GiB file -> file with
	// --direct on ext4: 0.45-0.51 CPU seconds with the ring against
	// 0.71-0.85 without (new destination), 0.32 against 0.43 (existing
	// one); dd took 0.26-0.36.
	o := device.FileOptions{ReadOnly: !m.write, Direct: m.direct, KeepAllocation: m.keepAllocation, IOUring: true}
	if m.write {
		o.WriteBehind = writeBehind
	}
	return o
}

// open opens an existing location. Block devices opened for writing take
// the kernel's exclusive claim; when that fails because the device is
// mounted or used otherwise, open fails unless m.force is set.
func (l *location) open(ctx context.Context, m openMode) error {
	var (
		dev device.Device
		err error
	)
	switch l.kind {
	case locURL:
		dev, l.notes, err = openURL(ctx, l.spec, m)
	case locBlock:
		dev, err = l.openBlock(m)
	case locFile:
		if !l.exists {
			return fmt.Errorf("%s does not exist", l.spec)
		}
		var f *device.File
		f, err = device.OpenFile(l.spec, m.fileOptions())
		if err == nil {
			dev = f
		}
	}
	if err != nil {
		return l.openError(err, m)
	}
	l.dev, l.mode = dev, m
	if err := l.checkOpened(); err != nil {
		return err
	}
	l.size = dev.Size()
	return nil
}

// blockDirect says whether block devices are opened with O_DIRECT when neither --direct nor --buffered is given. Measured on
// loop devices over files on this project's test machine (bench/run.sh,
// docs/PERFORMANCE.md, 1 GiB loop -> loop): through the page cache 4.3 s
// and 5.6 CPU seconds, with O_DIRECT 2.0 s and 0.4 CPU seconds, and a
// copy tool has no use for the cache it would fill (and evict the
// user's data from). Files stay buffered by default: the page cache and
// copy_file_range beat O_DIRECT there.
const blockDirect = true

// openBlock opens the block device l in mode m: with O_DIRECT under
// --direct or by default (blockDirect; a device refusing it is then
// opened buffered), with the exclusive claim when writing, without it
// under --force when the device is in use.
func (l *location) openBlock(m openMode) (device.Device, error) {
	auto := !m.direct && !m.buffered && blockDirect
	// No io_uring (blockdev.Options.IOUring) here: loop devices cannot
	// take requests without blocking (no NOWAIT support), so io_uring
	// hands each one to a kernel worker thread. Measured, 1 GiB loop ->
	// loop with O_DIRECT: 0.8-1.0 CPU seconds with the ring, 0.6-0.7
	// without.
	opts := blockdev.Options{ReadOnly: !m.write, Direct: m.direct || auto, Exclusive: m.write}
	bd, err := blockdev.Open(l.spec, opts)
	if auto && errors.Is(err, blockdev.ErrDirectNotSupported) {
		opts.Direct, auto = false, false
		bd, err = blockdev.Open(l.spec, opts)
	}
	if errors.Is(err, blockdev.ErrBusy) && m.force {
		opts.Exclusive = false
		bd, err = blockdev.Open(l.spec, opts)
		l.forced = err == nil
	}
	if err != nil {
		return nil, err
	}
	l.autoDirect = auto
	return bd, nil
}

// reopenBuffered reopens a block device that was opened with O_DIRECT by
// default through the page cache, for regions O_DIRECT cannot serve.
func (l *location) reopenBuffered() error {
	if err := l.dev.Close(); err != nil {
		return fmt.Errorf("%s: %w", l.spec, err)
	}
	l.dev = nil
	m := l.mode
	m.buffered = true
	if err := l.open(context.Background(), m); err != nil {
		return err
	}
	l.autoDirect = false
	return nil
}

// openError explains a failed open.
func (l *location) openError(err error, m openMode) error {
	if l.kind == locURL {
		if e := nbdOpenError(l.spec, err); e != nil {
			return e
		}
	}
	switch {
	case errors.Is(err, blockdev.ErrBusy):
		return fmt.Errorf("%s is in use (mounted, part of a device-mapper/LVM/md stack, active swap, or opened exclusively by another process); refusing to write to it (--force overrides): %w", l.spec, err)
	case m.direct && (errors.Is(err, blockdev.ErrDirectNotSupported) || errors.Is(err, device.ErrNotSupported)):
		return fmt.Errorf("--direct: %s refuses O_DIRECT (the file system or device does not support it; run without --direct): %w", l.spec, err)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist: %w", l.spec, err)
	}
	return fmt.Errorf("%s cannot be opened: %w", l.spec, err)
}

// create creates the missing regular file l as a sparse file of size
// bytes and opens it for writing. The file is removed again by undo.
func (l *location) create(size int64, m openMode) error {
	if l.kind != locFile || l.exists {
		panic("kcopyd: create on an existing location")
	}
	if _, err := os.Stat(filepath.Dir(l.spec)); err != nil {
		return fmt.Errorf("cannot create %s: %w", l.spec, err)
	}
	f, err := device.CreateFile(l.spec, size, m.fileOptions())
	if err != nil {
		return l.openError(err, m)
	}
	l.dev, l.created = f, true
	return nil
}

// grow extends the existing regular file l to size bytes (the new part is
// a hole) and opens it for writing. undo truncates it back. The file is
// opened first and checked to be the one inspected, and extended through
// that descriptor, never by path (O_RDWR does not block on a FIFO).
func (l *location) grow(size int64, m openMode) error {
	if l.kind != locFile || !l.exists || l.dev != nil || size <= l.size {
		panic("kcopyd: grow on a location that cannot grow")
	}
	f, err := os.OpenFile(l.spec, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return l.openError(err, m)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return l.openError(err, m)
	}
	if id := device.FileIdentity(st.Dev, st.Ino); st.Mode&unix.S_IFMT != unix.S_IFREG || id != l.key {
		f.Close()
		return fmt.Errorf("%s changed while kcopyd was opening it (it was %s, it is now a %s %s); nothing was written: check who else is changing it and run again", l.spec, l.key, device.FileKind(st.Mode), id)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("cannot extend %s to %d bytes: %w", l.spec, size, err)
	}
	l.grown, l.growFile = true, f
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return fmt.Errorf("cannot open %s: %w", l.spec, err)
	}
	unix.CloseOnExec(fd)
	dev, err := device.NewFile(os.NewFile(uintptr(fd), l.spec), m.fileOptions())
	if err != nil {
		return l.openError(err, m)
	}
	l.dev = dev
	return nil
}

// undo closes l and reverts what create or grow did, for a run that stops
// before its first write.
func (l *location) undo() error {
	var err error
	if l.grown {
		// Through the descriptor that grew it: the very same file.
		err = l.growFile.Truncate(l.size)
		l.grown = false
	}
	err = errors.Join(err, l.close())
	if l.created {
		err = errors.Join(err, os.Remove(l.spec))
		l.created = false
	}
	return err
}

// close closes l's device, if open.
func (l *location) close() error {
	var err error
	if l.growFile != nil {
		err = l.growFile.Close()
		l.growFile = nil
	}
	if l.dev == nil {
		return err
	}
	err = errors.Join(err, l.dev.Close())
	l.dev = nil
	return err
}

// identity returns the key that tells whether two locations are the same
// storage: the stat key when there is one, else device.IdentityOf of the
// opened device.
func (l *location) identity() string {
	if l.key != "" {
		return l.key
	}
	if l.dev != nil {
		return device.IdentityOf(l.dev)
	}
	return "spec:" + l.spec
}

// openURL opens a URL location and returns the remarks the client made
// while opening it. This is the one place that knows URL schemes. A URL
// opened for writing that names a read-only export fails with
// errReadOnlyExport.
func openURL(ctx context.Context, spec string, m openMode) (device.Device, []string, error) {
	scheme := strings.ToLower(urlRE.FindStringSubmatch(spec)[1])
	switch scheme {
	case "nbd", "nbd+unix", "nbds", "nbds+unix":
		// --direct does not apply: the client has no page cache.
		d, err := openNBD(ctx, spec, m.nbd, m.write)
		if err != nil {
			return nil, nil, err
		}
		// The client's notes say it opened fewer connections than
		// asked for. That is news only when the user asked.
		if m.nbd == nil || !m.nbd.connectionsSet {
			return d, nil, nil
		}
		return d, d.Notes(), nil
	}
	return nil, nil, fmt.Errorf("unknown URL scheme %q (kcopyd knows nbd://, nbd+unix://, nbds://, nbds+unix://)", scheme)
}
