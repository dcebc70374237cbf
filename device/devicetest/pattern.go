package devicetest

import "fmt"

// Pattern returns n bytes of the pattern for seed as it lies at byte offset
// off. The pattern is pseudo-random and deterministic: Pattern(s, off, n)
// equals Pattern(s, 0, off+n)[off:], so any range of a device can be
// written and later checked on its own, and data that lands at the wrong
// offset is noticed. Different seeds give unrelated patterns. The suite
// writes this pattern; tests of code that uses devices can use it too.
func Pattern(seed uint64, off int64, n int) []byte {
	p := make([]byte, n)
	FillPattern(p, seed, off)
	return p
}

// FillPattern overwrites p with the pattern for seed at byte offset off
// (see Pattern). It panics on a negative off.
func FillPattern(p []byte, seed uint64, off int64) {
	if off < 0 {
		panic(fmt.Sprintf("devicetest.FillPattern: negative offset %d", off))
	}
	i := 0
	for i < len(p) {
		pos := uint64(off) + uint64(i)
		word := splitmix(seed ^ (pos/8)*0x9e3779b97f4a7c15)
		for b := pos % 8; b < 8 && i < len(p); b++ {
			p[i] = byte(word >> (b * 8))
			i++
		}
	}
}

// splitmix is the SplitMix64 finaliser.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
