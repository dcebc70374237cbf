// Package devicetest checks that a device.Device keeps its contract, in the
// spirit of testing/fstest, and offers awkward wrappers in the spirit of
// testing/iotest for testing code that uses devices.
//
// Every back end runs the conformance suite from its tests:
//
//	func TestConformance(t *testing.T) {
//		devicetest.Run(t, func(t *testing.T, size int64) device.Device {
//			d := device.NewMem(size)
//			t.Cleanup(func() { d.Close() })
//			return d
//		})
//	}
package devicetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"testing"

	"github.com/kcopyd/kcopyd/device"
)

// MinSize is the smallest device the suite accepts: 64 KiB.
const MinSize = 64 << 10

// window is how much of a device, from its start, the data tests use.
const window = 1 << 20

// OpenFunc returns a new device for one subtest. size is a hint: a back end
// with a fixed or rounded size may return a device of another size, as
// long as it is at least MinSize bytes and, when the device constrains
// OffsetAlign, every request ending at its Size is accepted. The suite asks
// for sizes that are not multiples of 4096 to test partial blocks; a back
// end with alignment constraints should round them up.
//
// The device's initial contents do not matter. OpenFunc owns the device: it
// registers any cleanup with t.Cleanup. The suite closes some devices
// itself, so a cleanup that closes the device must accept an error
// wrapping device.ErrClosed. OpenFunc may call t.Skip.
type OpenFunc func(t *testing.T, size int64) device.Device

// Run runs the conformance suite on devices from open, each subtest on a
// fresh device. Subtests check:
//
//   - round trips of ReadAt and WriteAt at awkward offsets and lengths,
//     leaving neighbouring bytes alone;
//   - reads at, after and across the end (io.EOF, short count) and writes
//     across the end (ErrOutOfRange, nothing written), negative and huge
//     offsets;
//   - ErrAlignment, with no I/O, for requests that break OffsetAlign or
//     MemAlign;
//   - parallel writers and readers on disjoint ranges (run under -race);
//   - WriteZeroes, Discard, Flush and Extents when the device implements
//     them, and that Limits agrees with what it implements;
//   - CopyRange, when the device implements device.RangeCopier, from a
//     second device made by open: the copied bytes arrive, a refusal
//     (ErrNotSupported) and a request past the end change nothing;
//   - a stable Identity, and ErrClosed after Close.
//
// Requests respect the device's Limits: buffers are aligned to MemAlign,
// offsets and lengths to OffsetAlign, and lengths stay within MaxTransfer,
// MaxWriteZeroes and MaxDiscard.
func Run(t *testing.T, open OpenFunc) {
	t.Helper()
	tests := []struct {
		name string
		size int64
		fn   func(*tester)
	}{
		{"Limits", window, (*tester).testLimits},
		{"RoundTrip", window + 3*4096 + 1234, (*tester).testRoundTrip},
		{"ZeroLength", window, (*tester).testZeroLength},
		{"End", window + 3*4096 + 1234, (*tester).testEnd},
		{"EndAligned", window, (*tester).testEnd},
		{"Negative", window, (*tester).testNegative},
		{"Alignment", window, (*tester).testAlignment},
		{"Parallel", window, (*tester).testParallel},
		{"WriteZeroes", window + 1234, (*tester).testWriteZeroes},
		{"Discard", window + 1234, (*tester).testDiscard},
		{"Flush", window, (*tester).testFlush},
		{"CopyRange", window + 1234, (*tester).testCopyRange},
		{"Starter", window, (*tester).testStarter},
		{"Extents", window + 1234, (*tester).testExtents},
		{"Identity", window, (*tester).testIdentity},
		{"Close", window, (*tester).testClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(newTester(t, open, tt.size))
		})
	}
}

// tester holds one subtest's device and its limits.
type tester struct {
	t    *testing.T
	open OpenFunc
	d    device.Device
	lim  device.Limits
	size int64
	unit int64 // offset and length alignment, at least 1
	mem  int   // buffer address alignment, at least 1
	maxN int64 // the longest transfer the suite issues, a multiple of unit
	win  int64 // the data window [0, win), a multiple of unit
}

func newTester(t *testing.T, open OpenFunc, size int64) *tester {
	t.Helper()
	d := open(t, size)
	if d == nil {
		t.Fatalf("open(%d) returned a nil device", size)
	}
	tt := &tester{t: t, open: open, d: d, lim: device.LimitsOf(d), size: d.Size()}
	if tt.size < MinSize {
		t.Fatalf("Size() = %d; the suite needs at least %d bytes", tt.size, MinSize)
	}
	tt.unit = int64(max(tt.lim.OffsetAlign, 1))
	tt.mem = max(tt.lim.MemAlign, 1)
	if tt.lim.MemAlign > 4096 || tt.lim.MemAlign&(tt.lim.MemAlign-1) != 0 {
		t.Fatalf("Limits().MemAlign = %d; want a power of two no larger than 4096", tt.lim.MemAlign)
	}
	tt.maxN = 1 << 20
	if tt.lim.MaxTransfer > 0 {
		tt.maxN = min(tt.maxN, tt.lim.MaxTransfer)
	}
	tt.maxN = tt.down(tt.maxN)
	if tt.maxN <= 0 {
		t.Fatalf("Limits() = %+v: MaxTransfer is smaller than OffsetAlign", tt.lim)
	}
	tt.win = tt.down(min(tt.size, window))
	if tt.win < 16*tt.unit {
		t.Fatalf("Limits().OffsetAlign = %d is too large for the suite's %d-byte window", tt.unit, tt.win)
	}
	return tt
}

// down rounds x down to a multiple of the unit.
func (tt *tester) down(x int64) int64 { return x / tt.unit * tt.unit }

// buf returns a zeroed, suitably aligned buffer of n bytes.
func (tt *tester) buf(n int64) []byte { return device.AlignedBuf(int(n), tt.mem) }

// read reads n bytes at off, in calls of at most maxN bytes, and fails the
// test on any error or short count.
func (tt *tester) read(off, n int64) []byte {
	tt.t.Helper()
	out := make([]byte, n)
	p := tt.buf(min(n, tt.maxN))
	for done := int64(0); done < n; {
		chunk := p[:min(n-done, tt.maxN)]
		m, err := tt.d.ReadAt(chunk, off+done)
		end := off + done + int64(len(chunk))
		if m != len(chunk) || err != nil && !(err == io.EOF && end == tt.size) {
			tt.t.Fatalf("ReadAt(%d bytes, %d) = %d, %v; want %d, nil", len(chunk), off+done, m, err, len(chunk))
		}
		copy(out[done:], chunk)
		done += int64(m)
	}
	return out
}

// write writes data at off in calls of at most maxN bytes, and fails the
// test on any error or short count.
func (tt *tester) write(off int64, data []byte) {
	tt.t.Helper()
	p := tt.buf(min(int64(len(data)), tt.maxN))
	for done := int64(0); done < int64(len(data)); {
		chunk := p[:copy(p, data[done:])]
		if m, err := tt.d.WriteAt(chunk, off+done); m != len(chunk) || err != nil {
			tt.t.Fatalf("WriteAt(%d bytes, %d) = %d, %v; want %d, nil", len(chunk), off+done, m, err, len(chunk))
		}
		done += int64(len(chunk))
	}
}

// check compares the device's bytes at off with want and reports the first
// difference.
func (tt *tester) check(what string, off int64, want []byte) {
	tt.t.Helper()
	got := tt.read(off, int64(len(want)))
	if i := firstDiff(got, want); i >= 0 {
		tt.t.Fatalf("%s: byte %d (device offset %d) = %#02x; want %#02x", what, i, off+int64(i), got[i], want[i])
	}
}

// fill writes a fresh pattern over [off, off+n) and returns it.
func (tt *tester) fill(seed uint64, off, n int64) []byte {
	tt.t.Helper()
	p := pattern(seed, off, n)
	tt.write(off, p)
	return p
}

// firstDiff is device.FirstDiff: -1 when a and b are equal.
var firstDiff = device.FirstDiff

// pattern returns Pattern(seed, off, n) for the suite's int64 lengths.
func pattern(seed uint64, off, n int64) []byte { return Pattern(seed, off, int(n)) }

func (tt *tester) testLimits() {
	t, lim := tt.t, tt.lim
	if lim.LogicalBlockSize < 0 || lim.OffsetAlign < 0 || lim.MaxTransfer < 0 || lim.MaxWriteZeroes < 0 || lim.MaxDiscard < 0 {
		t.Errorf("Limits() = %+v; want no negative field", lim)
	}
	if _, ok := tt.d.(device.WriteZeroer); !ok && lim.MaxWriteZeroes != 0 {
		t.Errorf("Limits().MaxWriteZeroes = %d on a device that is no WriteZeroer; want 0", lim.MaxWriteZeroes)
	}
	if _, ok := tt.d.(device.Discarder); !ok && lim.MaxDiscard != 0 {
		t.Errorf("Limits().MaxDiscard = %d on a device that is no Discarder; want 0", lim.MaxDiscard)
	}
	if lim.MaxTransfer > 0 && lim.MaxTransfer%tt.unit != 0 {
		t.Errorf("Limits().MaxTransfer = %d; want a multiple of OffsetAlign %d", lim.MaxTransfer, tt.unit)
	}
	if got := device.LimitsOf(tt.d); got != lim {
		t.Errorf("Limits() changed from %+v to %+v", lim, got)
	}
	if got := tt.d.Size(); got != tt.size {
		t.Errorf("Size() changed from %d to %d", tt.size, got)
	}
}

// span is a request of Len bytes at Off.
type span struct{ Off, Len int64 }

// awkward returns ranges inside [0, tt.win) at offsets and lengths that
// straddle 512- and 4096-byte boundaries, scaled to the device's unit.
func (tt *tester) awkward() []span {
	u, w := tt.unit, tt.win
	var spans []span
	if u == 1 {
		spans = []span{
			{0, 1}, {1, 1}, {511, 2}, {513, 7}, {4095, 2}, {4096 + 7, 2*4096 + 5},
			{3*4096 - 1, 4096 + 2}, {65535, 65537}, {w/2 + 3, w/4 + 11}, {w - 13, 13}, {0, w},
		}
	} else {
		spans = []span{
			{0, u}, {u, u}, {3 * u, 5 * u}, {7 * u, 9 * u}, {w/2 - u, 2 * u},
			{w/2 + 3*u, w/4 + u}, {w - u, u}, {w - 5*u, 3 * u}, {0, w},
		}
	}
	for i := range spans {
		spans[i].Len = min(spans[i].Len, tt.maxN)
	}
	return spans
}

func (tt *tester) testRoundTrip() {
	t := tt.t
	model := tt.fill(1, 0, tt.win)
	tt.check("after filling the window", 0, model)
	for i, s := range tt.awkward() {
		data := pattern(uint64(100+i), s.Off, s.Len)
		p := tt.buf(s.Len)
		copy(p, data)
		if n, err := tt.d.WriteAt(p, s.Off); n != len(p) || err != nil {
			t.Fatalf("WriteAt(%d bytes, %d) = %d, %v; want %d, nil", len(p), s.Off, n, err, len(p))
		}
		if !bytes.Equal(p, data) {
			t.Fatalf("WriteAt(%d bytes, %d) modified its buffer", len(p), s.Off)
		}
		copy(model[s.Off:], data)
		clear(p)
		if n, err := tt.d.ReadAt(p, s.Off); n != len(p) || err != nil {
			t.Fatalf("ReadAt(%d bytes, %d) = %d, %v; want %d, nil", len(p), s.Off, n, err, len(p))
		}
		if i := firstDiff(p, data); i >= 0 {
			t.Fatalf("ReadAt(%d bytes, %d) after WriteAt: byte %d = %#02x; want %#02x", len(p), s.Off, i, p[i], data[i])
		}
		tt.check(fmt.Sprintf("window after WriteAt(%d bytes, %d)", s.Len, s.Off), 0, model)
	}
	// Reads at the awkward ranges see the model too.
	for _, s := range tt.awkward() {
		tt.check(fmt.Sprintf("ReadAt(%d bytes, %d)", s.Len, s.Off), s.Off, model[s.Off:s.Off+s.Len])
	}
}

func (tt *tester) testZeroLength() {
	t := tt.t
	model := tt.fill(2, 0, tt.unit)
	if n, err := tt.d.ReadAt(nil, 0); n != 0 || err != nil {
		t.Errorf("ReadAt(nil, 0) = %d, %v; want 0, nil", n, err)
	}
	if n, err := tt.d.WriteAt(nil, 0); n != 0 || err != nil {
		t.Errorf("WriteAt(nil, 0) = %d, %v; want 0, nil", n, err)
	}
	if n, err := tt.d.WriteAt([]byte{}, tt.unit); n != 0 || err != nil {
		t.Errorf("WriteAt([]byte{}, %d) = %d, %v; want 0, nil", tt.unit, n, err)
	}
	tt.check("after zero-length writes", 0, model)
}

func (tt *tester) testEnd() {
	t, u, size := tt.t, tt.unit, tt.size
	// The last whole unit before Size, and the model of [eoff, size).
	last := (size - 1) / u * u
	eoff := max(last-16*u, 0)
	model := tt.fill(3, eoff, size-eoff)
	tt.check("end of device after filling it", eoff, model)
	if size%u != 0 {
		t.Logf("Size() = %d is not a multiple of OffsetAlign %d: requests ending at Size have unaligned lengths", size, u)
	}

	// Reads at and after the end.
	p := tt.buf(2 * u)
	after := (size + u - 1) / u * u // the first aligned offset at or after Size
	for _, off := range []int64{after, after + u, math.MaxInt64 / u * u} {
		if n, err := tt.d.ReadAt(p, off); n != 0 || err != io.EOF {
			t.Errorf("ReadAt(%d bytes, %d) on a %d-byte device = %d, %v; want 0, io.EOF", len(p), off, size, n, err)
		}
	}

	// A read crossing the end returns what is there and io.EOF.
	for _, off := range []int64{last, last - u, last - 4*u} {
		p := tt.buf(min(5*u, tt.maxN))
		want := size - off
		if int64(len(p)) <= want {
			continue
		}
		n, err := tt.d.ReadAt(p, off)
		if int64(n) != want || err != io.EOF {
			t.Errorf("ReadAt(%d bytes, %d) on a %d-byte device = %d, %v; want %d, io.EOF", len(p), off, size, n, err, want)
			continue
		}
		if i := firstDiff(p[:n], model[off-eoff:]); i >= 0 {
			t.Errorf("ReadAt(%d bytes, %d) crossing the end: byte %d = %#02x; want %#02x", len(p), off, i, p[i], model[off-eoff+int64(i)])
		}
	}

	// Writes crossing or after the end write nothing.
	bad := tt.buf(2 * u)
	copy(bad, pattern(99, 0, 2*u))
	for _, off := range []int64{last, after, after + u, math.MaxInt64 / u * u, math.MaxInt64/u*u - u} {
		if off <= size-int64(len(bad)) {
			continue // fits: not a crossing write
		}
		if n, err := tt.d.WriteAt(bad, off); n != 0 || !errors.Is(err, device.ErrOutOfRange) {
			t.Errorf("WriteAt(%d bytes, %d) on a %d-byte device = %d, %v; want 0, ErrOutOfRange", len(bad), off, size, n, err)
		}
	}
	tt.check("end of device after rejected writes", eoff, model)

	// A write ending exactly at the end succeeds.
	tail := pattern(4, last, size-last)
	tt.write(last, tail)
	copy(model[last-eoff:], tail)
	tt.check("end of device after writing its last bytes", eoff, model)
}

func (tt *tester) testNegative() {
	t, u := tt.t, tt.unit
	model := tt.fill(5, 0, 4*u)
	p := tt.buf(u)
	for _, off := range []int64{-u, -4 * u, math.MinInt64 / u * u} {
		if n, err := tt.d.ReadAt(p, off); n != 0 || !errors.Is(err, device.ErrOutOfRange) {
			t.Errorf("ReadAt(%d bytes, %d) = %d, %v; want 0, ErrOutOfRange", len(p), off, n, err)
		}
		if n, err := tt.d.WriteAt(p, off); n != 0 || !errors.Is(err, device.ErrOutOfRange) {
			t.Errorf("WriteAt(%d bytes, %d) = %d, %v; want 0, ErrOutOfRange", len(p), off, n, err)
		}
	}
	if n, err := tt.d.ReadAt(tt.buf(2*u), -u); n != 0 || err == nil {
		t.Errorf("ReadAt(%d bytes, %d) crossing offset 0 = %d, %v; want 0 and an error", 2*u, -u, n, err)
	}
	tt.check("after rejected negative writes", 0, model)
}

func (tt *tester) testAlignment() {
	t, u := tt.t, tt.unit
	if u == 1 && tt.mem == 1 {
		t.Skip("device has no alignment constraints")
	}
	model := tt.fill(6, 0, 8*u)
	junk := pattern(66, 0, 4*u+int64(tt.mem))
	type req struct {
		p   []byte
		off int64
	}
	var reqs []req
	if u > 1 {
		reqs = append(reqs,
			req{tt.buf(u), 1},           // misaligned offset
			req{tt.buf(u), u / 2},       // misaligned offset
			req{tt.buf(u + 1), u},       // misaligned length
			req{tt.buf(2*u - 1), 2 * u}, // misaligned length
		)
	}
	if tt.mem > 1 {
		b := tt.buf(2*u + int64(tt.mem))
		reqs = append(reqs, req{b[1 : 1+u], u}, req{b[tt.mem/2 : int64(tt.mem/2)+2*u], 2 * u})
	}
	for _, r := range reqs {
		copy(r.p, junk)
		if n, err := tt.d.WriteAt(r.p, r.off); n != 0 || !errors.Is(err, device.ErrAlignment) {
			t.Errorf("WriteAt(%d bytes at address %#x, %d) = %d, %v; want 0, ErrAlignment", len(r.p), addr(r.p), r.off, n, err)
		}
		if n, err := tt.d.ReadAt(r.p, r.off); n != 0 || !errors.Is(err, device.ErrAlignment) {
			t.Errorf("ReadAt(%d bytes at address %#x, %d) = %d, %v; want 0, ErrAlignment", len(r.p), addr(r.p), r.off, n, err)
		}
		if !bytes.Equal(r.p, junk[:len(r.p)]) {
			t.Errorf("ReadAt(%d bytes, %d) failed with ErrAlignment but changed its buffer", len(r.p), r.off)
		}
	}
	if u > 1 {
		if wz, ok := tt.d.(device.WriteZeroer); ok && tt.lim.MaxWriteZeroes > 0 {
			for _, s := range []span{{1, u}, {u, u + 1}} {
				if err := wz.WriteZeroes(s.Off, s.Len); !errors.Is(err, device.ErrAlignment) {
					t.Errorf("WriteZeroes(%d, %d) = %v; want ErrAlignment", s.Off, s.Len, err)
				}
			}
		}
	}
	tt.check("after misaligned requests", 0, model)
}

func (tt *tester) testParallel() {
	t := tt.t
	const writers, rounds = 8, 4
	region := tt.down(tt.win / writers)
	piece := max(tt.down(min(region/4, tt.maxN)), tt.unit)
	var wg sync.WaitGroup
	// Readers read the whole window while the writers work; what they
	// see is unspecified, but the reads must succeed.
	stop := make(chan struct{})
	for r := range 2 {
		wg.Go(func() {
			p := tt.buf(piece)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				off := int64(i*(r+1)) % (tt.win / piece) * piece
				if n, err := tt.d.ReadAt(p, off); n != len(p) || err != nil {
					t.Errorf("concurrent ReadAt(%d bytes, %d) = %d, %v; want %d, nil", len(p), off, n, err, len(p))
					return
				}
			}
		})
	}
	var writersWG sync.WaitGroup
	for w := range writers {
		writersWG.Go(func() {
			base := int64(w) * region
			p := tt.buf(piece)
			for round := range rounds {
				seed := uint64(1000 + w*rounds + round)
				for off := base; off < base+region; off += piece {
					n := min(piece, base+region-off)
					copy(p, pattern(seed, off, n))
					if m, err := tt.d.WriteAt(p[:n], off); m != int(n) || err != nil {
						t.Errorf("concurrent WriteAt(%d bytes, %d) = %d, %v; want %d, nil", n, off, m, err, n)
						return
					}
				}
				for off := base; off < base+region; off += piece {
					n := min(piece, base+region-off)
					if m, err := tt.d.ReadAt(p[:n], off); m != int(n) || err != nil {
						t.Errorf("concurrent ReadAt(%d bytes, %d) = %d, %v; want %d, nil", n, off, m, err, n)
						return
					}
					if i := firstDiff(p[:n], pattern(seed, off, n)); i >= 0 {
						t.Errorf("writer %d round %d: byte at %d differs from what it wrote", w, round, off+int64(i))
						return
					}
				}
			}
		})
	}
	writersWG.Wait()
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}
	for w := range writers {
		base := int64(w) * region
		tt.check(fmt.Sprintf("writer %d's region", w), base, pattern(uint64(1000+w*rounds+rounds-1), base, region))
	}
}

// area is a range of the device [Off, Off+len(Model)) and its expected
// contents.
type area struct {
	Off   int64
	Model []byte
}

// areas fills the data window and, when the device is larger, its last
// 64 KiB, and returns both.
func (tt *tester) areas(seed uint64) []area {
	as := []area{{0, tt.fill(seed, 0, tt.win)}}
	if b := max(tt.win, tt.down(tt.size-64<<10)); b < tt.size {
		as = append(as, area{b, tt.fill(seed+1, b, tt.size-b)})
	}
	return as
}

// checkAreas compares the areas with the device.
func (tt *tester) checkAreas(what string, as []area) {
	tt.t.Helper()
	for _, a := range as {
		tt.check(fmt.Sprintf("%s: range [%d, +%d)", what, a.Off, len(a.Model)), a.Off, a.Model)
	}
}

// zeroSpans returns ranges to zero or discard inside [a, a+n), some of
// them ending at a+n, none longer than maxLen.
func (tt *tester) zeroSpans(a, n, maxLen int64) []span {
	u, b := tt.unit, a+n
	var spans []span
	if u == 1 {
		spans = []span{{a + 1, 10}, {a + 4095, 4098}, {a + 8192, 8192}, {a + 5*4096 + 100, 9 * 4096}, {b - 5, 5}, {b - 4096 - 1234, 4096 + 1234}}
	} else {
		last := (b - 1) / u * u
		spans = []span{{a + u, u}, {a + 3*u, 5 * u}, {a + 16*u, 64 * u}, {last - 2*u, b - last + 2*u}}
	}
	var out []span
	for _, s := range spans {
		s.Len = min(s.Len, maxLen)
		if s.Off >= a && s.Len > 0 && s.Off+s.Len <= b {
			out = append(out, s)
		}
	}
	return out
}

func (tt *tester) testWriteZeroes() {
	t := tt.t
	wz, ok := tt.d.(device.WriteZeroer)
	if !ok {
		t.Skip("device does not implement device.WriteZeroer")
	}
	if tt.lim.MaxWriteZeroes == 0 {
		t.Skip("Limits().MaxWriteZeroes = 0: no native write-zeroes")
	}
	as := tt.areas(7)
	first := true
	for _, a := range as {
		for _, s := range tt.zeroSpans(a.Off, int64(len(a.Model)), tt.lim.MaxWriteZeroes) {
			err := wz.WriteZeroes(s.Off, s.Len)
			if first && errors.Is(err, device.ErrNotSupported) {
				tt.checkAreas("after WriteZeroes failed with ErrNotSupported", as)
				t.Skipf("WriteZeroes(%d, %d) = %v: not supported here", s.Off, s.Len, err)
			}
			first = false
			if err != nil {
				t.Fatalf("WriteZeroes(%d, %d) = %v; want nil", s.Off, s.Len, err)
			}
			clear(a.Model[s.Off-a.Off : s.Off-a.Off+s.Len])
			tt.checkAreas(fmt.Sprintf("after WriteZeroes(%d, %d)", s.Off, s.Len), as)
		}
	}
	// Ranges crossing the end, or negative, change nothing.
	last := tt.down(tt.size - 1)
	a := as[len(as)-1]
	tail := pattern(9, last, tt.size-last)
	tt.write(last, tail)
	copy(a.Model[last-a.Off:], tail)
	for _, s := range []span{{last, 2 * tt.unit}, {tt.down(tt.size + tt.unit), tt.unit}, {-tt.unit, 2 * tt.unit}, {math.MaxInt64 / tt.unit * tt.unit, tt.unit}} {
		if err := wz.WriteZeroes(s.Off, s.Len); !errors.Is(err, device.ErrOutOfRange) {
			t.Errorf("WriteZeroes(%d, %d) on a %d-byte device = %v; want ErrOutOfRange", s.Off, s.Len, tt.size, err)
		}
	}
	tt.checkAreas("after rejected WriteZeroes", as)
}

func (tt *tester) testDiscard() {
	t := tt.t
	dd, ok := tt.d.(device.Discarder)
	if !ok {
		t.Skip("device does not implement device.Discarder")
	}
	if tt.lim.MaxDiscard == 0 {
		t.Skip("Limits().MaxDiscard = 0: the device cannot discard")
	}
	as := tt.areas(10)
	first := true
	for _, a := range as {
		for _, s := range tt.zeroSpans(a.Off, int64(len(a.Model)), tt.lim.MaxDiscard) {
			err := dd.Discard(s.Off, s.Len)
			if first && errors.Is(err, device.ErrNotSupported) {
				tt.checkAreas("after Discard failed with ErrNotSupported", as)
				t.Skipf("Discard(%d, %d) = %v: not supported here", s.Off, s.Len, err)
			}
			first = false
			if err != nil {
				t.Fatalf("Discard(%d, %d) = %v; want nil", s.Off, s.Len, err)
			}
			// The discarded range is unspecified; the rest must
			// stay as it was.
			copy(a.Model[s.Off-a.Off:], tt.read(s.Off, s.Len))
			tt.checkAreas(fmt.Sprintf("after Discard(%d, %d)", s.Off, s.Len), as)
		}
	}
	last := tt.down(tt.size - 1)
	for _, s := range []span{{last, 2 * tt.unit}, {tt.down(tt.size + tt.unit), tt.unit}, {-tt.unit, 2 * tt.unit}, {math.MaxInt64 / tt.unit * tt.unit, tt.unit}} {
		if err := dd.Discard(s.Off, s.Len); !errors.Is(err, device.ErrOutOfRange) {
			t.Errorf("Discard(%d, %d) on a %d-byte device = %v; want ErrOutOfRange", s.Off, s.Len, tt.size, err)
		}
	}
	tt.checkAreas("after rejected Discards", as)
}

func (tt *tester) testFlush() {
	f, ok := tt.d.(device.Flusher)
	if !ok {
		tt.t.Skip("device does not implement device.Flusher")
	}
	model := tt.fill(11, 0, tt.win)
	if err := f.Flush(); err != nil {
		tt.t.Fatalf("Flush() = %v; want nil", err)
	}
	tt.check("after Flush", 0, model)
	// Flush in parallel with writes.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			if err := f.Flush(); err != nil {
				tt.t.Errorf("concurrent Flush() = %v; want nil", err)
			}
		})
		wg.Go(func() {
			off := int64(i) * tt.down(tt.win/4)
			p := tt.buf(tt.unit)
			copy(p, model[off:])
			if n, err := tt.d.WriteAt(p, off); n != len(p) || err != nil {
				tt.t.Errorf("WriteAt(%d bytes, %d) during Flush = %d, %v; want %d, nil", len(p), off, n, err, len(p))
			}
		})
	}
	wg.Wait()
	tt.check("after concurrent Flush", 0, model)
}

func (tt *tester) testCopyRange() {
	t := tt.t
	rc, ok := tt.d.(device.RangeCopier)
	if !ok {
		t.Skip("device does not implement device.RangeCopier")
	}
	src := newTester(t, tt.open, tt.size)
	data := src.fill(12, 0, src.win)
	model := tt.fill(13, 0, tt.win)
	u := max(tt.unit, src.unit)
	spans := []struct{ src, dst, n int64 }{
		{0, 0, 4 * u},
		{8 * u, 4 * u, tt.down(tt.win/2) - 8*u},
		{u, tt.down(tt.win/2) + 2*u, 3 * u},
	}
	if u == 1 {
		spans = append(spans, struct{ src, dst, n int64 }{4097, tt.win - 5000, 4999})
	}
	for _, s := range spans {
		n, err := rc.CopyRange(src.d, s.src, s.dst, s.n)
		if n < 0 || n > s.n || (err == nil) != (n == s.n) {
			t.Fatalf("CopyRange(src, %d, %d, %d) = %d, %v; want %d, nil or fewer bytes with an error", s.src, s.dst, s.n, n, err, s.n)
		}
		copy(model[s.dst:s.dst+n], data[s.src:s.src+n])
		if errors.Is(err, device.ErrNotSupported) {
			tt.check("after CopyRange failed with ErrNotSupported", 0, model)
			t.Skipf("CopyRange(src, %d, %d, %d) = %d, %v: not supported here", s.src, s.dst, s.n, n, err)
		}
		if err != nil {
			t.Fatalf("CopyRange(src, %d, %d, %d) = %d, %v; want %d, nil", s.src, s.dst, s.n, n, err, s.n)
		}
		tt.check(fmt.Sprintf("after CopyRange(src, %d, %d, %d)", s.src, s.dst, s.n), 0, model)
	}
	last := tt.down(tt.size - 1)
	for _, s := range []span{{last, 2 * tt.unit}, {-tt.unit, 2 * tt.unit}} {
		if n, err := rc.CopyRange(src.d, 0, s.Off, s.Len); n != 0 || !errors.Is(err, device.ErrOutOfRange) {
			t.Errorf("CopyRange(src, 0, %d, %d) on a %d-byte device = %d, %v; want 0, ErrOutOfRange", s.Off, s.Len, tt.size, n, err)
		}
	}
	tt.check("after rejected CopyRange calls", 0, model)
}

// extents walks Extents over [off, off+n), asking again where a list
// ends early, checks each list's shape, and returns the whole list.
func (tt *tester) extents(e device.Extenter, off, n int64) []device.Extent {
	t := tt.t
	t.Helper()
	var all []device.Extent
	for pos, end := off, off+n; pos < end; {
		list, err := e.Extents(pos, end-pos)
		if err != nil {
			t.Fatalf("Extents(%d, %d) = %v", pos, end-pos, err)
		}
		if len(list) == 0 {
			t.Fatalf("Extents(%d, %d) returned no extents and no error", pos, end-pos)
		}
		for i, x := range list {
			switch {
			case x.Off != pos:
				t.Fatalf("Extents(%d, %d)[%d] = %+v; want it to start at %d", off, n, i, x, pos)
			case x.Len <= 0:
				t.Fatalf("Extents(%d, %d)[%d] = %+v; want a positive length", off, n, i, x)
			case x.Off+x.Len > end:
				t.Fatalf("Extents(%d, %d)[%d] = %+v; want it to end by %d", off, n, i, x, end)
			case x.Hole && !x.Zero:
				t.Fatalf("Extents(%d, %d)[%d] = %+v; Hole implies Zero", off, n, i, x)
			}
			pos += x.Len
		}
		all = append(all, list...)
	}
	return all
}

// checkExtents checks that every extent marked Zero reads as zeroes
// and does not overlap data: ranges whose model bytes are not zero.
func (tt *tester) checkExtents(list []device.Extent, base int64, model []byte) {
	t := tt.t
	t.Helper()
	for _, x := range list {
		if !x.Zero {
			continue
		}
		m := model[x.Off-base : x.Off-base+x.Len]
		if i := bytes.IndexFunc(m, func(r rune) bool { return r != 0 }); i >= 0 {
			t.Fatalf("extent %+v covers data written at %d", x, x.Off+int64(i))
		}
		tt.check(fmt.Sprintf("extent %+v", x), x.Off, m)
	}
}

func (tt *tester) testExtents() {
	t, u := tt.t, tt.unit
	e, ok := tt.d.(device.Extenter)
	if !ok {
		t.Skip("device does not implement device.Extenter")
	}
	// Start from zeroes, natively where possible, then write data in
	// a few places.
	model := make([]byte, tt.win)
	zeroed := false
	if wz, ok := tt.d.(device.WriteZeroer); ok && tt.lim.MaxWriteZeroes >= tt.win {
		zeroed = wz.WriteZeroes(0, tt.win) == nil
	}
	if !zeroed {
		tt.write(0, model)
	}
	for _, s := range []span{{0, u}, {64 << 10, 64 << 10}, {tt.win/2 + 3*u, 5 * u}, {tt.win - u, u}} {
		s.Off = tt.down(s.Off)
		s.Len = min(max(tt.down(s.Len), u), tt.maxN)
		p := pattern(12, s.Off, s.Len)
		for i := range p {
			p[i] |= 1 // never zero, so that data is told from zeroes
		}
		tt.write(s.Off, p)
		copy(model[s.Off:], p)
	}
	starts := []int64{0, u, tt.win / 3 / u * u}
	if u == 1 {
		starts = append(starts, 1, 4097)
	}
	for _, off := range starts {
		list := tt.extents(e, off, tt.win-off)
		tt.checkExtents(list, 0, model)
	}
	// A shorter range inside the device.
	list := tt.extents(e, u, 3*u)
	tt.checkExtents(list, 0, model)
	// The end of the device.
	if tt.size > tt.win {
		eoff := tt.down(tt.size - 1)
		tt.write(eoff, bytes.Repeat([]byte{0xa5}, int(tt.size-eoff)))
		list := tt.extents(e, eoff, tt.size-eoff)
		if list[0].Zero {
			t.Errorf("Extents(%d, %d) = %+v; want data at the end, which was written", eoff, tt.size-eoff, list)
		}
	}
	for _, s := range []span{{tt.down(tt.size - 1), 2 * u}, {tt.down(tt.size + u), u}, {-u, 2 * u}} {
		if _, err := e.Extents(s.Off, s.Len); !errors.Is(err, device.ErrOutOfRange) {
			t.Errorf("Extents(%d, %d) on a %d-byte device = %v; want ErrOutOfRange", s.Off, s.Len, tt.size, err)
		}
	}
}

func (tt *tester) testIdentity() {
	t := tt.t
	id := device.IdentityOf(tt.d)
	if id == "" {
		t.Fatal("IdentityOf(d) is empty")
	}
	if x, ok := tt.d.(device.Identifier); ok {
		if got := x.Identity(); got != id {
			t.Errorf("Identity() = %q; IdentityOf = %q", got, id)
		}
	}
	tt.fill(13, 0, tt.unit)
	if got := device.IdentityOf(tt.d); got != id {
		t.Errorf("IdentityOf(d) changed from %q to %q", id, got)
	}
	if device.Name(tt.d) == "" {
		t.Errorf("Name(d) is empty")
	}
}

func (tt *tester) testClose() {
	t, u := tt.t, tt.unit
	tt.fill(14, 0, u)
	if err := tt.d.Close(); err != nil {
		t.Fatalf("Close() = %v; want nil", err)
	}
	p := tt.buf(u)
	if n, err := tt.d.ReadAt(p, 0); n != 0 || !errors.Is(err, device.ErrClosed) {
		t.Errorf("ReadAt after Close = %d, %v; want 0, ErrClosed", n, err)
	}
	if n, err := tt.d.WriteAt(p, 0); n != 0 || !errors.Is(err, device.ErrClosed) {
		t.Errorf("WriteAt after Close = %d, %v; want 0, ErrClosed", n, err)
	}
	if x, ok := tt.d.(device.WriteZeroer); ok && tt.lim.MaxWriteZeroes > 0 {
		if err := x.WriteZeroes(0, u); !errors.Is(err, device.ErrClosed) {
			t.Errorf("WriteZeroes after Close = %v; want ErrClosed", err)
		}
	}
	if x, ok := tt.d.(device.Discarder); ok && tt.lim.MaxDiscard > 0 {
		if err := x.Discard(0, u); !errors.Is(err, device.ErrClosed) {
			t.Errorf("Discard after Close = %v; want ErrClosed", err)
		}
	}
	if x, ok := tt.d.(device.Flusher); ok {
		if err := x.Flush(); !errors.Is(err, device.ErrClosed) {
			t.Errorf("Flush after Close = %v; want ErrClosed", err)
		}
	}
	if x, ok := tt.d.(device.Extenter); ok {
		if _, err := x.Extents(0, u); !errors.Is(err, device.ErrClosed) {
			t.Errorf("Extents after Close = %v; want ErrClosed", err)
		}
	}
}
