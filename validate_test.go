package kcopyd_test

import (
	"errors"
	"testing"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
)

// TestCheckCopy checks that CheckCopy and CheckZero give the answers
// Copy and Zero give, without submitting anything.
func TestCheckCopy(t *testing.T) {
	c, err := kcopyd.NewClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := device.NewMem(1 << 20)
	other := device.NewMem(1 << 20)
	src := kcopyd.Region{Dev: m, Off: 0, Len: 64 << 10}
	for _, tt := range []struct {
		name  string
		dests []kcopyd.Region
		want  error
	}{
		{"fine", []kcopyd.Region{{Dev: m, Off: 64 << 10, Len: 64 << 10}, {Dev: other, Len: 64 << 10}}, nil},
		{"overlap", []kcopyd.Region{{Dev: m, Off: 32 << 10, Len: 64 << 10}}, kcopyd.ErrOverlap},
		{"out of range", []kcopyd.Region{{Dev: other, Off: 1 << 20, Len: 64 << 10}}, kcopyd.ErrOutOfRange},
		{"lengths", []kcopyd.Region{{Dev: other, Len: 4096}}, kcopyd.ErrLengthMismatch},
	} {
		if err := c.CheckCopy(src, tt.dests, 0); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("CheckCopy(%s) = %v; want %v", tt.name, err, tt.want)
		}
	}
	if err := c.CheckZero([]kcopyd.Region{{Dev: m, Len: 4096}, {Dev: m, Off: 2048, Len: 4096}}, 0); !errors.Is(err, kcopyd.ErrOverlap) {
		t.Errorf("CheckZero(overlapping) = %v; want ErrOverlap", err)
	}
	if err := c.CheckZero([]kcopyd.Region{{Dev: m, Len: 4096}}, kcopyd.Flags(1<<30)); !errors.Is(err, kcopyd.ErrBadFlags) {
		t.Errorf("CheckZero(bad flags) = %v; want ErrBadFlags", err)
	}
}
