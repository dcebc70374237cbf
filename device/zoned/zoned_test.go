package zoned_test

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/devicetest"
	"github.com/kcopyd/kcopyd/device/zoned"
)

const (
	zs   = 64 << 10 // zone size
	size = 4*zs + 8<<10
)

// plain hides every optional capability of the device it embeds.
type plain struct{ device.Device }

// aligned reports an offset alignment for the device it embeds.
type aligned struct {
	device.Device
	align int
}

func (a aligned) Limits() device.Limits {
	return device.Limits{LogicalBlockSize: a.align, OffsetAlign: a.align}
}

// pattern returns n bytes, none zero, that depend on off and seed.
func pattern(off int64, n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte((off+int64(i))*7+int64(seed))%251 + 1
	}
	return p
}

// newZoned returns a zoned device over a Mem of size bytes with one
// conventional zone, and the Mem.
func newZoned(t testing.TB, opts ...zoned.Option) (*zoned.Device, *device.Mem) {
	t.Helper()
	m := device.NewMem(size)
	d, err := zoned.New(m, zs, append([]zoned.Option{zoned.Conventional(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, m
}

func wp(d *zoned.Device, i int) int64 { return d.Zones()[i].WP }

func TestZones(t *testing.T) {
	d, m := newZoned(t)
	want := []zoned.Zone{
		{Start: 0, Len: zs, WP: zs, Type: zoned.TypeConventional, Cond: zoned.CondNotWP},
		{Start: zs, Len: zs, WP: zs, Type: zoned.TypeSequentialRequired, Cond: zoned.CondEmpty},
		{Start: 2 * zs, Len: zs, WP: 2 * zs, Type: zoned.TypeSequentialRequired, Cond: zoned.CondEmpty},
		{Start: 3 * zs, Len: zs, WP: 3 * zs, Type: zoned.TypeSequentialRequired, Cond: zoned.CondEmpty},
		{Start: 4 * zs, Len: 8 << 10, WP: 4 * zs, Type: zoned.TypeSequentialRequired, Cond: zoned.CondEmpty},
	}
	if got := d.Zones(); !slices.Equal(got, want) {
		t.Errorf("Zones() = %+v; want %+v", got, want)
	}
	if d.NumZones() != 5 || d.ZoneSize() != zs || d.Size() != size {
		t.Errorf("NumZones, ZoneSize, Size = %d, %d, %d; want 5, %d, %d", d.NumZones(), d.ZoneSize(), d.Size(), zs, size)
	}
	l := d.Limits()
	if l.Zoned != device.ZoneHostManaged || l.MaxDiscard != 0 || l.MaxWriteZeroes != m.Limits().MaxWriteZeroes {
		t.Errorf("Limits() = %+v; want host-managed, no discard, the Mem's write-zeroes", l)
	}
	if _, ok := device.Device(d).(device.Discarder); ok {
		t.Errorf("zoned.Device implements Discarder")
	}
	if d.Identity() != m.Identity() || d.Unwrap() != device.Device(m) {
		t.Errorf("Identity, Unwrap = %q, %v; want the Mem's", d.Identity(), d.Unwrap())
	}
	if got := zoned.TypeSequentialRequired.String() + " " + zoned.CondImplicitOpen.String(); got != "SEQ_WRITE_REQUIRED oi" {
		t.Errorf("String() = %q", got)
	}
}

func TestNew(t *testing.T) {
	m := device.NewMem(size)
	tests := []struct {
		name string
		dev  device.Device
		zs   int64
		opts []zoned.Option
		ok   bool
	}{
		{"ok", m, zs, nil, true},
		{"all conventional", m, zs, []zoned.Option{zoned.Conventional(5)}, true},
		{"too many conventional", m, zs, []zoned.Option{zoned.Conventional(6)}, false},
		{"negative conventional", m, zs, []zoned.Option{zoned.Conventional(-1)}, false},
		{"zero zone size", m, 0, nil, false},
		{"negative zone size", m, -4096, nil, false},
		{"zone size off the alignment", aligned{m, 4096}, 6144, nil, false},
		{"zone size on the alignment", aligned{m, 4096}, 8192, nil, true},
	}
	for _, tt := range tests {
		_, err := zoned.New(tt.dev, tt.zs, tt.opts...)
		if (err == nil) != tt.ok {
			t.Errorf("%s: New(%d) error = %v; want ok %v", tt.name, tt.zs, err, tt.ok)
		}
	}
}

func TestSequentialWrites(t *testing.T) {
	var log zoned.Log
	d, m := newZoned(t, zoned.OnWrite(log.Record))
	for off := int64(zs); off < 2*zs; off += 4096 {
		if n, err := d.WriteAt(pattern(off, 4096, 1), off); n != 4096 || err != nil {
			t.Fatalf("WriteAt(4096 at %d) = %d, %v", off, n, err)
		}
		want := zoned.CondImplicitOpen
		if off+4096 == 2*zs {
			want = zoned.CondFull
		}
		if z := d.Zones()[1]; z.WP != off+4096 || z.Cond != want {
			t.Fatalf("after writing at %d: zone %+v; want WP %d, %v", off, z, off+4096, want)
		}
	}
	// Write-zeroes also advances, and so does the short last zone.
	if err := d.WriteZeroes(2*zs, 8192); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(pattern(4*zs, 8<<10, 2), 4*zs); err != nil {
		t.Fatal(err)
	}
	if got := d.Zones()[4].Cond; got != zoned.CondFull {
		t.Errorf("short last zone written whole: %v; want full", got)
	}
	// Conventional zones take writes anywhere, in any order.
	for _, off := range []int64{40960, 0, 12345} {
		if _, err := d.WriteAt(pattern(off, 1000, 3), off); err != nil {
			t.Errorf("conventional WriteAt at %d: %v", off, err)
		}
	}
	if got := m.Bytes()[zs : 2*zs]; !bytes.Equal(got, pattern(zs, zs, 1)) {
		t.Errorf("zone 1 does not hold the data written")
	}
	got := make([]byte, zs)
	if _, err := d.ReadAt(got, zs); err != nil || !bytes.Equal(got, pattern(zs, zs, 1)) {
		t.Errorf("ReadAt(zone 1) = %v; want the data written", err)
	}
	ws := log.Zone(1)
	if len(ws) != zs/4096 {
		t.Fatalf("log has %d writes to zone 1; want %d", len(ws), zs/4096)
	}
	for i, w := range ws {
		if want := (zoned.Write{Zone: 1, Off: zs + int64(i)*4096, Len: 4096}); w != want {
			t.Errorf("log[%d] = %+v; want %+v", i, w, want)
		}
	}
	if got, want := log.Zone(2), []zoned.Write{{Zone: 2, Off: 2 * zs, Len: 8192, Zeroes: true}}; !slices.Equal(got, want) {
		t.Errorf("log of zone 2 = %+v; want %+v", got, want)
	}
	if got := len(log.Zone(0)); got != 3 {
		t.Errorf("log has %d writes to the conventional zone; want 3", got)
	}
}

func TestRejectedWrites(t *testing.T) {
	tests := []struct {
		name     string
		off, len int64
		zeroes   bool
		want     error
	}{
		{"gap", zs + 8192, 4096, false, zoned.ErrUnalignedWrite},
		{"gap zeroes", zs + 8192, 4096, true, zoned.ErrUnalignedWrite},
		{"rewrite", zs, 4096, false, zoned.ErrUnalignedWrite},
		{"rewrite inside", zs + 100, 100, false, zoned.ErrUnalignedWrite},
		{"cross zone end", zs + 4096, zs, false, zoned.ErrUnalignedWrite},
		{"cross zone end zeroes", zs + 4096, zs, true, zoned.ErrUnalignedWrite},
		{"conventional into sequential", zs - 4096, 8192, false, zoned.ErrUnalignedWrite},
		{"conventional into empty sequential", 3*zs - 4096, 8192, false, zoned.ErrUnalignedWrite},
		{"into the middle of an empty zone", 3*zs + 4096, 4096, false, zoned.ErrUnalignedWrite},
		{"full zone", 2 * zs, 4096, false, zoned.ErrUnalignedWrite},
		{"past the end", size - 4096, 8192, false, device.ErrOutOfRange},
		{"negative", -4096, 4096, false, device.ErrOutOfRange},
	}
	for _, tt := range tests {
		d, m := newZoned(t)
		// Zone 1 holds 4 KiB, zone 2 is full, zones 3 and 4 are empty.
		if _, err := d.WriteAt(pattern(zs, 4096, 1), zs); err != nil {
			t.Fatal(err)
		}
		if err := d.FinishZone(2 * zs); err != nil {
			t.Fatal(err)
		}
		// Put data behind the write pointers, to see that nothing
		// changes it.
		if _, err := m.WriteAt(pattern(zs+4096, 3*zs, 9), zs+4096); err != nil {
			t.Fatal(err)
		}
		before, zones := m.Bytes(), d.Zones()
		var err error
		if tt.zeroes {
			err = d.WriteZeroes(tt.off, tt.len)
		} else {
			var n int
			n, err = d.WriteAt(pattern(tt.off, int(tt.len), 5), tt.off)
			if n != 0 {
				t.Errorf("%s: WriteAt returned n = %d; want 0", tt.name, n)
			}
		}
		var ioe *device.IOError
		if !errors.Is(err, tt.want) || !errors.As(err, &ioe) || ioe.Off != tt.off || ioe.Len != tt.len {
			t.Errorf("%s: write [%d, +%d) error = %v; want an *IOError for that range wrapping %v", tt.name, tt.off, tt.len, err, tt.want)
		}
		if !bytes.Equal(m.Bytes(), before) {
			t.Errorf("%s: a rejected write changed the data", tt.name)
		}
		if got := d.Zones(); !slices.Equal(got, zones) {
			t.Errorf("%s: a rejected write changed the zones: %+v; want %+v", tt.name, got, zones)
		}
	}
}

func TestReadsPastWritePointer(t *testing.T) {
	d, m := newZoned(t)
	// Stale data on the wrapped device must not show through.
	if _, err := m.WriteAt(pattern(0, size, 7), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(pattern(zs, 5000, 1), zs); err != nil {
		t.Fatal(err)
	}
	// One read across the conventional zone, zone 1 and zone 2.
	got := make([]byte, 2*zs+2000)
	if n, err := d.ReadAt(got, zs-1000); n != len(got) || err != nil {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	want := make([]byte, len(got))
	copy(want, pattern(zs-1000, 1000, 7))   // conventional: whatever is there
	copy(want[1000:], pattern(zs, 5000, 1)) // zone 1 below the write pointer
	if !bytes.Equal(got, want) {            // the rest: zeroes
		t.Errorf("ReadAt across zones does not read zeroes past the write pointers")
	}
	// A read crossing Size: zeroes, a short count and io.EOF.
	p := make([]byte, 10000)
	n, err := d.ReadAt(p, size-5000)
	if n != 5000 || err != io.EOF || !bytes.Equal(p[:n], make([]byte, n)) {
		t.Errorf("ReadAt across Size = %d, %v; want 5000 zero bytes, io.EOF", n, err)
	}
	if n, err := d.ReadAt(p, size); n != 0 || err != io.EOF {
		t.Errorf("ReadAt(Size) = %d, %v; want 0, io.EOF", n, err)
	}
	// StartFull shows the data of the wrapped device.
	dFull, err := zoned.New(m, zs, zoned.Conventional(1), zoned.StartFull())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dFull.ReadAt(p, 3*zs); err != nil || !bytes.Equal(p, pattern(3*zs, len(p), 7)) {
		t.Errorf("StartFull: ReadAt does not show the wrapped device's data (%v)", err)
	}
	if _, err := dFull.WriteAt(p, 3*zs); !errors.Is(err, zoned.ErrUnalignedWrite) {
		t.Errorf("StartFull: write to a full zone: %v; want ErrUnalignedWrite", err)
	}
}

func TestResetAndFinish(t *testing.T) {
	d, _ := newZoned(t)
	if _, err := d.WriteAt(pattern(zs, 8192, 1), zs); err != nil {
		t.Fatal(err)
	}
	if err := d.ResetZone(zs); err != nil {
		t.Fatal(err)
	}
	if z := d.Zones()[1]; z.WP != zs || z.Cond != zoned.CondEmpty {
		t.Errorf("after reset: %+v; want empty", z)
	}
	p := make([]byte, 8192)
	if _, err := d.ReadAt(p, zs); err != nil || !bytes.Equal(p, make([]byte, 8192)) {
		t.Errorf("after reset, the zone does not read zeroes (%v)", err)
	}
	if _, err := d.WriteAt(pattern(zs+8192, 4096, 1), zs+8192); !errors.Is(err, zoned.ErrUnalignedWrite) {
		t.Errorf("write at the old write pointer after reset: %v; want ErrUnalignedWrite", err)
	}
	if _, err := d.WriteAt(pattern(zs, 4096, 2), zs); err != nil {
		t.Errorf("write at the start after reset: %v", err)
	}
	if _, err := d.ReadAt(p, zs); err != nil || !bytes.Equal(p[:4096], pattern(zs, 4096, 2)) || !bytes.Equal(p[4096:], make([]byte, 4096)) {
		t.Errorf("after rewriting 4 KiB: wrong data (%v)", err)
	}

	if err := d.FinishZone(zs); err != nil {
		t.Fatal(err)
	}
	if z := d.Zones()[1]; z.WP != 2*zs || z.Cond != zoned.CondFull {
		t.Errorf("after finish: %+v; want full", z)
	}
	if _, err := d.ReadAt(p, zs+4096); err != nil || !bytes.Equal(p[:4096], make([]byte, 4096)) {
		t.Errorf("finish: skipped bytes do not read zeroes (%v)", err)
	}
	if err := d.ResetAll(); err != nil {
		t.Fatal(err)
	}
	for _, z := range d.Zones()[1:] {
		if z.Cond != zoned.CondEmpty {
			t.Errorf("after ResetAll: %+v", z)
		}
	}

	for _, off := range []int64{0, zs + 4096, -zs, size, 5 * zs} {
		if err := d.ResetZone(off); !errors.Is(err, zoned.ErrInvalidZone) {
			t.Errorf("ResetZone(%d) = %v; want ErrInvalidZone", off, err)
		}
		if err := d.FinishZone(off); !errors.Is(err, zoned.ErrInvalidZone) {
			t.Errorf("FinishZone(%d) = %v; want ErrInvalidZone", off, err)
		}
	}
}

// TestRace starts writers at the same write pointer at once: exactly one
// may win, and the zone holds its data.
func TestRace(t *testing.T) {
	for round := range 20 {
		d, _ := newZoned(t)
		const writers = 8
		errs := make([]error, writers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for g := range writers {
			wg.Go(func() {
				<-start
				_, errs[g] = d.WriteAt(pattern(zs, 4096, byte(g)), zs)
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for g, err := range errs {
			switch {
			case err == nil && winner < 0:
				winner = g
			case err == nil:
				t.Fatalf("round %d: writers %d and %d both succeeded at the same write pointer", round, winner, g)
			case !errors.Is(err, zoned.ErrUnalignedWrite):
				t.Fatalf("round %d: writer %d: %v; want ErrUnalignedWrite", round, g, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no writer succeeded", round)
		}
		p := make([]byte, 8192)
		d.ReadAt(p, zs)
		if !bytes.Equal(p[:4096], pattern(zs, 4096, byte(winner))) || !bytes.Equal(p[4096:], make([]byte, 4096)) || wp(d, 1) != zs+4096 {
			t.Fatalf("round %d: zone does not hold exactly the winner's data", round)
		}
	}
}

// TestUnorderedWriters issues the chunks of one zone from many goroutines
// without ordering them: whatever succeeds must form a contiguous run from
// the zone's start, in the log and on the device, and every failure must be
// an ErrUnalignedWrite. Then the same chunks issued in order all succeed.
func TestUnorderedWriters(t *testing.T) {
	var log zoned.Log
	d, _ := newZoned(t, zoned.OnWrite(log.Record))
	const chunk = 4096
	var ok atomic.Int64
	var wg sync.WaitGroup
	for k := range zs / chunk {
		wg.Go(func() {
			off := zs + int64(k)*chunk
			_, err := d.WriteAt(pattern(off, chunk, 1), off)
			switch {
			case err == nil:
				ok.Add(1)
			case !errors.Is(err, zoned.ErrUnalignedWrite):
				t.Errorf("chunk %d: %v", k, err)
			}
		})
	}
	wg.Wait()
	ws := log.Zone(1)
	if int64(len(ws)) != ok.Load() || wp(d, 1) != zs+ok.Load()*chunk {
		t.Fatalf("%d writes succeeded, %d logged, write pointer %d", ok.Load(), len(ws), wp(d, 1))
	}
	for i, w := range ws {
		if w.Off != zs+int64(i)*chunk {
			t.Fatalf("log[%d] at %d; want %d", i, w.Off, zs+int64(i)*chunk)
		}
	}

	// In order, from goroutines that wait for their turn: all succeed.
	d2, _ := newZoned(t)
	for k := range zs / chunk {
		wg.Go(func() {
			off := zs + int64(k)*chunk
			for wp(d2, 1) != off {
				// Spin until the predecessor's write is done.
			}
			if _, err := d2.WriteAt(pattern(off, chunk, 1), off); err != nil {
				t.Errorf("ordered chunk %d: %v", k, err)
			}
		})
	}
	wg.Wait()
	if z := d2.Zones()[1]; z.Cond != zoned.CondFull {
		t.Errorf("after ordered writes: %+v; want full", z)
	}
}

// TestReadersDuringWrites reads a zone while it is written: every read
// must see a prefix of the data followed by zeroes, never the stale data
// the wrapped device holds past the write pointer. Between rounds, with
// the readers held off, the zone is reset and stale data put back.
func TestReadersDuringWrites(t *testing.T) {
	d, m := newZoned(t)
	stale := bytes.Repeat([]byte{0xFF}, zs)
	var pause sync.RWMutex // held by the writer while it resets
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			p := make([]byte, zs)
			want := pattern(zs, zs, 1)
			for !stop.Load() {
				pause.RLock()
				_, err := d.ReadAt(p, zs)
				pause.RUnlock()
				if err != nil {
					t.Error(err)
					return
				}
				i := bytes.IndexByte(p, 0)
				if i < 0 {
					i = len(p)
				}
				if !bytes.Equal(p[:i], want[:i]) || !bytes.Equal(p[i:], make([]byte, len(p)-i)) {
					t.Errorf("read a zone that is not data then zeroes (zeroes from %d)", i)
					return
				}
			}
		})
	}
	for range 20 {
		pause.Lock()
		d.ResetZone(zs)
		m.WriteAt(stale, zs)
		pause.Unlock()
		for off := int64(zs); off < 2*zs; off += 4096 {
			if _, err := d.WriteAt(pattern(off, 4096, 1), off); err != nil {
				t.Fatal(err)
			}
		}
	}
	stop.Store(true)
	wg.Wait()
}

func TestWriteZeroesUnsupported(t *testing.T) {
	m := device.NewMem(size)
	d, err := zoned.New(plain{m}, zs)
	if err != nil {
		t.Fatal(err)
	}
	if l := device.LimitsOf(d); l.MaxWriteZeroes != 0 {
		t.Errorf("Limits().MaxWriteZeroes = %d over a device without write-zeroes; want 0", l.MaxWriteZeroes)
	}
	if err := d.WriteZeroes(0, 4096); !errors.Is(err, device.ErrNotSupported) {
		t.Errorf("WriteZeroes: %v; want ErrNotSupported", err)
	}
	if wp(d, 0) != 0 {
		t.Errorf("unsupported WriteZeroes moved the write pointer")
	}
	if err := d.Flush(); err != nil {
		t.Errorf("Flush over a device without a cache: %v", err)
	}
	if ext, err := d.Extents(0, 2*zs); err != nil || len(ext) != 1 || !ext[0].Hole {
		t.Errorf("Extents of two empty zones = %+v, %v; want one hole", ext, err)
	}
}

func TestExtents(t *testing.T) {
	d, _ := newZoned(t)
	if _, err := d.WriteAt(pattern(4096, 4096, 1), 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(pattern(zs, 5000, 1), zs); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(pattern(2*zs, 4096, 1), 2*zs); err != nil {
		t.Fatal(err)
	}
	if err := d.FinishZone(2 * zs); err != nil {
		t.Fatal(err)
	}
	got, err := d.Extents(0, size)
	if err != nil {
		t.Fatal(err)
	}
	want := []device.Extent{
		{Off: 0, Len: 4096, Hole: true, Zero: true}, // the Mem's own holes
		{Off: 4096, Len: 4096},
		{Off: 8192, Len: zs - 8192, Hole: true, Zero: true},
		{Off: zs, Len: 5000},
		{Off: zs + 5000, Len: zs - 5000, Hole: true, Zero: true},
		{Off: 2 * zs, Len: 4096}, // finished after 4 KiB: the rest is a hole
		{Off: 2*zs + 4096, Len: size - 2*zs - 4096, Hole: true, Zero: true},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Extents(0, Size) =\n%+v\nwant\n%+v", got, want)
	}
	got, err = d.Extents(zs+100, 1000)
	if want := []device.Extent{{Off: zs + 100, Len: 1000}}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Extents(zs+100, 1000) = %+v, %v; want %+v", got, want, err)
	}
	for _, r := range [][2]int64{{0, 0}, {-1, 10}, {size - 10, 20}} {
		if _, err := d.Extents(r[0], r[1]); !errors.Is(err, device.ErrOutOfRange) {
			t.Errorf("Extents(%d, %d) = %v; want ErrOutOfRange", r[0], r[1], err)
		}
	}
}

func TestClose(t *testing.T) {
	d, _ := newZoned(t)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt([]byte{1}, zs); !errors.Is(err, device.ErrClosed) {
		t.Errorf("WriteAt after Close: %v; want ErrClosed", err)
	}
	if _, err := d.ReadAt(make([]byte, 1), zs); !errors.Is(err, device.ErrClosed) {
		t.Errorf("ReadAt after Close: %v; want ErrClosed", err)
	}
	if err := d.ResetZone(zs); !errors.Is(err, device.ErrClosed) {
		t.Errorf("ResetZone after Close: %v; want ErrClosed", err)
	}
}

// TestConformance runs the device suite on a zoned device whose zones are
// all conventional, over a Mem and over a 4 KiB-aligned device: sequential
// zones reject the suite's random writes by design, which the tests above
// cover.
func TestConformance(t *testing.T) {
	tests := []struct {
		name string
		open func(size int64) device.Device
	}{
		{"Mem", func(size int64) device.Device { return device.NewMem(size) }},
		{"Strict4096", func(size int64) device.Device {
			size = (size + 4095) &^ 4095
			return devicetest.Strict(nil, device.NewMem(size), device.Limits{LogicalBlockSize: 4096, OffsetAlign: 4096, MemAlign: 512, MaxWriteZeroes: 64 << 10})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			devicetest.Run(t, func(t *testing.T, size int64) device.Device {
				dev := tt.open(size)
				n := int((dev.Size() + zs - 1) / zs)
				d, err := zoned.New(dev, zs, zoned.Conventional(n))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { d.Close() })
				return d
			})
		})
	}
}
