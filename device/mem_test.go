package device_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/kcopyd/kcopyd/device"
)

func TestMemBasic(t *testing.T) {
	m := device.NewMem(10000)
	if got := m.Size(); got != 10000 {
		t.Fatalf("Size() = %d; want 10000", got)
	}
	data := bytes.Repeat([]byte("kcopyd"), 1000)
	if n, err := m.WriteAt(data, 3000); n != len(data) || err != nil {
		t.Fatalf("WriteAt(6000 bytes, 3000) = %d, %v; want %d, nil", n, err, len(data))
	}
	got := make([]byte, len(data))
	if n, err := m.ReadAt(got, 3000); n != len(data) || err != nil {
		t.Fatalf("ReadAt(6000 bytes, 3000) = %d, %v; want %d, nil", n, err, len(data))
	}
	if !bytes.Equal(got, data) {
		t.Fatal("ReadAt returned different bytes than WriteAt wrote")
	}
	if n, err := m.WriteAt(data, 5000); n != 0 || !errors.Is(err, device.ErrOutOfRange) {
		t.Fatalf("WriteAt(6000 bytes, 5000) = %d, %v; want 0, ErrOutOfRange", n, err)
	}
	buf := make([]byte, 100)
	if n, err := m.ReadAt(buf, 9950); n != 50 || err != io.EOF {
		t.Fatalf("ReadAt(100 bytes, 9950) = %d, %v; want 50, io.EOF", n, err)
	}
	if n, err := m.ReadAt(buf, 10000); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt(100 bytes, 10000) = %d, %v; want 0, io.EOF", n, err)
	}
	if err := m.WriteZeroes(4000, 4200); err != nil {
		t.Fatalf("WriteZeroes(4000, 4200) = %v", err)
	}
	want := append([]byte(nil), data...)
	clear(want[1000:5200])
	if n, err := m.ReadAt(got, 3000); n != len(data) || err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after WriteZeroes: ReadAt = %d, %v, equal %v; want %d, nil, true", n, err, bytes.Equal(got, want), len(data))
	}
	if !bytes.Equal(m.Bytes()[3000:9000], want) {
		t.Fatal("Bytes() does not match what was written")
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if _, err := m.ReadAt(buf, 0); !errors.Is(err, device.ErrClosed) {
		t.Fatalf("ReadAt after Close = %v; want ErrClosed", err)
	}
}

func TestMemExtents(t *testing.T) {
	m := device.NewMem(5*4096 + 100)
	if _, err := m.WriteAt([]byte{1}, 4096+10); err != nil {
		t.Fatal(err)
	}
	if _, err := m.WriteAt([]byte{1}, 5*4096+99); err != nil {
		t.Fatal(err)
	}
	got, err := m.Extents(1, m.Size()-1)
	if err != nil {
		t.Fatal(err)
	}
	want := []device.Extent{
		{Off: 1, Len: 4095, Hole: true, Zero: true},
		{Off: 4096, Len: 4096},
		{Off: 2 * 4096, Len: 3 * 4096, Hole: true, Zero: true},
		{Off: 5 * 4096, Len: 100},
	}
	if !equalExtents(got, want) {
		t.Fatalf("Extents(1, %d) = %v; want %v", m.Size()-1, got, want)
	}
	// Discarding the last, partial block wholly makes it a hole again;
	// zeroing part of the data block keeps it data.
	if err := m.Discard(5*4096, 100); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteZeroes(4096, 100); err != nil {
		t.Fatal(err)
	}
	got, err = m.Extents(0, m.Size())
	if err != nil {
		t.Fatal(err)
	}
	want = []device.Extent{
		{Off: 0, Len: 4096, Hole: true, Zero: true},
		{Off: 4096, Len: 4096},
		{Off: 2 * 4096, Len: 3*4096 + 100, Hole: true, Zero: true},
	}
	if !equalExtents(got, want) {
		t.Fatalf("Extents(0, %d) = %v; want %v", m.Size(), got, want)
	}
}

func equalExtents(a, b []device.Extent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
