package device

import (
	"bytes"
	"fmt"
	"unsafe"
)

// AlignedBuf returns a zeroed slice of n bytes whose first byte's address is
// a multiple of align, for devices whose Limits().MemAlign requires it (a
// file or block device opened with O_DIRECT). align must be a power of two;
// 0 and 1 mean no alignment. The slice's capacity is n, so appending to it
// reallocates and loses the alignment. It panics on a bad align or a
// negative n: both are bugs of the caller.
//
// This is the module's one aligned allocator; the engine's buffer pool
// (MemAlign up to 4096) and the test helpers use it.
func AlignedBuf(n, align int) []byte {
	if n < 0 {
		panic(fmt.Sprintf("device.AlignedBuf: negative length %d", n))
	}
	if align <= 1 {
		return make([]byte, n)
	}
	if align&(align-1) != 0 {
		panic(fmt.Sprintf("device.AlignedBuf: alignment %d is not a power of two", align))
	}
	b := make([]byte, n+align)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) & uintptr(align-1)); r != 0 {
		skip = align - r
	}
	return b[skip : skip+n : skip+n]
}

// FirstDiff returns the index of the first byte at which a and b differ, or
// -1 when they are equal. When one is a proper prefix of the other, the
// first difference is the shorter one's length (the byte one of them lacks).
// This is the convention of kcopyd.JobError.FirstDiff, which holds the
// lowest differing byte of each destination and -1 for one that matched.
func FirstDiff(a, b []byte) int {
	// Compare page by page with bytes.Equal (vectorised) and look at single
	// bytes only within the first page that differs.
	const step = 4096
	n := min(len(a), len(b))
	for i := 0; i < n; i += step {
		j := min(i+step, n)
		if bytes.Equal(a[i:j], b[i:j]) {
			continue
		}
		for k := i; k < j; k++ {
			if a[k] != b[k] {
				return k
			}
		}
	}
	if len(a) != len(b) {
		return n
	}
	return -1
}
