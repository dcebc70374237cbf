package kcopyd_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
)

// copier is a memory device that copies ranges natively from another
// copier, refusing (ErrNotSupported) from refuseAt on, and failing
// (a plain I/O error) the ranges that cover failAt.
type copier struct {
	*device.Mem
	refuseAt, failAt int64 // -1: never
	copies           atomic.Int64
}

func (d *copier) CopyRange(src device.Device, srcOff, dstOff, n int64) (int64, error) {
	s, ok := src.(*copier)
	if !ok || (d.refuseAt >= 0 && dstOff >= d.refuseAt) {
		return 0, &device.IOError{Op: device.OpCopyRange, Off: dstOff, Len: n, Err: device.ErrNotSupported}
	}
	if d.failAt >= 0 && dstOff <= d.failAt && d.failAt < dstOff+n {
		return 0, &device.IOError{Op: device.OpCopyRange, Off: dstOff, Len: n, Err: errors.New("transient")}
	}
	buf := make([]byte, n)
	if _, err := s.Mem.ReadAt(buf, srcOff); err != nil {
		return 0, err
	}
	d.copies.Add(1)
	_, err := d.Mem.WriteAt(buf, dstOff)
	return n, err
}

func newCopier(data []byte, n int) *copier {
	if data == nil {
		return &copier{Mem: device.NewMem(int64(n)), refuseAt: -1, failAt: -1}
	}
	return &copier{Mem: device.NewMemFrom(data), refuseAt: -1, failAt: -1}
}

// TestOffload copies between devices that copy natively: no buffer is
// used. A refusal part way falls back to buffers for the rest; a failed
// offloaded chunk is copied again through a buffer and succeeds.
func TestOffload(t *testing.T) {
	const sub = 8192
	const n = 40*sub + 100
	data := randomBytes(70, n)
	for _, tc := range []struct {
		name             string
		refuseAt, failAt int64
		wantBuffers      bool
	}{
		{"native", -1, -1, false},
		{"refused from chunk 10", 10 * sub, -1, true},
		{"transient failure at chunk 3", -1, 3*sub + 5, true},
	} {
		c := newClient(t, &kcopyd.Options{SubJobSize: sub})
		src := newCopier(data, 0)
		a, b := newCopier(nil, n), newCopier(nil, n)
		b.refuseAt, b.failAt = tc.refuseAt, tc.failAt
		res := run(t, c, context.Background(), &kcopyd.Region{Dev: src, Len: n}, []kcopyd.Region{{Dev: a, Len: n}, {Dev: b, Len: n}}, 0)
		if res.err != nil {
			t.Fatalf("%s: %v", tc.name, res.err)
		}
		for i, d := range []*copier{a, b} {
			if k := firstDiff(contents(t, d, 0, n), data); k >= 0 {
				t.Fatalf("%s: destination %d differs at %d", tc.name, i, k)
			}
		}
		if used := c.Stats().PeakBufferBytes > 0; used != tc.wantBuffers || a.copies.Load() == 0 {
			t.Fatalf("%s: buffers used %v (want %v), %d native copies", tc.name, used, tc.wantBuffers, a.copies.Load())
		}
	}
	// DetectZeroes needs the data in memory: no offload.
	c := newClient(t, &kcopyd.Options{SubJobSize: sub})
	dst := newCopier(nil, n)
	if res := run(t, c, context.Background(), &kcopyd.Region{Dev: newCopier(data, 0), Len: n}, []kcopyd.Region{{Dev: dst, Len: n}}, kcopyd.DetectZeroes); res.err != nil || dst.copies.Load() != 0 {
		t.Fatalf("DetectZeroes copy: err %v, %d native copies; want none", res.err, dst.copies.Load())
	}
}

// TestOffloadFiles copies between real files: on one filesystem the
// copy is offloaded (no buffer used); to a file on another filesystem
// (tmpfs) the kernel refuses and the engine falls back to buffers.
func TestOffloadFiles(t *testing.T) {
	const n = 8<<20 + 4096
	data := randomBytes(71, n)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "src"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := device.OpenFile(filepath.Join(dir, "src"), device.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dirs := []string{dir}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		shm, err := os.MkdirTemp("/dev/shm", "kcopyd-offload")
		if err == nil {
			defer os.RemoveAll(shm)
			dirs = append(dirs, shm)
		}
	}
	for _, d := range dirs {
		dst, err := device.CreateFile(filepath.Join(d, "dst"), n, device.FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c := newClient(t, nil)
		res := run(t, c, context.Background(), &kcopyd.Region{Dev: src, Len: n}, []kcopyd.Region{{Dev: dst, Len: n}}, 0)
		if res.err != nil {
			t.Fatalf("%s: %v", d, res.err)
		}
		if k := firstDiff(contents(t, dst, 0, n), data); k >= 0 {
			t.Fatalf("%s: destination differs at %d", d, k)
		}
		t.Logf("%s: peak buffer bytes %d", d, c.Stats().PeakBufferBytes)
		if d == dir && c.Stats().PeakBufferBytes != 0 {
			t.Errorf("a copy within one filesystem used %d bytes of buffer; want it offloaded", c.Stats().PeakBufferBytes)
		}
		dst.Close()
	}
}
