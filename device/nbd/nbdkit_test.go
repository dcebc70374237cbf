package nbd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/devicetest"
	"github.com/kcopyd/kcopyd/device/nbd"
	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }

// writeRead writes a pattern over [off, off+n) in calls of chunk bytes,
// reads it back in calls of a different size, and compares.
func writeRead(t *testing.T, d *nbd.Device, off, n, chunk int64, seed byte) {
	t.Helper()
	want := make([]byte, n)
	pattern(want, off, seed)
	for pos := int64(0); pos < n; pos += chunk {
		p := want[pos:min(pos+chunk, n)]
		if m, err := d.WriteAt(p, off+pos); m != len(p) || err != nil {
			t.Fatalf("WriteAt(%d bytes, %d) = %d, %v; want %d, nil", len(p), off+pos, m, err, len(p))
		}
	}
	got := make([]byte, n)
	rchunk := chunk*3/2 + 512
	for pos := int64(0); pos < n; pos += rchunk {
		p := got[pos:min(pos+rchunk, n)]
		if m, err := d.ReadAt(p, off+pos); m != len(p) || err != nil {
			t.Fatalf("ReadAt(%d bytes, %d) = %d, %v; want %d, nil", len(p), off+pos, m, err, len(p))
		}
	}
	if i := testutil.FirstDiff(got, want); i >= 0 {
		t.Fatalf("byte at %d = %#x; want %#x", off+int64(i), got[i], want[i])
	}
}

func TestMemoryReadWrite(t *testing.T) {
	s := nbdkit(t, "memory", "256M")
	d := open(t, s.URI, nil)
	if got := d.Size(); got != mib(256) {
		t.Fatalf("Size() = %d; want %d", got, mib(256))
	}
	info := d.Info()
	if !info.StructuredReplies || !info.BaseAllocation || !info.FixedNewstyle || info.UsedExportName {
		t.Errorf("Info() = %+v; want structured replies, base:allocation, fixed newstyle, NBD_OPT_GO", info)
	}
	writeRead(t, d, 0, mib(8), 1<<20, 1)
	writeRead(t, d, 12345, 300000, 4097, 2)
	// One call larger than the maximum request: split internally.
	writeRead(t, d, mib(100), mib(80), mib(80), 3)
	// Reads crossing and past the end.
	p := make([]byte, 8192)
	if n, err := d.ReadAt(p, d.Size()-4096); n != 4096 || err != io.EOF {
		t.Errorf("ReadAt across the end = %d, %v; want 4096, EOF", n, err)
	}
	if n, err := d.ReadAt(p, d.Size()); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end = %d, %v; want 0, EOF", n, err)
	}
	if n, err := d.WriteAt(p, d.Size()-4096); n != 0 || !errors.Is(err, device.ErrOutOfRange) {
		t.Errorf("WriteAt across the end = %d, %v; want 0, ErrOutOfRange", n, err)
	}
}

// TestPipelining runs many concurrent callers on one connection and checks
// every byte.
func TestPipelining(t *testing.T) {
	s := nbdkit(t, "--filter=delay", "memory", "64M", "delay-read=5ms", "delay-write=5ms")
	d := open(t, s.URI, &nbd.Config{MaxInFlight: 16})
	checkConcurrent(t, d, 32, 64<<10, 2)
}

// checkConcurrent runs workers goroutines that each write then read back
// their own region in pieces, concurrently.
func checkConcurrent(t *testing.T, d *nbd.Device, workers int, chunk int64, rounds int) {
	t.Helper()
	region := d.Size() / int64(workers)
	region -= region % chunk
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			base := int64(w) * region
			for r := range rounds {
				seed := byte(w*7 + r)
				buf := make([]byte, chunk)
				for off := base; off < base+region; off += chunk {
					pattern(buf, off, seed)
					if _, err := d.WriteAt(buf, off); err != nil {
						errs <- err
						return
					}
				}
				want := make([]byte, chunk)
				for off := base; off < base+region; off += chunk {
					if _, err := d.ReadAt(buf, off); err != nil {
						errs <- err
						return
					}
					pattern(want, off, seed)
					if !bytes.Equal(buf, want) {
						errs <- fmt.Errorf("worker %d round %d: data at %d differs", w, r, off)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestMultiConn(t *testing.T) {
	s := nbdkit(t, "memory", "64M")
	d := open(t, s.URI, &nbd.Config{Connections: 4})
	if got := d.Info().Connections; got != 4 {
		t.Fatalf("Info().Connections = %d; want 4 (nbdkit memory advertises multi-conn)", got)
	}
	checkConcurrent(t, d, 16, 256<<10, 2)
	if err := d.Flush(); err != nil {
		t.Fatalf("Flush() = %v", err)
	}
}

func TestMultiConnRefused(t *testing.T) {
	s := nbdkit(t, "--filter=multi-conn", "memory", "64M", "multi-conn-mode=disable")
	var notes []string
	d := open(t, s.URI, &nbd.Config{Connections: 4, Logf: func(f string, a ...any) { notes = append(notes, fmt.Sprintf(f, a...)) }})
	if got := d.Info().Connections; got != 1 {
		t.Fatalf("Info().Connections = %d; want 1 without NBD_FLAG_CAN_MULTI_CONN", got)
	}
	if len(d.Notes()) != 1 || len(notes) != 1 {
		t.Errorf("Notes() = %q, logged %q; want one note about multi-conn", d.Notes(), notes)
	}
	writeRead(t, d, 0, mib(4), 1<<20, 9)
}

// TestFileCopy copies between two nbdkit file exports (source and target)
// and checks the target file byte for byte.
func TestFileCopy(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	data := make([]byte, mib(24)+4096)
	pattern(data, 0, 5)
	clear(data[mib(4):mib(9)]) // a run of zeroes, left sparse below
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(dst, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	in := open(t, nbdkit(t, "file", src).URI, &nbd.Config{ReadOnly: true})
	out := open(t, nbdkit(t, "file", dst).URI, &nbd.Config{Connections: 2})
	if !in.ReadOnly() || out.ReadOnly() {
		t.Fatalf("ReadOnly() = %v, %v; want true, false", in.ReadOnly(), out.ReadOnly())
	}
	if _, err := in.WriteAt(data[:1], 0); !errors.Is(err, device.ErrReadOnly) {
		t.Errorf("WriteAt on a read-only open = %v; want ErrReadOnly", err)
	}
	copyDevice(t, out, in, 1<<20, 8)
	if err := out.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if i := testutil.FirstDiff(got, data); i >= 0 {
		t.Fatalf("target byte %d = %#x; want %#x", i, got[i], data[i])
	}
}

// copyDevice copies src to dst with workers goroutines and chunk-byte
// requests, zeroing natively where the source reports zero extents.
func copyDevice(tb testing.TB, dst, src *nbd.Device, chunk int64, workers int) {
	tb.Helper()
	size := src.Size()
	work := make(chan int64)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			buf := make([]byte, chunk)
			for off := range work {
				p := buf[:min(chunk, size-off)]
				if _, err := src.ReadAt(p, off); err != nil && err != io.EOF {
					errs <- err
					return
				}
				if _, err := dst.WriteAt(p, off); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for off := int64(0); off < size; {
		ext, err := src.Extents(off, size-off)
		if err != nil {
			tb.Fatal(err)
		}
		for _, e := range ext {
			if e.Zero && dst.Limits().MaxWriteZeroes > 0 {
				if err := dst.WriteZeroes(e.Off, e.Len); err != nil {
					tb.Fatal(err)
				}
			} else {
				for o := e.Off; o < e.Off+e.Len; o += chunk {
					select {
					case work <- o:
					case err := <-errs:
						tb.Fatal(err)
					}
				}
			}
			off = e.Off + e.Len
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

func TestExtentsAndZeroes(t *testing.T) {
	s := nbdkit(t, "memory", "16M")
	d := open(t, s.URI, nil)
	writeRead(t, d, 0, mib(16), 1<<20, 7)
	if err := d.WriteZeroes(mib(2), mib(3)); err != nil {
		t.Fatalf("WriteZeroes = %v", err)
	}
	ext, err := d.Extents(0, mib(16))
	if err != nil {
		t.Fatal(err)
	}
	want := []device.Extent{{Off: 0, Len: mib(2)}, {Off: mib(2), Len: mib(3), Hole: true, Zero: true}, {Off: mib(5), Len: mib(11)}}
	if fmt.Sprint(ext) != fmt.Sprint(want) {
		t.Errorf("Extents(0, 16M) = %+v; want %+v", ext, want)
	}
	// Unaligned sub-range: clipped to what was asked.
	ext, err = d.Extents(mib(2)+1, 100)
	if err != nil || len(ext) != 1 || ext[0] != (device.Extent{Off: mib(2) + 1, Len: 100, Hole: true, Zero: true}) {
		t.Errorf("Extents(2M+1, 100) = %+v, %v; want one hole", ext, err)
	}
	zero := make([]byte, mib(3))
	got := make([]byte, mib(3))
	if _, err := d.ReadAt(got, mib(2)); err != nil || !bytes.Equal(got, zero) {
		t.Errorf("ReadAt of the zeroed range = %v, zero=%v", err, bytes.Equal(got, zero))
	}
	if err := d.WriteZeroesFlags(mib(6), mib(1), nbd.ZeroNoHole); err != nil {
		t.Errorf("WriteZeroesFlags(NoHole) = %v", err)
	}
	// nbdkit memory answers fast zero requests.
	if err := d.WriteZeroesFlags(mib(8), mib(1), nbd.ZeroFast); err != nil && !errors.Is(err, device.ErrNotSupported) {
		t.Errorf("WriteZeroesFlags(Fast) = %v; want nil or ErrNotSupported", err)
	}
	if err := d.Discard(mib(10), mib(1)); err != nil {
		t.Errorf("Discard = %v", err)
	}
}

func TestNoExtents(t *testing.T) {
	s := nbdkit(t, "--filter=noextents", "memory", "8M")
	d := open(t, s.URI, nil)
	ext, err := d.Extents(0, mib(8))
	if err != nil {
		t.Fatal(err)
	}
	if len(ext) != 1 || ext[0] != (device.Extent{Off: 0, Len: mib(8)}) {
		t.Errorf("Extents with noextents = %+v; want all data", ext)
	}
}

func TestNoZero(t *testing.T) {
	s := nbdkit(t, "--filter=nozero", "memory", "8M")
	d := open(t, s.URI, nil)
	if got := d.Limits().MaxWriteZeroes; got != 0 {
		t.Errorf("Limits().MaxWriteZeroes = %d; want 0 without NBD_FLAG_SEND_WRITE_ZEROES", got)
	}
	if err := d.WriteZeroes(0, 4096); !errors.Is(err, device.ErrNotSupported) {
		t.Errorf("WriteZeroes = %v; want ErrNotSupported", err)
	}
	writeRead(t, d, 0, mib(1), 65536, 3)
}

func TestNoStructuredReplies(t *testing.T) {
	s := nbdkit(t, "--no-sr", "memory", "32M")
	d := open(t, s.URI, &nbd.Config{MaxInFlight: 8})
	if info := d.Info(); info.StructuredReplies || info.BaseAllocation {
		t.Errorf("Info() = %+v; want no structured replies", info)
	}
	writeRead(t, d, 4096, mib(9), 1<<20, 4)
	checkConcurrent(t, d, 8, 128<<10, 1)
	ext, err := d.Extents(100, 1000)
	if err != nil || len(ext) != 1 || ext[0] != (device.Extent{Off: 100, Len: 1000}) {
		t.Errorf("Extents without base:allocation = %+v, %v; want one data extent", ext, err)
	}
}

// TestPlainNewstyle masks NBD_FLAG_FIXED_NEWSTYLE: the client must fall
// back to NBD_OPT_EXPORT_NAME.
func TestPlainNewstyle(t *testing.T) {
	s := nbdkit(t, "--mask-handshake=0", "memory", "8M")
	d := open(t, s.URI, nil)
	if info := d.Info(); !info.UsedExportName || info.FixedNewstyle || info.StructuredReplies {
		t.Errorf("Info() = %+v; want NBD_OPT_EXPORT_NAME without fixed newstyle", info)
	}
	writeRead(t, d, 0, mib(2), 100000, 6)
}

func TestOldstyle(t *testing.T) {
	s := nbdkit(t, "--oldstyle", "memory", "8M")
	_, err := nbd.Open(context.Background(), s.URI, nil)
	if !errors.Is(err, nbd.ErrOldstyle) {
		t.Fatalf("Open on an oldstyle server = %v; want ErrOldstyle", err)
	}
}

func TestReadOnlyExport(t *testing.T) {
	s := nbdkit(t, "-r", "memory", "8M")
	d := open(t, s.URI, nil)
	if !d.ReadOnly() || !d.Info().ReadOnly {
		t.Fatalf("ReadOnly() = false on nbdkit -r")
	}
	lim := d.Limits()
	if lim.MaxWriteZeroes != 0 || lim.MaxDiscard != 0 {
		t.Errorf("Limits() = %+v; want no write-zeroes or discard on a read-only export", lim)
	}
	p := make([]byte, 4096)
	for name, err := range map[string]error{
		"WriteAt":     func() error { _, err := d.WriteAt(p, 0); return err }(),
		"WriteZeroes": d.WriteZeroes(0, 4096),
		"Discard":     d.Discard(0, 4096),
	} {
		var ioe *device.IOError
		if !errors.Is(err, device.ErrReadOnly) || !errors.As(err, &ioe) {
			t.Errorf("%s on a read-only export = %v; want *IOError wrapping ErrReadOnly", name, err)
		}
	}
	if _, err := d.ReadAt(p, 0); err != nil {
		t.Errorf("ReadAt = %v", err)
	}
}

func TestUnknownExport(t *testing.T) {
	s := nbdkit(t, "--filter=exportname", "memory", "8M", "exportname=disk", "exportname-strict=true")
	d := open(t, s.ExportURI("disk"), nil)
	if got := d.Size(); got != mib(8) {
		t.Errorf("Size() = %d", got)
	}
	_, err := nbd.Open(context.Background(), s.ExportURI("nope"), nil)
	if !errors.Is(err, nbd.ErrUnknownExport) {
		t.Fatalf("Open(unknown export) = %v; want ErrUnknownExport", err)
	}
	var ioe *device.IOError
	if !errors.As(err, &ioe) || ioe.Op != device.OpOpen {
		t.Errorf("Open error %v is not an *IOError with Op open", err)
	}
}

func TestTCPLoopback(t *testing.T) {
	nbdtest.NeedBin(t, "nbdkit")
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
			if err != nil {
				t.Skipf("no %s loopback: %v", host, err)
			}
			port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
			l.Close()
			startTCP(t, "nbdkit", net.JoinHostPort(host, port), "-f", "--exit-with-parent", "-i", host, "-p", port, "memory", "8M")
			d := open(t, "nbd://"+net.JoinHostPort(host, port)+"/", &nbd.Config{Connections: 2})
			writeRead(t, d, 0, mib(8), 1<<20, 8)
		})
	}
}

// startTCP runs a server listening on addr and waits until it accepts.
func startTCP(tb testing.TB, name, addr string, args ...string) {
	tb.Helper()
	bin := nbdtest.NeedBin(tb, name)
	var out bytes.Buffer
	cmd := execCommand(bin, args...)
	cmd.Stderr, cmd.Stdout = &out, &out
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if tb.Failed() {
			tb.Logf("%s output:\n%s", name, out.String())
		}
	})
	nbdtest.WaitTCP(tb, addr)
}

func TestErrorFilter(t *testing.T) {
	trigger := filepath.Join(t.TempDir(), "trigger")
	s := nbdkit(t, "--filter=error", "memory", "16M",
		"error-pread=EIO", "error-pread-rate=30%", "error-pwrite=ENOSPC", "error-pwrite-rate=100%", "error-pwrite-file="+trigger)
	d := open(t, s.URI, &nbd.Config{Connections: 1})
	// Writes succeed until the trigger file exists.
	want := make([]byte, mib(16))
	pattern(want, 0, 11)
	for off := int64(0); off < d.Size(); off += 1 << 20 {
		if _, err := d.WriteAt(want[off:off+1<<20], off); err != nil {
			t.Fatalf("WriteAt(%d) = %v", off, err)
		}
	}
	// Reads fail at random with EIO; the others return correct data, and
	// the connection survives the errors.
	var failed, ok int
	buf := make([]byte, 64<<10)
	for round := range 4 {
		for off := int64(0); off < d.Size(); off += int64(len(buf)) {
			clear(buf)
			_, err := d.ReadAt(buf, off)
			if err != nil {
				var ioe *device.IOError
				if !errors.Is(err, syscall.EIO) || !errors.As(err, &ioe) || ioe.Off != off || errors.Is(err, nbd.ErrDisconnected) {
					t.Fatalf("round %d: ReadAt(%d) = %v; want an *IOError wrapping EIO at %d", round, off, err, off)
				}
				failed++
				continue
			}
			ok++
			if !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
				t.Fatalf("round %d: data at %d differs", round, off)
			}
		}
	}
	if failed == 0 || ok == 0 {
		t.Errorf("%d reads failed, %d succeeded; want both with a 30%% error rate", failed, ok)
	}
	if err := os.WriteFile(trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(buf, 0); !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, nbd.ENOSPC) {
		t.Errorf("WriteAt with the trigger = %v; want ENOSPC", err)
	}
	var se *nbd.ServerError
	if _, err := d.WriteAt(buf, 0); !errors.As(err, &se) || se.Errno != nbd.ENOSPC {
		t.Errorf("WriteAt error %v carries no *ServerError ENOSPC", err)
	}
	os.Remove(trigger)
	if _, err := d.WriteAt(buf, 0); err != nil {
		t.Errorf("WriteAt after removing the trigger = %v", err)
	}
}

// TestServerDies kills the server under load: requests in flight fail with
// ErrDisconnected, later ones fail at once, nothing hangs.
func TestServerDies(t *testing.T) {
	s := nbdkit(t, "--filter=delay", "memory", "64M", "delay-read=20ms")
	d := open(t, s.URI, &nbd.Config{Connections: 2})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	started := make(chan struct{}, 64)
	for i := range 32 {
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for j := 0; ; j++ {
				started <- struct{}{}
				if _, err := d.ReadAt(buf, int64((i*64+j)%1000)*65536); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for range 64 {
		<-started
	}
	s.Kill()
	go func() {
		for range started {
		}
	}()
	wg.Wait()
	close(errs)
	close(started)
	for err := range errs {
		if !errors.Is(err, nbd.ErrDisconnected) {
			t.Errorf("ReadAt after the server died = %v; want ErrDisconnected", err)
		}
	}
	if _, err := d.ReadAt(make([]byte, 512), 0); !errors.Is(err, nbd.ErrDisconnected) {
		t.Errorf("ReadAt on a dead device = %v; want ErrDisconnected", err)
	}
}

func TestTimeout(t *testing.T) {
	s := nbdkit(t, "--filter=delay", "memory", "8M", "delay-read=30")
	d := open(t, s.URI, &nbd.Config{Timeout: 300 * time.Millisecond})
	_, err := d.ReadAt(make([]byte, 4096), 0)
	if !errors.Is(err, nbd.ErrTimeout) || !errors.Is(err, nbd.ErrDisconnected) {
		t.Fatalf("ReadAt on a stuck server = %v; want ErrTimeout", err)
	}
}

func TestBlockSizeConstraints(t *testing.T) {
	args := []string{"--filter=blocksize-policy", "memory", "8M",
		"blocksize-minimum=4096", "blocksize-preferred=65536", "blocksize-maximum=256K", "blocksize-error-policy=error"}
	s := nbdkit(t, args...)
	d := open(t, s.URI, nil)
	lim := d.Limits()
	if lim.OffsetAlign != 4096 || lim.LogicalBlockSize != 4096 || lim.MaxTransfer != 256<<10 || lim.MaxWriteZeroes != 256<<10 {
		t.Errorf("Limits() = %+v; want OffsetAlign 4096, MaxTransfer and MaxWriteZeroes 256K", lim)
	}
	if _, err := d.ReadAt(make([]byte, 512), 0); !errors.Is(err, device.ErrAlignment) {
		t.Errorf("ReadAt(512 bytes) = %v; want ErrAlignment", err)
	}
	if _, err := d.WriteAt(make([]byte, 4096), 512); !errors.Is(err, device.ErrAlignment) {
		t.Errorf("WriteAt at 512 = %v; want ErrAlignment", err)
	}
	// A 3 MiB call is split into 256 KiB requests the server accepts.
	writeRead(t, d, 8192, mib(3), mib(3), 12)
	if err := d.WriteZeroes(0, mib(2)); err != nil {
		t.Errorf("WriteZeroes(0, 2M) split at 256K = %v", err)
	}
	ext, err := d.Extents(100, 10)
	if err != nil || len(ext) == 0 || ext[0].Off != 100 {
		t.Errorf("Extents(100, 10) = %+v, %v", ext, err)
	}
	t.Run("Conformance", func(t *testing.T) {
		devicetest.Run(t, func(t *testing.T, size int64) device.Device {
			a := append([]string(nil), args...)
			a[2] = strconv.FormatInt((size+4095)/4096*4096, 10)
			return open(t, nbdkit(t, a...).URI, nil)
		})
	})
}

func TestQemuNBD(t *testing.T) {
	nbdtest.NeedBin(t, "qemu-nbd")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.raw")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, mib(2))
	pattern(head, 0, 21)
	f.Write(head)
	f.Truncate(mib(32)) // the rest is a hole
	f.Close()
	s := nbdtest.QemuNBD(t, img, "disk")
	d := open(t, s.ExportURI("disk"), &nbd.Config{Connections: 4})
	t.Logf("qemu-nbd: %+v, limits %+v, notes %q", d.Info(), d.Limits(), d.Notes())
	got := make([]byte, mib(2))
	if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, head) {
		t.Fatalf("ReadAt(head) = %v, equal=%v", err, bytes.Equal(got, head))
	}
	ext, err := d.Extents(0, mib(32))
	if err != nil {
		t.Fatal(err)
	}
	if len(ext) < 2 || ext[0].Zero || !ext[len(ext)-1].Hole || !ext[len(ext)-1].Zero || ext[len(ext)-1].Off+ext[len(ext)-1].Len != mib(32) {
		t.Errorf("Extents on a 2M-data file = %+v; want data then a hole", ext)
	}
	writeRead(t, d, mib(5)+512, mib(7), 1<<20, 22)
	if err := d.Flush(); err != nil {
		t.Errorf("Flush = %v", err)
	}
	// The file holds what was written.
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, mib(7))
	pattern(want, mib(5)+512, 22)
	if !bytes.Equal(data[mib(5)+512:mib(12)+512], want) {
		t.Errorf("image file does not hold the written data")
	}
	checkConcurrent(t, d, 8, 256<<10, 1)
	if err := d.WriteZeroes(mib(20), mib(4)); err != nil {
		t.Errorf("WriteZeroes = %v", err)
	}
	if err := d.Flush(); err != nil {
		t.Errorf("Flush = %v", err)
	}
	// qemu-nbd rejects unknown export names with NBD_REP_ERR_UNKNOWN.
	if _, err := nbd.Open(context.Background(), s.ExportURI("other"), nil); !errors.Is(err, nbd.ErrUnknownExport) {
		t.Errorf("Open(unknown export on qemu-nbd) = %v; want ErrUnknownExport", err)
	}
}

// TestRandomAccess mixes random reads, writes, zeroes and trims with a
// model, over two connections.
func TestRandomAccess(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	const size = 4 << 20
	s := nbdkit(t, "memory", strconv.Itoa(size))
	d := open(t, s.URI, &nbd.Config{Connections: 2, MaxRequest: 64 << 10})
	model := make([]byte, size)
	for i := range 300 {
		off := rng.Int64N(size)
		n := rng.Int64N(min(size-off, 300000)) + 1
		switch rng.IntN(4) {
		case 0, 1:
			p := make([]byte, n)
			pattern(p, off, byte(i))
			if _, err := d.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], p)
		case 2:
			if err := d.WriteZeroes(off, n); err != nil {
				t.Fatal(err)
			}
			clear(model[off : off+n])
		case 3:
			p := make([]byte, n)
			if _, err := d.ReadAt(p, off); err != nil {
				t.Fatal(err)
			}
			if j := testutil.FirstDiff(p, model[off:off+n]); j >= 0 {
				t.Fatalf("op %d: byte %d differs", i, off+int64(j))
			}
		}
	}
	for off := int64(0); off < size; {
		ext, err := d.Extents(off, size-off)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ext {
			if e.Zero && bytes.IndexFunc(model[e.Off:e.Off+e.Len], func(r rune) bool { return r != 0 }) >= 0 {
				t.Fatalf("extent %+v claims zeroes over data", e)
			}
			off = e.Off + e.Len
		}
	}
}
