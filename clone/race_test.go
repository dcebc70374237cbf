//go:build race

package clone_test

// raceEnabled: the race detector slows the crash tests' models tenfold.
const raceEnabled = true
