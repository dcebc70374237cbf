//go:build linux

package device

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestFileZeroModes drives WriteZeroes through each fallocate mode, as
// filesystems without FALLOC_FL_PUNCH_HOLE (and without ZERO_RANGE too)
// would, by starting it at a later mode.
func TestFileZeroModes(t *testing.T) {
	const size = 256 << 10
	data := bytes.Repeat([]byte{0x5a}, size)
	for _, mode := range []int32{zeroPunch, zeroRange, zeroNone} {
		path := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := OpenFile(path, FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		f.zeroMode.Store(mode)
		err = f.WriteZeroes(4096+17, 64<<10)
		want := bytes.Clone(data)
		if mode == zeroNone {
			if !errors.Is(err, ErrNotSupported) {
				t.Errorf("WriteZeroes in mode %d = %v; want ErrNotSupported", mode, err)
			}
		} else {
			if err != nil {
				t.Errorf("WriteZeroes in mode %d = %v; want nil", mode, err)
			}
			clear(want[4096+17 : 4096+17+64<<10])
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("after WriteZeroes in mode %d, the file does not hold the expected bytes (len %d, want %d)", mode, len(got), len(want))
		}
	}
}
