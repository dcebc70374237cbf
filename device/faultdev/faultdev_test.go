package faultdev_test

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/devicetest"
	"github.com/kcopyd/kcopyd/device/faultdev"
)

// plain hides every optional capability of the device it embeds.
type plain struct{ device.Device }

// op is one operation a test performs on a device.
type op struct {
	kind     device.Op
	off, len int64
}

func (o op) run(d *faultdev.Device) error {
	switch o.kind {
	case device.OpRead:
		_, err := d.ReadAt(make([]byte, o.len), o.off)
		return err
	case device.OpWrite:
		_, err := d.WriteAt(bytes.Repeat([]byte{0xAB}, int(o.len)), o.off)
		return err
	case device.OpWriteZeroes:
		return d.WriteZeroes(o.off, o.len)
	case device.OpDiscard:
		return d.Discard(o.off, o.len)
	case device.OpFlush:
		return d.Flush()
	case device.OpExtents:
		_, err := d.Extents(o.off, o.len)
		return err
	}
	panic("unknown op " + o.kind)
}

// script is a fixed mix of operations used by several tests.
var script = []op{
	{device.OpWrite, 0, 4096},
	{device.OpRead, 0, 4096},
	{device.OpWriteZeroes, 4096, 4096},
	{device.OpFlush, 0, 0},
	{device.OpRead, 8192, 512},
	{device.OpDiscard, 12288, 4096},
	{device.OpExtents, 0, 16384},
	{device.OpWrite, 16384, 512},
}

// runScript runs script on d and returns the indexes of the operations that
// failed, checking that every failure is an injected *device.IOError that
// names the operation.
func runScript(t testing.TB, d *faultdev.Device) []int {
	t.Helper()
	var failed []int
	for i, o := range script {
		err := o.run(d)
		if err == nil {
			continue
		}
		failed = append(failed, i)
		var ioe *device.IOError
		if !errors.As(err, &ioe) || !errors.Is(err, faultdev.ErrInjected) {
			t.Fatalf("op %d (%s): err = %v; want an injected *device.IOError", i, o.kind, err)
		}
		if ioe.Op != o.kind || ioe.Off != o.off || ioe.Len != o.len {
			t.Errorf("op %d: IOError{Op: %s, Off: %d, Len: %d}; want {%s, %d, %d}", i, ioe.Op, ioe.Off, ioe.Len, o.kind, o.off, o.len)
		}
	}
	return failed
}

func newDev(t testing.TB, inj faultdev.Injector, opts ...faultdev.Option) (*faultdev.Device, *device.Mem) {
	t.Helper()
	m := device.NewMem(1 << 20)
	d := faultdev.Wrap(m, inj, opts...)
	t.Cleanup(func() { d.Close() })
	return d, m
}

func TestPassThrough(t *testing.T) {
	d, m := newDev(t, nil)
	if failed := runScript(t, d); failed != nil {
		t.Fatalf("no injector: ops %v failed", failed)
	}
	if got, want := d.Seen(), int64(len(script)); got != want {
		t.Errorf("Seen() = %d; want %d", got, want)
	}
	if d.Injected() != 0 {
		t.Errorf("Injected() = %d; want 0", d.Injected())
	}
	if d.Unwrap() != device.Device(m) {
		t.Errorf("Unwrap() = %v; want the Mem", d.Unwrap())
	}
	if got, want := d.Identity(), m.Identity(); got != want {
		t.Errorf("Identity() = %q; want %q", got, want)
	}
	if got, want := d.Limits(), m.Limits(); got != want {
		t.Errorf("Limits() = %+v; want %+v", got, want)
	}
	got := make([]byte, 4096)
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bytes.Repeat([]byte{0xAB}, 4096)) {
		t.Errorf("data written through the wrapper does not read back")
	}
	if n, err := d.ReadAt(make([]byte, 10), d.Size()); n != 0 || err != io.EOF {
		t.Errorf("ReadAt(Size) = %d, %v; want 0, io.EOF", n, err)
	}
	if _, err := d.WriteAt(make([]byte, 10), d.Size()-5); !errors.Is(err, device.ErrOutOfRange) {
		t.Errorf("WriteAt crossing Size: err = %v; want ErrOutOfRange", err)
	}
}

func TestOnIndexSweep(t *testing.T) {
	// Dry run: count the operations.
	count := faultdev.OnIndex(-1)
	d, _ := newDev(t, count)
	if failed := runScript(t, d); failed != nil {
		t.Fatalf("OnIndex(-1): ops %v failed", failed)
	}
	if count.Fired() {
		t.Errorf("OnIndex(-1).Fired() = true")
	}
	n := count.Seen()
	if n != int64(len(script)) {
		t.Fatalf("OnIndex(-1).Seen() = %d; want %d", n, len(script))
	}
	for i := int64(0); i <= n; i++ {
		inj := faultdev.OnIndex(i)
		d, _ := newDev(t, inj)
		failed := runScript(t, d)
		if i == n {
			if failed != nil || inj.Fired() {
				t.Errorf("OnIndex(%d) past the end: failed %v, Fired %v; want none, false", i, failed, inj.Fired())
			}
			continue
		}
		if want := []int{int(i)}; !slices.Equal(failed, want) {
			t.Errorf("OnIndex(%d): failed ops %v; want %v", i, failed, want)
		}
		if !inj.Fired() || d.Injected() != 1 {
			t.Errorf("OnIndex(%d): Fired %v, Injected %d; want true, 1", i, inj.Fired(), d.Injected())
		}
	}
}

func TestFilters(t *testing.T) {
	all := func(s []op, keep func(op) bool) []int {
		var idx []int
		for i, o := range s {
			if keep(o) {
				idx = append(idx, i)
			}
		}
		return idx
	}
	tests := []struct {
		name string
		inj  faultdev.Injector
		want []int
	}{
		{"Always", faultdev.Always(nil), all(script, func(op) bool { return true })},
		{"Reads", faultdev.Reads(faultdev.Always(nil)), all(script, func(o op) bool {
			return o.kind == device.OpRead || o.kind == device.OpExtents
		})},
		{"Writes", faultdev.Writes(faultdev.Always(nil)), all(script, func(o op) bool {
			return o.kind == device.OpWrite || o.kind == device.OpWriteZeroes || o.kind == device.OpDiscard
		})},
		{"ErrorWrites", faultdev.ErrorWrites(), []int{0, 2, 5, 7}},
		{"Ops(flush)", faultdev.Ops(faultdev.Always(nil), device.OpFlush), []int{3}},
		{"Range[4096,+4096)", faultdev.Range(4096, 4096, faultdev.Always(nil)), []int{2, 6}},
		{"Range[4095,+2)", faultdev.Range(4095, 2, faultdev.Always(nil)), []int{0, 1, 2, 6}},
		{"Range[16384,+1)", faultdev.Range(16384, 1, faultdev.Always(nil)), []int{7}},
		{"Range empty", faultdev.Range(0, 0, faultdev.Always(nil)), nil},
		{"Writes(OnIndex(1))", faultdev.Writes(faultdev.OnIndex(1)), []int{2}},
		{"Reads(OnIndex(2))", faultdev.Reads(faultdev.OnIndex(2)), []int{6}},
		{"From(5)", faultdev.From(5, faultdev.Always(nil)), []int{5, 6, 7}},
		{"Writes(From(2))", faultdev.Writes(faultdev.From(2, faultdev.Always(nil))), []int{5, 7}},
		{"Any(OnIndex(1), OnIndex(4))", faultdev.Any(faultdev.OnIndex(1), faultdev.OnIndex(4)), []int{1, 4}},
		{"Any()", faultdev.Any(), nil},
		{"All(Writes, Range[0,+8192))", faultdev.All(faultdev.ErrorWrites(), faultdev.Range(0, 8192, faultdev.Always(nil))), []int{0, 2}},
		{"All(OnIndex(3), Writes)", faultdev.All(faultdev.OnIndex(3), faultdev.ErrorWrites()), nil},
		{"All()", faultdev.All(), nil},
		{"InjectorFunc", faultdev.InjectorFunc(func(o faultdev.Op) faultdev.Fault {
			if o.Len == 512 {
				return faultdev.Fault{Err: syscall.EIO}
			}
			return faultdev.Fault{}
		}), []int{4, 7}},
	}
	for _, tt := range tests {
		d, _ := newDev(t, tt.inj)
		if got := runScript(t, d); !slices.Equal(got, tt.want) {
			t.Errorf("%s: failed ops %v; want %v", tt.name, got, tt.want)
		}
		if got := d.Injected(); got != int64(len(tt.want)) {
			t.Errorf("%s: Injected() = %d; want %d", tt.name, got, len(tt.want))
		}
	}
}

func TestAlwaysWrapsCause(t *testing.T) {
	d, _ := newDev(t, faultdev.Always(syscall.EIO))
	_, err := d.WriteAt([]byte("x"), 7)
	if !errors.Is(err, faultdev.ErrInjected) || !errors.Is(err, syscall.EIO) {
		t.Errorf("WriteAt: err = %v; want both ErrInjected and EIO", err)
	}
	// An injected ErrNotSupported looks like a missing capability.
	d, m := newDev(t, faultdev.Ops(faultdev.Always(device.ErrNotSupported), device.OpWriteZeroes))
	if _, err := m.WriteAt([]byte{1}, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteZeroes(0, 512); !errors.Is(err, device.ErrNotSupported) {
		t.Errorf("WriteZeroes: err = %v; want ErrNotSupported", err)
	}
	if b := m.Bytes(); b[0] != 1 {
		t.Errorf("failed WriteZeroes changed the data")
	}
}

func TestDropWrites(t *testing.T) {
	d, m := newDev(t, faultdev.DropWrites())
	if _, err := m.WriteAt(bytes.Repeat([]byte{7}, 8192), 0); err != nil {
		t.Fatal(err)
	}
	before := m.Bytes()
	if n, err := d.WriteAt(make([]byte, 100), 10); n != 100 || err != nil {
		t.Errorf("dropped WriteAt = %d, %v; want 100, nil", n, err)
	}
	if err := d.WriteZeroes(0, 4096); err != nil {
		t.Errorf("dropped WriteZeroes: %v", err)
	}
	if err := d.Discard(4096, 4096); err != nil {
		t.Errorf("dropped Discard: %v", err)
	}
	if !bytes.Equal(m.Bytes(), before) {
		t.Errorf("dropped writes changed the device")
	}
	if got := d.Injected(); got != 3 {
		t.Errorf("Injected() = %d; want 3", got)
	}
	// Reads are not dropped.
	p := make([]byte, 4)
	if _, err := d.ReadAt(p, 0); err != nil || !bytes.Equal(p, []byte{7, 7, 7, 7}) {
		t.Errorf("ReadAt under DropWrites = %v, %v; want [7 7 7 7], nil", p, err)
	}
	// A dropped write is still checked against Size.
	if _, err := d.WriteAt(make([]byte, 10), d.Size()-5); !errors.Is(err, device.ErrOutOfRange) {
		t.Errorf("dropped WriteAt crossing Size: err = %v; want ErrOutOfRange", err)
	}
	if err := d.WriteZeroes(-1, 10); !errors.Is(err, device.ErrOutOfRange) {
		t.Errorf("dropped WriteZeroes(-1, 10): err = %v; want ErrOutOfRange", err)
	}
	// Drop() also drops flushes but leaves reads alone.
	d2, _ := newDev(t, faultdev.Drop())
	if err := d2.Flush(); err != nil {
		t.Errorf("dropped Flush: %v", err)
	}
	if _, err := d2.ReadAt(p, 0); err != nil {
		t.Errorf("ReadAt under Drop: %v", err)
	}
	if got := d2.Injected(); got != 1 {
		t.Errorf("Drop: Injected() = %d; want 1 (the flush)", got)
	}
	// After Close, a dropped write reports ErrClosed.
	d.Close()
	if _, err := d.WriteAt([]byte{1}, 0); !errors.Is(err, device.ErrClosed) {
		t.Errorf("dropped WriteAt after Close: err = %v; want ErrClosed", err)
	}
}

func TestNthDrop(t *testing.T) {
	d, m := newDev(t, faultdev.Writes(faultdev.Nth(1, faultdev.Drop())))
	for i := range 3 {
		if _, err := d.WriteAt([]byte{byte(i + 1)}, int64(i)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if got, want := m.Bytes()[:3], []byte{1, 0, 3}; !bytes.Equal(got, want) {
		t.Errorf("after dropping the second write: %v; want %v", got, want)
	}
}

func TestToggle(t *testing.T) {
	tg := faultdev.NewToggle(faultdev.ErrorWrites())
	d, _ := newDev(t, tg)
	if tg.Enabled() {
		t.Fatal("new Toggle is on")
	}
	if _, err := d.WriteAt([]byte{1}, 0); err != nil {
		t.Errorf("toggle off: %v", err)
	}
	tg.On()
	if _, err := d.WriteAt([]byte{1}, 0); !errors.Is(err, faultdev.ErrInjected) {
		t.Errorf("toggle on: err = %v; want ErrInjected", err)
	}
	if _, err := d.ReadAt(make([]byte, 1), 0); err != nil {
		t.Errorf("toggle on, read: %v", err)
	}
	tg.Set(false)
	if _, err := d.WriteAt([]byte{1}, 0); err != nil {
		t.Errorf("toggle off again: %v", err)
	}

	// Flip it while writers run: every write either succeeds or fails
	// with an injected error, and the counts add up.
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, bad := 0, 0
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				_, err := d.WriteAt([]byte{byte(i)}, int64(g*1000+i))
				mu.Lock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, faultdev.ErrInjected):
					bad++
				default:
					t.Errorf("unexpected error %v", err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Go(func() {
		for i := range 500 {
			tg.Set(i%2 == 0)
		}
	})
	wg.Wait()
	if ok+bad != 800 || int64(bad) != d.Injected()-1 {
		t.Errorf("ok %d + failed %d; want 800 with %d failed", ok, bad, d.Injected()-1)
	}
}

func TestConcurrentOnIndex(t *testing.T) {
	const n = 64
	inj := faultdev.OnIndex(37)
	d, _ := newDev(t, inj)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = d.WriteAt([]byte{1}, int64(i)) })
	}
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			if !errors.Is(err, faultdev.ErrInjected) {
				t.Errorf("unexpected error %v", err)
			}
			failed++
		}
	}
	if failed != 1 || inj.Seen() != n || d.Seen() != n {
		t.Errorf("failed %d, Seen %d, device Seen %d; want 1, %d, %d", failed, inj.Seen(), d.Seen(), n, n)
	}
}

func TestLatency(t *testing.T) {
	var mu sync.Mutex
	var slept []time.Duration
	sleep := func(d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		slept = append(slept, d)
	}
	d, _ := newDev(t, faultdev.Writes(faultdev.Latency(5*time.Millisecond)), faultdev.WithSleep(sleep))
	runScript(t, d)
	want := []time.Duration{5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond}
	if !slices.Equal(slept, want) {
		t.Errorf("slept %v; want %v", slept, want)
	}
	if d.Injected() != 0 {
		t.Errorf("Injected() = %d; want 0 (delays are not faults)", d.Injected())
	}

	// Delays add up in Any, and a delayed failure is still delayed.
	slept = nil
	d, _ = newDev(t, faultdev.Any(faultdev.Latency(time.Millisecond), faultdev.Latency(2*time.Millisecond), faultdev.Always(nil)), faultdev.WithSleep(sleep))
	if _, err := d.ReadAt(make([]byte, 1), 0); !errors.Is(err, faultdev.ErrInjected) {
		t.Errorf("ReadAt: err = %v; want ErrInjected", err)
	}
	if want := []time.Duration{3 * time.Millisecond}; !slices.Equal(slept, want) {
		t.Errorf("slept %v; want %v", slept, want)
	}
}

func TestRandomLatency(t *testing.T) {
	draw := func(seed uint64) []time.Duration {
		var got []time.Duration
		d, _ := newDev(t, faultdev.RandomLatency(seed, 10*time.Millisecond), faultdev.WithSleep(func(d time.Duration) { got = append(got, d) }))
		for range 100 {
			d.ReadAt(make([]byte, 1), 0)
		}
		return got
	}
	a, b, c := draw(1), draw(1), draw(2)
	if !slices.Equal(a, b) {
		t.Errorf("same seed gave different delays")
	}
	if slices.Equal(a, c) {
		t.Errorf("different seeds gave the same delays")
	}
	distinct := map[time.Duration]bool{}
	for _, d := range a {
		if d < 0 || d >= 10*time.Millisecond {
			t.Fatalf("delay %v outside [0, 10ms)", d)
		}
		distinct[d] = true
	}
	if len(distinct) < 50 {
		t.Errorf("%d distinct delays out of 100; want a spread", len(distinct))
	}
}

func TestRandom(t *testing.T) {
	count := func(seed uint64, p float64) int64 {
		d, _ := newDev(t, faultdev.Random(seed, p, faultdev.Always(nil)))
		for range 1000 {
			d.ReadAt(make([]byte, 1), 0)
		}
		return d.Injected()
	}
	if got := count(1, 0); got != 0 {
		t.Errorf("p=0: %d failures; want 0", got)
	}
	if got := count(1, 1); got != 1000 {
		t.Errorf("p=1: %d failures; want 1000", got)
	}
	a := count(7, 0.25)
	if b := count(7, 0.25); a != b {
		t.Errorf("seed 7 gave %d then %d failures", a, b)
	}
	if a < 150 || a > 350 {
		t.Errorf("p=0.25: %d failures of 1000; want about 250", a)
	}
}

func TestCounter(t *testing.T) {
	var c faultdev.Counter
	d, _ := newDev(t, faultdev.Writes(&c))
	if failed := runScript(t, d); failed != nil {
		t.Fatalf("Counter injected failures %v", failed)
	}
	if got := c.Count(); got != 4 {
		t.Errorf("Count() of writes = %d; want 4", got)
	}
}

func TestMissingCapabilities(t *testing.T) {
	m := device.NewMem(1 << 16)
	d := faultdev.Wrap(plain{m}, nil)
	if l := device.LimitsOf(d); l.MaxWriteZeroes != 0 || l.MaxDiscard != 0 {
		t.Errorf("LimitsOf(wrapper of a plain device) = %+v; want no write-zeroes or discard", l)
	}
	if err := d.WriteZeroes(0, 512); !errors.Is(err, device.ErrNotSupported) {
		t.Errorf("WriteZeroes: err = %v; want ErrNotSupported", err)
	}
	if err := d.Discard(0, 512); !errors.Is(err, device.ErrNotSupported) {
		t.Errorf("Discard: err = %v; want ErrNotSupported", err)
	}
	if err := d.Flush(); err != nil {
		t.Errorf("Flush on a device without a cache: %v", err)
	}
	ext, err := d.Extents(100, 1000)
	if want := []device.Extent{{Off: 100, Len: 1000}}; err != nil || !slices.Equal(ext, want) {
		t.Errorf("Extents(100, 1000) = %v, %v; want %v, nil", ext, err, want)
	}
	if _, err := d.Extents(0, 0); !errors.Is(err, device.ErrOutOfRange) {
		t.Errorf("Extents(0, 0): err = %v; want ErrOutOfRange", err)
	}
	if _, err := d.Extents(1<<16-10, 20); !errors.Is(err, device.ErrOutOfRange) {
		t.Errorf("Extents crossing Size: err = %v; want ErrOutOfRange", err)
	}
	if got, want := device.IdentityOf(d), device.IdentityOf(plain{m}); got != want {
		t.Errorf("IdentityOf = %q; want %q", got, want)
	}
	d.Close()
	if err := d.Flush(); !errors.Is(err, device.ErrClosed) {
		t.Errorf("Flush after Close: err = %v; want ErrClosed", err)
	}
}

func TestOpClass(t *testing.T) {
	tests := []struct {
		kind          device.Op
		read, written bool
	}{
		{device.OpRead, true, false},
		{device.OpExtents, true, false},
		{device.OpWrite, false, true},
		{device.OpWriteZeroes, false, true},
		{device.OpDiscard, false, true},
		{device.OpFlush, false, false},
	}
	for _, tt := range tests {
		o := faultdev.Op{Kind: tt.kind}
		if o.IsRead() != tt.read || o.IsWrite() != tt.written {
			t.Errorf("Op{%s}.IsRead(), IsWrite() = %v, %v; want %v, %v", tt.kind, o.IsRead(), o.IsWrite(), tt.read, tt.written)
		}
	}
}

// TestConformance runs the device suite through a Device that injects
// nothing, over a Mem, over a device with no optional capability (to check
// the wrapper's fallbacks and Limits), and over an aligned device.
func TestConformance(t *testing.T) {
	tests := []struct {
		name string
		open func(size int64) device.Device
	}{
		{"Mem", func(size int64) device.Device { return device.NewMem(size) }},
		{"Minimal", func(size int64) device.Device { return devicetest.Minimal(device.NewMem(size)) }},
		{"Strict4096", func(size int64) device.Device {
			size = (size + 4095) &^ 4095
			return devicetest.Strict(nil, device.NewMem(size), device.Limits{LogicalBlockSize: 4096, OffsetAlign: 4096, MemAlign: 512, MaxTransfer: 256 << 10, MaxWriteZeroes: 64 << 10, MaxDiscard: 64 << 10})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			devicetest.Run(t, func(t *testing.T, size int64) device.Device {
				var c faultdev.Counter
				d := faultdev.Wrap(tt.open(size), &c)
				t.Cleanup(func() { d.Close() })
				return d
			})
		})
	}
}

// TestShortIO checks that Short transfers half of a read or write, with
// the injected error or with none.
func TestShortIO(t *testing.T) {
	for _, withErr := range []bool{false, true} {
		var cause error
		if withErr {
			cause = syscall.EIO
		}
		mem := device.NewMemFrom(bytes.Repeat([]byte{7}, 8192))
		d := faultdev.Wrap(mem, faultdev.ShortIO(cause))
		p := make([]byte, 4096)
		n, err := d.ReadAt(p, 0)
		if n != 2048 || (err != nil) != withErr || withErr && !errors.Is(err, faultdev.ErrInjected) {
			t.Errorf("short ReadAt (error %v) = %d, %v; want 2048 and an error %v", withErr, n, err, withErr)
		}
		if p[2047] != 7 || p[2048] != 0 {
			t.Errorf("short ReadAt filled p[2047], p[2048] = %d, %d; want 7, 0", p[2047], p[2048])
		}
		n, err = d.WriteAt(bytes.Repeat([]byte{9}, 4096), 4096)
		if n != 2048 || (err != nil) != withErr {
			t.Errorf("short WriteAt (error %v) = %d, %v; want 2048 and an error %v", withErr, n, err, withErr)
		}
		got := make([]byte, 4096)
		mem.ReadAt(got, 4096)
		if !bytes.Equal(got[:2048], bytes.Repeat([]byte{9}, 2048)) || got[2048] != 7 {
			t.Errorf("short WriteAt wrote %d..., %d at the half; want the first half only", got[0], got[2048])
		}
		if err := d.WriteZeroes(0, 4096); err != nil {
			t.Errorf("WriteZeroes under ShortIO = %v; want it untouched", err)
		}
		if d.Injected() != 2 {
			t.Errorf("Injected() = %d; want 2", d.Injected())
		}
	}
}
