package device_test

import (
	"fmt"
	"testing"
	"unsafe"

	"github.com/kcopyd/kcopyd/device"
)

func TestAlignedBuf(t *testing.T) {
	for _, align := range []int{0, 1, 2, 512, 4096, 1 << 16} {
		for _, n := range []int{0, 1, 511, 4096, 4097, 1 << 20} {
			b := device.AlignedBuf(n, align)
			if len(b) != n || cap(b) != n {
				t.Errorf("AlignedBuf(%d, %d): len %d, cap %d; want %d, %d", n, align, len(b), cap(b), n, n)
			}
			if a := max(align, 1); n > 0 && uintptr(unsafe.Pointer(&b[0]))%uintptr(a) != 0 {
				t.Errorf("AlignedBuf(%d, %d) at %p; want a multiple of %d", n, align, &b[0], a)
			}
			for i, c := range b {
				if c != 0 {
					t.Fatalf("AlignedBuf(%d, %d)[%d] = %#x; want 0", n, align, i, c)
				}
			}
		}
	}
}

func TestAlignedBufPanics(t *testing.T) {
	for _, tt := range []struct{ n, align int }{{-1, 512}, {16, 3}, {16, 4095}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("AlignedBuf(%d, %d) did not panic", tt.n, tt.align)
				}
			}()
			device.AlignedBuf(tt.n, tt.align)
		}()
	}
}

func TestFirstDiff(t *testing.T) {
	big := make([]byte, 3*4096+7)
	bigDiff := func(i int) []byte {
		c := append([]byte(nil), big...)
		c[i] = 1
		return c
	}
	tests := []struct {
		name string
		a, b []byte
		want int
	}{
		{"both empty", nil, nil, -1},
		{"nil and empty", nil, []byte{}, -1},
		{"equal", []byte("abc"), []byte("abc"), -1},
		{"first byte", []byte("abc"), []byte("xbc"), 0},
		{"last byte", []byte("abc"), []byte("abx"), 2},
		{"a is a prefix", []byte("ab"), []byte("abc"), 2},
		{"b is a prefix", []byte("abc"), []byte("ab"), 2},
		{"empty against one byte", nil, []byte{0}, 0},
		{"long against empty", big, nil, 0},
		{"in the second page", big, bigDiff(4096 + 5), 4096 + 5},
		{"in the tail", big, bigDiff(3*4096 + 6), 3*4096 + 6},
		{"two differences", bigDiff(9000), bigDiff(100), 100},
		{"large equal", big, append([]byte(nil), big...), -1},
	}
	for _, tt := range tests {
		if got := device.FirstDiff(tt.a, tt.b); got != tt.want {
			t.Errorf("%s: FirstDiff(%d bytes, %d bytes) = %d; want %d", tt.name, len(tt.a), len(tt.b), got, tt.want)
		}
	}
}

func ExampleFirstDiff() {
	fmt.Println(device.FirstDiff([]byte("kcopyd"), []byte("kcopyd")))
	fmt.Println(device.FirstDiff([]byte("kcopyd"), []byte("kcOpyd")))
	fmt.Println(device.FirstDiff([]byte("kcopy"), []byte("kcopyd")))
	// Output:
	// -1
	// 2
	// 5
}
