//go:build !race

package devicetest_test

const raceEnabled = false
