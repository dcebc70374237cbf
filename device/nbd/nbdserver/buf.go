package nbdserver

import "unsafe"

// alignedBuf returns a zeroed slice of n bytes whose first byte's address
// is a multiple of align (a power of 2 up to 4096, see
// device.Limits.MemAlign).
func alignedBuf(n, align int) []byte {
	if align <= 1 {
		return make([]byte, n)
	}
	b := make([]byte, n+align)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) & uintptr(align-1)); r != 0 {
		skip = align - r
	}
	return b[skip : skip+n : skip+n]
}
