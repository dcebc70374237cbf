package devicetest

import "unsafe"

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
