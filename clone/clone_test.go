package clone_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/clone"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/devicetest"
	"github.com/kcopyd/kcopyd/device/faultdev"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

func TestMain(m *testing.M) {
	if helperMain() {
		return
	}
	testutil.VerifyTestMain(m)
}

// setup is a SOURCE of random data, a DEST of other random data (so that a
// region read from DEST before it was copied is seen), and blank metadata.
type setup struct {
	src, dst, md *device.Mem
	rs           int64
}

func newSetup(t testing.TB, size, rs int64, seed uint64) *setup {
	s := &setup{
		src: testutil.RandomDevice(t, size, seed),
		dst: testutil.RandomDevice(t, size, seed+1),
		md:  device.NewMem(clone.MetadataSize(size, rs)),
		rs:  rs,
	}
	t.Cleanup(func() { s.src.Close(); s.dst.Close(); s.md.Close() })
	return s
}

func (s *setup) open(t testing.TB, o clone.Options) *clone.Clone {
	t.Helper()
	o.RegionSize = s.rs
	c, err := clone.Open(s.src, s.dst, s.md, &o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return c
}

func closeClone(t testing.TB, c *clone.Clone) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func waitHydrated(t testing.TB, c *clone.Clone) {
	t.Helper()
	select {
	case <-c.Hydrated():
	case <-time.After(60 * time.Second):
		t.Fatalf("not hydrated after 60s: %+v", c.Status())
	}
}

func TestConformance(t *testing.T) {
	devicetest.Run(t, func(t *testing.T, size int64) device.Device {
		s := newSetup(t, size, clone.MinRegionSize, 1)
		c := s.open(t, clone.Options{})
		t.Cleanup(func() {
			if err := c.Close(); err != nil && !errors.Is(err, device.ErrClosed) {
				t.Errorf("Close: %v", err)
			}
		})
		return c
	})
}

// TestReadsBeforeHydration: with no background hydration, reads return
// SOURCE and nothing is copied.
func TestReadsBeforeHydration(t *testing.T) {
	s := newSetup(t, 1<<20+1234, 64<<10, 2)
	c := s.open(t, clone.Options{NoHydration: true})
	defer closeClone(t, c)
	if got, want := testutil.ReadRange(t, c, 0, c.Size()), s.src.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("clone differs from SOURCE at byte %d", testutil.FirstDiff(got, want))
	}
	if st := c.Status(); st.HydratedRegions != 0 || st.CopiedBytes != 0 {
		t.Fatalf("Status = %+v; want nothing hydrated or copied", st)
	}
}

// TestWrites: a write covering whole unhydrated regions is not preceded by
// a copy; a partial write copies its region first; both read back with
// SOURCE around them, and DEST holds the result.
func TestWrites(t *testing.T) {
	const rs = 16 << 10
	s := newSetup(t, 1<<20, rs, 3)
	c := s.open(t, clone.Options{NoHydration: true})
	defer closeClone(t, c)
	want := s.src.Bytes()
	write := func(off int64, n int) {
		t.Helper()
		p := testutil.Pattern(uint64(off), off, n)
		if _, err := c.WriteAt(p, off); err != nil {
			t.Fatalf("WriteAt(%d, %d): %v", off, n, err)
		}
		copy(want[off:], p)
	}
	write(2*rs, 2*rs) // regions 2 and 3, whole
	if st := c.Status(); st.HydratedRegions != 2 || st.CopiedBytes != 0 {
		t.Fatalf("after a whole-region write: Status = %+v; want 2 regions hydrated, nothing copied", st)
	}
	write(5*rs+100, 10) // inside region 5
	if st := c.Status(); st.HydratedRegions != 3 || st.CopiedBytes != rs {
		t.Fatalf("after a partial write: Status = %+v; want 3 regions hydrated, %d bytes copied", st, rs)
	}
	write(7*rs+rs/2, 2*rs) // half of 7, all of 8, half of 9
	if st := c.Status(); st.HydratedRegions != 6 || st.CopiedBytes != 3*rs {
		t.Fatalf("after a straddling write: Status = %+v; want 6 regions hydrated, %d bytes copied", st, 3*rs)
	}
	if got := testutil.ReadRange(t, c, 0, c.Size()); !bytes.Equal(got, want) {
		t.Fatalf("clone differs at byte %d", testutil.FirstDiff(got, want))
	}
	d := s.dst.Bytes()
	for _, r := range []int64{2, 3, 5, 7, 8, 9} {
		if !bytes.Equal(d[r*rs:(r+1)*rs], want[r*rs:(r+1)*rs]) {
			t.Errorf("DEST region %d does not hold the clone's data", r)
		}
	}
}

// TestHydration: background hydration makes DEST equal SOURCE plus the
// writes, commits, and a reopen finds everything hydrated.
func TestHydration(t *testing.T) {
	const rs = 4 << 10
	s := newSetup(t, 3<<20+512, rs, 4)
	c := s.open(t, clone.Options{BatchSize: 7})
	want := s.src.Bytes()
	p := testutil.Pattern(9, 0, 3*rs)
	if _, err := c.WriteAt(p, 100*rs+1); err != nil {
		t.Fatal(err)
	}
	copy(want[100*rs+1:], p)
	waitHydrated(t, c)
	st := c.Status()
	if !st.Done || st.HydratedRegions != st.Regions || st.HydratedBytes != c.Size() {
		t.Fatalf("Status = %+v; want done", st)
	}
	closeClone(t, c)
	if got := s.dst.Bytes()[:len(want)]; !bytes.Equal(got, want) {
		t.Fatalf("DEST differs at byte %d", testutil.FirstDiff(got, want))
	}
	c = s.open(t, clone.Options{})
	defer closeClone(t, c)
	waitHydrated(t, c)
	if st := c.Status(); st.CopiedBytes != 0 {
		t.Fatalf("reopened: Status = %+v; want nothing copied", st)
	}
}

// TestBadInput: refused clones write nothing.
func TestBadInput(t *testing.T) {
	const size = 256 << 10
	s := newSetup(t, size, 4<<10, 5)
	c := s.open(t, clone.Options{NoHydration: true})
	closeClone(t, c)
	meta := s.md.Bytes()
	dst := s.dst.Bytes()
	other := testutil.RandomDevice(t, size+4096, 6)
	small := device.NewMem(size - 4096)
	junk := testutil.RandomDevice(t, clone.MetadataSize(size, 4<<10), 7)
	tests := []struct {
		name          string
		src, dst, md  device.Device
		o             clone.Options
		want          error
		mdUntouched   bool
		destUntouched bool
	}{
		{"region size mismatch", s.src, s.dst, s.md, clone.Options{RegionSize: 8 << 10}, clone.ErrMetadataMismatch, true, true},
		{"region size not a power of two", s.src, s.dst, s.md, clone.Options{RegionSize: 12 << 10}, clone.ErrRegionSize, true, true},
		{"region size too small", s.src, s.dst, s.md, clone.Options{RegionSize: 2048}, clone.ErrRegionSize, true, true},
		{"other DEST", s.src, other, s.md, clone.Options{}, clone.ErrMetadataMismatch, true, true},
		{"other DEST identity", s.src, s.dst, s.md, clone.Options{DestID: "file:1:2"}, clone.ErrMetadataMismatch, true, true},
		{"other SOURCE identity", s.src, s.dst, s.md, clone.Options{SourceID: "nbd://x"}, clone.ErrMetadataMismatch, true, true},
		{"DEST too small", s.src, small, s.md, clone.Options{}, clone.ErrDestTooSmall, true, true},
		{"DEST is SOURCE", s.src, s.src, s.md, clone.Options{}, clone.ErrSameDevice, true, true},
		{"metadata is DEST", s.src, s.dst, s.dst, clone.Options{}, clone.ErrSameDevice, true, true},
		{"not metadata", s.src, s.dst, junk, clone.Options{}, clone.ErrNotMetadata, true, true},
		{"metadata too small", s.src, s.dst, device.NewMem(4096), clone.Options{}, clone.ErrMetadataTooSmall, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			junkBefore := junk.Bytes()
			c, err := clone.Open(tt.src, tt.dst, tt.md, &tt.o)
			if err == nil {
				c.Close()
				t.Fatalf("Open succeeded; want %v", tt.want)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Open = %v; want %v", err, tt.want)
			}
			t.Logf("Open: %v", err)
			if !bytes.Equal(s.md.Bytes(), meta) || !bytes.Equal(junk.Bytes(), junkBefore) {
				t.Error("metadata changed")
			}
			if !bytes.Equal(s.dst.Bytes(), dst) {
				t.Error("DEST changed")
			}
		})
	}
}

// TestSourceReadError: a SOURCE that fails reads of one region fails the
// client's reads of it with an I/O error, the background copy of the
// region fails and is reported and retried, nothing is marked hydrated
// that was not copied, and hydration completes once SOURCE heals.
func TestSourceReadError(t *testing.T) {
	const rs = 4 << 10
	s := newSetup(t, 256<<10, rs, 8)
	bad := faultdev.NewToggle(faultdev.Reads(faultdev.Range(10*rs, rs, faultdev.Always(nil))))
	bad.On()
	src := faultdev.Wrap(s.src, bad)
	c, err := clone.Open(src, s.dst, s.md, &clone.Options{RegionSize: rs, RetryInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer closeClone(t, c)
	buf := make([]byte, 100)
	_, err = c.ReadAt(buf, 10*rs+5)
	var ioe *device.IOError
	if !errors.As(err, &ioe) || !errors.Is(err, faultdev.ErrInjected) {
		t.Fatalf("ReadAt of the bad region = %v; want an *IOError wrapping the injected error", err)
	}
	if _, err := c.WriteAt(buf, 10*rs+5); err == nil {
		t.Fatal("a partial write to the bad region succeeded")
	}
	// Wait for the state, not for a count of failures: whether the
	// hydrator's first batch held the bad region, or the client's write
	// had marked it failed before, decides how many failures come first.
	st := waitStatus(t, c, func(st clone.Status) bool {
		return st.HydratedRegions == st.Regions-1 && st.Failures >= 3 // failed and retried
	})
	if st.Done || st.FailedRegions != 1 || st.LastError == "" || st.SourceReadErrors != 1 {
		t.Fatalf("Status = %+v; want every region but the bad one hydrated, one failed, reported", st)
	}
	bad.Off()
	waitHydrated(t, c)
	if got, want := s.dst.Bytes(), s.src.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("DEST differs at byte %d", testutil.FirstDiff(got, want))
	}
}

// TestBatchFailureNamesBadRegion: a background batch that fails on one
// region marks that region failed, not the batch's first one, and the
// regions before it are copied at once, not after a retry (RetryInterval
// is an hour here: a region wrongly marked failed would never hydrate).
func TestBatchFailureNamesBadRegion(t *testing.T) {
	const rs = 4 << 10
	s := newSetup(t, 256<<10, rs, 8)
	bad := faultdev.NewToggle(faultdev.Reads(faultdev.Range(10*rs, rs, faultdev.Always(nil))))
	bad.On()
	// The first batch holds every region, the bad one included.
	c, err := clone.Open(faultdev.Wrap(s.src, bad), s.dst, s.md, &clone.Options{RegionSize: rs, RetryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer closeClone(t, c)
	st := waitStatus(t, c, func(st clone.Status) bool { return st.HydratedRegions == st.Regions-1 })
	// Two failures: the batch's, then the bad region's alone.
	if st.FailedRegions != 1 || st.Failures != 2 || st.Done {
		t.Fatalf("Status = %+v; want every region but the bad one hydrated, after two failures", st)
	}
	if i := testutil.FirstDiff(s.dst.Bytes()[:10*rs], s.src.Bytes()[:10*rs]); i >= 0 {
		t.Fatalf("DEST differs at byte %d, before the bad region", i)
	}
}

// waitStatus polls c's status until ok accepts it, and returns it; it
// fails the test after 60 s.
func waitStatus(t testing.TB, c *clone.Clone, ok func(clone.Status) bool) clone.Status {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := c.Status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("Status = %+v after 60s; not the state the test waits for", st)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDiscard: discarding whole unhydrated regions marks them hydrated
// without a copy, partial regions are left alone, and discards reach DEST.
func TestDiscard(t *testing.T) {
	const rs = 4 << 10
	s := newSetup(t, 64<<10, rs, 9)
	c := s.open(t, clone.Options{NoHydration: true})
	defer closeClone(t, c)
	if err := c.Discard(rs/2, 3*rs); err != nil { // whole regions 1 and 2
		t.Fatal(err)
	}
	if st := c.Status(); st.HydratedRegions != 2 || st.CopiedBytes != 0 {
		t.Fatalf("Status = %+v; want 2 regions hydrated, nothing copied", st)
	}
	if !testutil.CheckZero(t, s.dst, rs, 2*rs) {
		t.Error("the discard did not reach DEST")
	}
	if got, want := testutil.ReadRange(t, c, 0, rs), s.src.Bytes()[:rs]; !bytes.Equal(got, want) {
		t.Error("region 0, partly discarded, does not read as SOURCE")
	}
}

// TestLeaks: a clone's goroutines end with Close.
func TestLeaks(t *testing.T) {
	testutil.CheckLeaks(t)
	s := newSetup(t, 1<<20, 4<<10, 10)
	c := s.open(t, clone.Options{})
	if _, err := c.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	closeClone(t, c)
	if err := c.Close(); !errors.Is(err, device.ErrClosed) {
		t.Fatalf("second Close = %v; want ErrClosed", err)
	}
	_ = context.Background
}

// TestSparse: zero regions of SOURCE stay holes in a DEST file.
func TestSparse(t *testing.T) {
	dir := t.TempDir()
	const size, rs = 4 << 20, 64 << 10
	data := make([]byte, size)
	copy(data[1<<20:], testutil.Pattern(14, 1<<20, 64<<10))
	writeFile(t, filepath.Join(dir, "src"), data)
	src, err := device.OpenFile(filepath.Join(dir, "src"), device.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := device.CreateFile(filepath.Join(dir, "dst"), size, device.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	testutil.WritePattern(t, dst, 15, 0, size) // allocated, other data
	md := device.NewMem(clone.MetadataSize(size, rs))
	c, err := clone.Open(src, dst, md, &clone.Options{RegionSize: rs})
	if err != nil {
		t.Fatal(err)
	}
	waitHydrated(t, c)
	closeClone(t, c)
	if got := testutil.ReadRange(t, dst, 0, size); !bytes.Equal(got, data) {
		t.Fatalf("DEST differs at byte %d", testutil.FirstDiff(got, data))
	}
	ext, err := dst.Extents(0, size)
	if err != nil {
		t.Fatal(err)
	}
	var holes int64
	for _, e := range ext {
		if e.Hole {
			holes += e.Len
		}
	}
	if holes < size-(1<<20) {
		t.Errorf("DEST has %d bytes of holes; want at least %d (SOURCE has %d zero bytes)", holes, size-(1<<20), size-(64<<10))
	}
}
