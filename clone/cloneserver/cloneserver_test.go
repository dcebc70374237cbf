package cloneserver_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/clone"
	"github.com/kcopyd/kcopyd/clone/cloneserver"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
	"github.com/kcopyd/kcopyd/device/nbd"
	"github.com/kcopyd/kcopyd/device/nbd/nbdserver"
	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }

const size = 1 << 20

// listen listens on a fresh Unix socket and returns the listener and the
// export's URL.
func listen(t *testing.T) (*serving, string) {
	t.Helper()
	sock := filepath.Join(nbdtest.ShortDir(t), "s")
	l, err := nbdserver.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	return &serving{l: l}, "nbd+unix:///?socket=" + url.QueryEscape(sock)
}

// serving runs Serve on a goroutine.
type serving struct {
	l    net.Listener
	done chan error
}

func (sv *serving) start(ctx context.Context, s *cloneserver.Server) {
	sv.done = make(chan error, 1)
	go func() { sv.done <- s.Serve(ctx, sv.l) }()
}

// gate holds every operation it is asked about until it is opened.
type gate chan struct{}

func (g gate) Inject(faultdev.Op) faultdev.Fault {
	<-g
	return faultdev.Fault{}
}

// gatedSource serves data over NBD from a memory device whose reads wait
// until open is called, so that a clone of it cannot hydrate anything
// before the test says go. It returns the export's URL.
func gatedSource(t *testing.T, data []byte) (uri string, open func()) {
	t.Helper()
	mem := device.NewMem(int64(len(data)))
	if _, err := mem.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	g := make(gate)
	var once sync.Once
	open = func() { once.Do(func() { close(g) }) }
	srv, err := nbdserver.New(faultdev.Wrap(mem, faultdev.Reads(g)), &nbdserver.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(nbdtest.ShortDir(t), "src")
	l, err := nbdserver.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, l, time.Second) }()
	t.Cleanup(func() {
		open() // no read may stay blocked
		stop()
		if err := <-done; err != nil {
			t.Errorf("the gated source's server: %v", err)
		}
	})
	return "nbd+unix:///?socket=" + url.QueryEscape(sock), open
}

// TestServeUntilHydrated clones a file into a new one while our NBD
// client writes through the export: Serve returns once every region is
// hydrated and the client has gone, not before, and DEST holds SOURCE
// with the writes.
func TestServeUntilHydrated(t *testing.T) {
	dir := t.TempDir()
	data := testutil.Pattern(1, 0, size)
	// SOURCE holds every read until the client is connected: else the
	// clone could hydrate and Serve return before the client connects.
	src, open := gatedSource(t, data)
	cfg := &cloneserver.Config{
		Source: src, Dest: filepath.Join(dir, "dst.img"),
		CreateDest: true, Metadata: filepath.Join(dir, "meta"), UntilHydrated: true,
		Clone: clone.Options{RegionSize: 64 << 10},
	}
	s, err := cloneserver.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	sv, uri := listen(t)
	sv.start(context.Background(), s)
	c, err := nbd.Open(context.Background(), uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := s.Clone.Status(); st.Done || st.HydratedRegions != 0 {
		t.Fatalf("hydrated %+v before SOURCE could be read", st)
	}
	open()
	if _, err := c.WriteAt([]byte("written by a client"), 100000); err != nil {
		t.Fatal(err)
	}
	copy(data[100000:], "written by a client")
	got := make([]byte, size)
	if _, err := c.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the export reads differently from SOURCE with the write (%v)", err)
	}
	<-s.Clone.Hydrated()
	select {
	case err := <-sv.done:
		t.Fatalf("Serve returned %v while a client was connected", err)
	default:
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-sv.done; err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !s.Clone.Status().Done {
		t.Error("Status().Done = false after hydration")
	}
	if got := readFile(t, cfg.Dest); !bytes.Equal(got, data) {
		t.Fatalf("DEST differs from SOURCE with the write at byte %d", device.FirstDiff(got, data))
	}
}

// TestServeStopsAndResumes: a throttled clone stopped by its context
// returns from Serve with regions left; the same Config then resumes and
// finishes, with an nbdkit export as SOURCE.
func TestServeStopsAndResumes(t *testing.T) {
	dir := nbdtest.ShortDir(t)
	data := testutil.Pattern(2, 0, size)
	srv := nbdtest.Nbdkit(t, "file", testutil.WriteFile(t, dir, "src.img", data))
	th := kcopyd.NewThrottle(100)
	th.SetRate(64 << 10) // about one region a second
	cfg := &cloneserver.Config{
		Source: srv.URI, Dest: testutil.WriteFile(t, dir, "dst.img", make([]byte, size)),
		Metadata: filepath.Join(dir, "meta"), Clone: clone.Options{RegionSize: 64 << 10, BatchSize: 1, Throttle: th},
	}
	calls := make(chan clone.Status, 64)
	cfg.Progress = func(st clone.Status) {
		select {
		case calls <- st:
		default:
		}
	}
	cfg.ProgressInterval = time.Millisecond
	s, err := cloneserver.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sv, _ := listen(t)
	sv.start(ctx, s)
	select {
	case st := <-calls:
		if st.Size != size || st.Done {
			t.Errorf("Progress got %+v", st)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Progress was not called")
	}
	cancel()
	if err := <-sv.done; err != nil {
		t.Fatalf("Serve = %v", err)
	}
	n := len(calls)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st := s.Clone.Status(); st.Done {
		t.Fatalf("a clone at 64 KiB/s was done at once: %+v", st)
	}
	if len(calls) != n {
		t.Error("Progress was called after Serve returned")
	}
	cfg.Clone.Throttle, cfg.UntilHydrated, cfg.Progress = nil, true, nil
	s, err = cloneserver.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("resuming: %v", err)
	}
	sv, _ = listen(t)
	sv.start(context.Background(), s)
	if err := <-sv.done; err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, cfg.Dest); !bytes.Equal(got, data) {
		t.Fatalf("DEST differs from SOURCE at byte %d", device.FirstDiff(got, data))
	}
}

// TestOpenRefuses: bad input fails Open with an error wrapping the
// sentinel, naming the option as Names says, and leaves every file as it
// was: no DEST or metadata created.
func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	src := testutil.WriteFile(t, dir, "src.img", testutil.Pattern(3, 0, size))
	other := testutil.WriteFile(t, dir, "other.img", testutil.Pattern(4, 0, size))
	small := testutil.WriteFile(t, dir, "small.img", testutil.Pattern(5, 0, size/2))
	dst := testutil.WriteFile(t, dir, "dst.img", testutil.Pattern(6, 0, size))
	meta := filepath.Join(dir, "meta")
	done := &cloneserver.Config{Source: src, Dest: dst, Metadata: meta, UntilHydrated: true}
	s, err := cloneserver.Open(context.Background(), done)
	if err != nil {
		t.Fatal(err)
	}
	sv, _ := listen(t)
	sv.start(context.Background(), s)
	if err := errors.Join(<-sv.done, s.Close()); err != nil {
		t.Fatal(err)
	}
	junk := testutil.WriteFile(t, dir, "junk", testutil.Pattern(7, 0, 64<<10))
	paths := []string{src, other, small, dst, meta, junk}
	before := contents(t, paths)
	newDst, newMeta := filepath.Join(dir, "new.img"), filepath.Join(dir, "new.meta")
	names := cloneserver.Names{CreateDest: "--create", Metadata: "--metadata"}
	for _, tt := range []struct {
		name     string
		cfg      cloneserver.Config
		sentinel error  // nil: see msg
		msg      string // in the message
	}{
		{"DEST missing", cloneserver.Config{Source: src, Dest: newDst, Metadata: newMeta}, nil, "does not exist (--create makes it)"},
		{"DEST smaller", cloneserver.Config{Source: src, Dest: small, Metadata: newMeta}, clone.ErrDestTooSmall, "smaller"},
		{"DEST is SOURCE", cloneserver.Config{Source: src, Dest: src, Metadata: newMeta}, clone.ErrSameDevice, "overlap"},
		{"metadata is DEST", cloneserver.Config{Source: src, Dest: dst, Metadata: dst}, clone.ErrSameDevice, "overlap"},
		{"metadata of another SOURCE", cloneserver.Config{Source: other, Dest: dst, Metadata: meta}, clone.ErrMetadataMismatch, "another clone"},
		{"not metadata", cloneserver.Config{Source: src, Dest: dst, Metadata: junk}, clone.ErrNotMetadata, "not clone metadata"},
		{"bad region size", cloneserver.Config{Source: src, Dest: newDst, CreateDest: true, Metadata: newMeta, Clone: clone.Options{RegionSize: 12 << 10}}, clone.ErrRegionSize, "--metadata: "},
		{"URL DEST", cloneserver.Config{Source: src, Dest: "nbd://localhost/x", Metadata: newMeta}, nil, "DEST must be a file or block device"},
		{"SOURCE missing", cloneserver.Config{Source: filepath.Join(dir, "missing"), Dest: dst, Metadata: newMeta}, nil, "missing does not exist"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Names = names
			s, err := cloneserver.Open(context.Background(), &cfg)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if (tt.sentinel != nil && !errors.Is(err, tt.sentinel)) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Open = %v; want an error wrapping %v, saying %q", err, tt.sentinel, tt.msg)
			}
			for _, p := range []string{newDst, newMeta} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was left behind", p)
				}
			}
			if after := contents(t, paths); !equalContents(before, after) {
				t.Error("a refused Open changed a file")
			}
		})
	}
}

func contents(t *testing.T, paths []string) [][]byte {
	out := make([][]byte, len(paths))
	for i, p := range paths {
		out[i] = readFile(t, p)
	}
	return out
}

func equalContents(a, b [][]byte) bool {
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
