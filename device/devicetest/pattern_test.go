package devicetest_test

import (
	"bytes"
	"testing"

	"github.com/kcopyd/kcopyd/device/devicetest"
)

func TestPatternRanges(t *testing.T) {
	all := devicetest.Pattern(7, 0, 10000)
	for _, r := range []struct{ off, n int }{{0, 1}, {1, 7}, {3, 8}, {8, 8}, {4093, 17}, {9999, 1}, {1234, 5678}} {
		if got := devicetest.Pattern(7, int64(r.off), r.n); !bytes.Equal(got, all[r.off:r.off+r.n]) {
			t.Errorf("Pattern(7, %d, %d) differs from Pattern(7, 0, 10000)[%d:%d]", r.off, r.n, r.off, r.off+r.n)
		}
	}
	if bytes.Equal(all, devicetest.Pattern(8, 0, 10000)) {
		t.Error("Pattern(7, ...) == Pattern(8, ...)")
	}
	if bytes.Count(all, []byte{0}) > 100 {
		t.Errorf("Pattern(7, 0, 10000) has %d zero bytes; want about 40", bytes.Count(all, []byte{0}))
	}
	// The pattern at a large offset is not a shifted copy of its start.
	if bytes.Equal(devicetest.Pattern(7, 1<<40, 4096), all[:4096]) {
		t.Error("Pattern(7, 1<<40, 4096) == Pattern(7, 0, 4096)")
	}
}
