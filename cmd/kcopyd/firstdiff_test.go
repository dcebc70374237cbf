package main

// firstDiff returns the index of the first byte where a and b differ, or
// the length of the shorter.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
