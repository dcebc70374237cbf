package clone

import "math/bits"

// bitmap is a set of region numbers, one bit per region, stored in 64-bit
// words. It is not safe for concurrent use; Clone guards it with mu.
type bitmap []uint64

func newBitmap(n int64) bitmap { return make(bitmap, (n+63)/64) }

// test reports whether bit i is set.
func (b bitmap) test(i int64) bool { return b[i>>6]&(1<<(uint(i)&63)) != 0 }

// set sets bit i and reports whether it was clear.
func (b bitmap) set(i int64) bool {
	w, m := i>>6, uint64(1)<<(uint(i)&63)
	was := b[w]&m != 0
	b[w] |= m
	return !was
}

// clear clears bit i and reports whether it was set.
func (b bitmap) clear(i int64) bool {
	w, m := i>>6, uint64(1)<<(uint(i)&63)
	was := b[w]&m != 0
	b[w] &^= m
	return was
}

// nextClear returns the first clear bit in [i, n), or n.
func (b bitmap) nextClear(i, n int64) int64 {
	for i < n {
		w := ^b[i>>6] >> (uint(i) & 63)
		if w != 0 {
			return min(i+int64(bits.TrailingZeros64(w)), n)
		}
		i = (i>>6 + 1) << 6
	}
	return n
}

// nextSet returns the first set bit in [i, n), or n.
func (b bitmap) nextSet(i, n int64) int64 {
	for i < n {
		w := b[i>>6] >> (uint(i) & 63)
		if w != 0 {
			return min(i+int64(bits.TrailingZeros64(w)), n)
		}
		i = (i>>6 + 1) << 6
	}
	return n
}

// count returns the number of set bits.
func (b bitmap) count() int64 {
	var n int
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return int64(n)
}

// setRange sets bits [lo, hi).
func (b bitmap) setRange(lo, hi int64) {
	for i := lo; i < hi; i++ {
		b.set(i)
	}
}
