package location_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/blockdev"
	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
	"github.com/kcopyd/kcopyd/device/devicetest"
	"github.com/kcopyd/kcopyd/device/nbd"
	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
	"github.com/kcopyd/kcopyd/internal/testutil"
	"github.com/kcopyd/kcopyd/location"
)

// writeFile writes b to a new file name in dir and returns its path.
var writeFile = testutil.WriteFile

// snapshot returns the sizes and contents' hashes of paths, to compare
// before and after a refusal.
func snapshot(t testing.TB, paths ...string) string {
	t.Helper()
	var out []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			out = append(out, p+": "+err.Error())
			continue
		}
		out = append(out, fmt.Sprintf("%s: %d bytes %x", p, len(b), sha256.Sum256(b)))
	}
	return strings.Join(out, "; ")
}

// TestInspect classifies locations without opening them and refuses what
// kcopyd cannot use, naming the option that creates files as Names says.
func TestInspect(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "f", make([]byte, 12345))
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		spec   string
		kind   location.Kind
		exists bool
		size   int64
	}{
		{file, location.File, true, 12345},
		{filepath.Join(dir, "new"), location.File, false, 0},
		{"nbd+unix:///x?socket=/run/s", location.URL, true, 0},
		{"NBDS://host/e", location.URL, true, 0},
	} {
		l, err := location.Inspect(tt.spec, nil)
		if err != nil || l.Kind != tt.kind || l.Exists != tt.exists || l.Size != tt.size || l.Dev != nil {
			t.Errorf("Inspect(%q) = %+v, %v; want kind %v, exists %v, size %d", tt.spec, l, err, tt.kind, tt.exists, tt.size)
		}
	}
	for _, tt := range []struct {
		spec, names, want string
	}{
		{"", "", "empty location"},
		{dir, "", dir + " is a directory; name a file in it (with Location.Create to make a new one)"},
		{dir, "--create", dir + " is a directory; name a file in it (with --create to make a new one)"},
		{fifo, "", fifo + " is a FIFO, which kcopyd cannot use"},
		{"/dev/null", "", "/dev/null is a character device, which kcopyd cannot use"},
		{dangling, "", dangling + " is a symbolic link to " + filepath.Join(dir, "nowhere") + ", which does not exist"},
	} {
		_, err := location.Inspect(tt.spec, &location.Options{Names: location.Names{Create: tt.names}})
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("Inspect(%q) = %v; want an error starting %q", tt.spec, err, tt.want)
		}
	}
}

// TestOpenFile opens an existing file read-only and for writing, and
// refuses a missing one.
func TestOpenFile(t *testing.T) {
	dir := t.TempDir()
	data := devicetest.Pattern(1, 0, 1<<16)
	path := writeFile(t, dir, "f", data)
	l, err := location.Open(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Dev.WriteAt([]byte{1}, 0); !errors.Is(err, device.ErrReadOnly) {
		t.Errorf("WriteAt on a location opened without Write = %v; want ErrReadOnly", err)
	}
	if l.Size != 1<<16 || l.Identity() != l.Key() || !strings.HasPrefix(l.Key(), "file:") {
		t.Errorf("Size %d, Identity %q, Key %q; want 65536 and one file: key", l.Size, l.Identity(), l.Key())
	}
	if err := l.Close(); err != nil || l.Dev != nil {
		t.Errorf("Close = %v, Dev %v; want nil, nil", err, l.Dev)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close = %v; want nil", err)
	}
	w, err := location.Open(t.Context(), path, &location.Options{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Dev.WriteAt([]byte{7}, 100); err != nil {
		t.Errorf("WriteAt = %v", err)
	}
	w.Close()
	if b, _ := os.ReadFile(path); b[100] != 7 {
		t.Errorf("byte 100 = %d after the write; want 7", b[100])
	}
	missing := filepath.Join(dir, "missing")
	if _, err := location.Open(t.Context(), missing, nil); err == nil || err.Error() != missing+" does not exist" {
		t.Errorf("Open(missing) = %v; want %q", err, missing+" does not exist")
	}
}

// TestCreateGrowUndo creates a file and grows another, then undoes both:
// the created file is gone, the grown one has its old size and contents.
func TestCreateGrowUndo(t *testing.T) {
	dir := t.TempDir()
	newPath := filepath.Join(dir, "new")
	n, err := location.Inspect(newPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Create(1<<20, nil); err != nil {
		t.Fatal(err)
	}
	if !n.Created || n.Dev.Size() != 1<<20 {
		t.Errorf("after Create: Created %v, size %d; want true, 1 MiB", n.Created, n.Dev.Size())
	}
	if _, err := n.Dev.WriteAt([]byte{1}, 4096); err != nil {
		t.Errorf("WriteAt on the created file = %v", err)
	}
	if err := n.Undo(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(newPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat after Undo of Create = %v; want ErrNotExist", err)
	}

	old := writeFile(t, dir, "old", devicetest.Pattern(2, 0, 8192))
	before := snapshot(t, old)
	g, err := location.Inspect(old, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Grow(1<<20, nil); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(old); !g.Grown || st.Size() != 1<<20 || g.Dev.Size() != 1<<20 {
		t.Errorf("after Grow: Grown %v, file %d bytes, device %d; want true, 1 MiB", g.Grown, st.Size(), g.Dev.Size())
	}
	if err := g.Undo(); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, old); after != before {
		t.Errorf("after Undo of Grow: %s; want %s", after, before)
	}
}

// TestAliasIdentity opens a file by four names and as a loop device over
// it: every name has the file's identity, and the loop device lies in the
// file (its placement) at its offset.
func TestAliasIdentity(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "f", make([]byte, 1<<20))
	link := filepath.Join(dir, "link")
	hard := filepath.Join(dir, "hard")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(path, hard); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	proc := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	want := ""
	for _, spec := range []string{path, link, hard, proc} {
		l, err := location.Open(t.Context(), spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		store, base := l.Placement()
		if want == "" {
			want = l.Identity()
		}
		if l.Identity() != want || store != want || base != 0 {
			t.Errorf("%s: Identity %q, Placement %q, %d; want %q at 0", spec, l.Identity(), store, base, want)
		}
		l.Close()
	}
	if err := looptest.Available(); err != nil {
		t.Skipf("loop devices: %v", err)
	}
	loop := looptest.Attach(t, path, looptest.Offset(8192))
	l, err := location.Open(t.Context(), loop, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Kind != location.Block || !strings.HasPrefix(l.Key(), "blk:") {
		t.Errorf("%s: Kind %v, Key %q; want a block device", loop, l.Kind, l.Key())
	}
	if store, base := l.Placement(); store != want || base != 8192 {
		t.Errorf("loop device over the file at 8192: Placement %q, %d; want %q, 8192", store, base, want)
	}
}

// TestBlockBusy opens a loop device for writing while another descriptor
// holds it exclusively: refused with ErrBusy naming Force as Names says,
// and opened without the claim with Force.
func TestBlockBusy(t *testing.T) {
	if err := looptest.Available(); err != nil {
		t.Skipf("loop devices: %v", err)
	}
	dev := looptest.New(t, 4<<20)
	holder, err := blockdev.Open(dev, blockdev.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	_, err = location.Open(t.Context(), dev, &location.Options{Write: true, Names: location.Names{Force: "--force"}})
	if !errors.Is(err, blockdev.ErrBusy) || !strings.Contains(err.Error(), dev+" is in use") || !strings.Contains(err.Error(), "(--force overrides)") {
		t.Errorf("Open(%s) for writing while held = %v; want ErrBusy naming --force", dev, err)
	}
	l, err := location.Open(t.Context(), dev, &location.Options{Write: true, Force: true})
	if err != nil {
		t.Fatalf("Open with Force = %v", err)
	}
	defer l.Close()
	if !l.Forced {
		t.Error("Forced = false after an open that needed Force")
	}
	r, err := location.Open(t.Context(), dev, nil)
	if err != nil || r.Forced {
		t.Errorf("read-only Open while held = %v, Forced %v; want nil, false (no claim)", err, r != nil && r.Forced)
	}
	if r != nil {
		r.Close()
	}
}

// TestOpenNBD opens nbdkit exports: a writable one with its notes, a
// read-only one refused for writing, and refusals for a socket nobody
// listens on, an unknown export, an unknown scheme and a server that
// never answers.
func TestOpenNBD(t *testing.T) {
	srv := nbdtest.Nbdkit(t, "memory", "1M")
	l, err := location.Open(t.Context(), srv.URI, &location.Options{Write: true, NBD: &nbd.Config{Connections: 4}})
	if err != nil {
		t.Fatal(err)
	}
	if l.Kind != location.URL || l.Size != 1<<20 || l.Key() != "" || l.Identity() == "" {
		t.Errorf("Open(%s): Kind %v, Size %d, Key %q, Identity %q", srv.URI, l.Kind, l.Size, l.Key(), l.Identity())
	}
	if _, err := l.Dev.WriteAt([]byte("kcopyd"), 512); err != nil {
		t.Errorf("WriteAt = %v", err)
	}
	l.Close()

	ro := nbdtest.Nbdkit(t, "-r", "memory", "1M")
	_, err = location.Open(t.Context(), ro.URI, &location.Options{Write: true})
	if !errors.Is(err, location.ErrReadOnlyExport) || err.Error() != ro.URI+" is a read-only NBD export (the server refuses writes; nothing was written)" {
		t.Errorf("Open(read-only export) for writing = %v; want ErrReadOnlyExport", err)
	}
	if l, err := location.Open(t.Context(), ro.URI, nil); err != nil {
		t.Errorf("Open(read-only export) for reading = %v", err)
	} else {
		l.Close()
	}

	nowhere := "nbd+unix:///?socket=" + filepath.Join(t.TempDir(), "none")
	if _, err := location.Open(t.Context(), nowhere, nil); err == nil || !strings.Contains(err.Error(), "no server listens there") {
		t.Errorf("Open(%s) = %v; want no server listens there", nowhere, err)
	}
	q := nbdtest.QemuNBD(t, writeFile(t, t.TempDir(), "img", make([]byte, 1<<20)), "disk")
	if _, err := location.Open(t.Context(), q.ExportURI("nope"), nil); !errors.Is(err, nbd.ErrUnknownExport) || !strings.Contains(err.Error(), `the server has no export named "nope"`) {
		t.Errorf("Open(unknown export) = %v; want ErrUnknownExport naming it", err)
	}
	if _, err := location.Open(t.Context(), "http://host/x", nil); !errors.Is(err, location.ErrUnknownScheme) || err.Error() != `http://host/x cannot be opened: unknown URL scheme "http" (kcopyd knows nbd://, nbd+unix://, nbds://, nbds+unix://)` {
		t.Errorf("Open(http://) = %v; want ErrUnknownScheme", err)
	}

	// A Unix socket that accepts but never answers the handshake.
	sock := filepath.Join(nbdtest.ShortDir(t), "mute")
	ln, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	mute := "nbd+unix:///?socket=" + sock
	_, err = location.Open(t.Context(), mute, &location.Options{ConnectTimeout: 200 * time.Millisecond, Names: location.Names{ConnectTimeout: "--nbd-connect-timeout"}})
	if !errors.Is(err, location.ErrConnectTimeout) || !strings.Contains(err.Error(), "cannot be opened: no answer within --nbd-connect-timeout (200ms)") {
		t.Errorf("Open(mute server) = %v; want ErrConnectTimeout", err)
	}
}

// listenUnix listens on sock and never answers: connections are accepted
// by the kernel's backlog and left alone.
func listenUnix(sock string) (net.Listener, error) { return net.Listen("unix", sock) }

// TestLocationSwapped swaps a symbolic link between the check
// (Inspect) and the open: the open must notice from the opened
// descriptor and refuse, and grow must not extend, nor undo truncate, the
// file the link points to now.
func TestLocationSwapped(t *testing.T) {
	dir := t.TempDir()
	a := writeFile(t, dir, "a", devicetest.Pattern(31, 0, 8192))
	b := writeFile(t, dir, "b", devicetest.Pattern(32, 0, 4096))
	link := filepath.Join(dir, "link")
	// inspectSwapped inspects link while it points to a, then points it
	// to b.
	inspectSwapped := func() *location.Location {
		t.Helper()
		os.Remove(link)
		if err := os.Symlink(a, link); err != nil {
			t.Fatal(err)
		}
		l, err := location.Inspect(link, nil)
		if err != nil {
			t.Fatal(err)
		}
		tmp := link + ".new"
		if err := os.Symlink(b, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, link); err != nil {
			t.Fatal(err)
		}
		return l
	}
	for _, write := range []bool{false, true} {
		l := inspectSwapped()
		err := l.Open(t.Context(), &location.Options{Write: write})
		l.Close()
		if err == nil || !strings.Contains(err.Error(), "changed while kcopyd was opening it") {
			t.Errorf("open(write %v) after the link was swapped = %v; want a refusal", write, err)
		}
	}
	l := inspectSwapped()
	before := snapshot(t, a, b)
	err := l.Grow(1<<20, nil)
	if uerr := l.Undo(); uerr != nil {
		t.Errorf("undo = %v", uerr)
	}
	if err == nil || !strings.Contains(err.Error(), "changed while kcopyd was opening it") {
		t.Errorf("grow after the link was swapped = %v; want a refusal", err)
	}
	if after := snapshot(t, a, b); after != before {
		t.Errorf("files changed: %s; want %s", after, before)
	}
}

// TestBlockDirect opens a loop device with Options.BlockDirect: O_DIRECT
// (the device's sector alignment applies, AutoDirect is set), and
// ReopenBuffered turns it into a page-cache device of the same storage.
// Without BlockDirect, or with Direct, AutoDirect stays false.
func TestBlockDirect(t *testing.T) {
	if err := looptest.Available(); err != nil {
		t.Skipf("loop devices: %v", err)
	}
	dev := looptest.New(t, 4<<20, looptest.SectorSize(4096))
	l, err := location.Open(t.Context(), dev, &location.Options{Write: true, BlockDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !l.AutoDirect || device.LimitsOf(l.Dev).OffsetAlign != 4096 {
		t.Fatalf("BlockDirect open: AutoDirect %v, OffsetAlign %d; want true, 4096", l.AutoDirect, device.LimitsOf(l.Dev).OffsetAlign)
	}
	id := device.IdentityOf(l.Dev)
	if err := l.ReopenBuffered(); err != nil {
		t.Fatal(err)
	}
	if l.AutoDirect || device.LimitsOf(l.Dev).OffsetAlign > 1 || device.IdentityOf(l.Dev) != id {
		t.Fatalf("after ReopenBuffered: AutoDirect %v, OffsetAlign %d, identity %s (was %s); want false, 1, the same", l.AutoDirect, device.LimitsOf(l.Dev).OffsetAlign, device.IdentityOf(l.Dev), id)
	}
	// Unaligned I/O works through the page cache now.
	if _, err := l.Dev.WriteAt([]byte("x"), 513); err != nil {
		t.Fatalf("unaligned write after ReopenBuffered: %v", err)
	}
	for _, o := range []*location.Options{{}, {Direct: true, BlockDirect: true}} {
		m, err := location.Open(t.Context(), dev, o)
		if err != nil {
			t.Fatal(err)
		}
		if m.AutoDirect {
			t.Errorf("Open with %+v: AutoDirect set", *o)
		}
		m.Close()
	}
}
