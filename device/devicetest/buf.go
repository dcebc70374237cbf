package devicetest

import (
	"fmt"
	"unsafe"
)

// AlignedBuf returns a zeroed slice of n bytes whose first byte's address is
// a multiple of align, for devices whose Limits().MemAlign requires it.
// align must be a power of two; 0 and 1 mean no alignment. It panics on a
// bad align or a negative n.
func AlignedBuf(n, align int) []byte {
	if n < 0 {
		panic(fmt.Sprintf("devicetest.AlignedBuf: negative length %d", n))
	}
	if align <= 1 {
		return make([]byte, n)
	}
	if align&(align-1) != 0 {
		panic(fmt.Sprintf("devicetest.AlignedBuf: alignment %d is not a power of two", align))
	}
	b := make([]byte, n+align)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) & uintptr(align-1)); r != 0 {
		skip = align - r
	}
	return b[skip : skip+n : skip+n]
}

// IsAligned reports whether the address of p's first byte is a multiple of
// align. An empty p is aligned.
func IsAligned(p []byte, align int) bool {
	if len(p) == 0 || align <= 1 {
		return true
	}
	return uintptr(unsafe.Pointer(&p[0]))%uintptr(align) == 0
}

// addr returns the address of p's first byte, for messages.
func addr(p []byte) uintptr {
	if len(p) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&p[0]))
}
