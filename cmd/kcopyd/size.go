package main

import "github.com/kcopyd/kcopyd/units"

// Sizes in options, regions files and messages are package units'.
var (
	parseSize  = units.ParseSize
	formatSize = units.FormatSize
	humanSize  = units.HumanSize
)

// sizeFlag is a pflag.Value holding a size parsed with units.ParseSize.
type sizeFlag struct {
	n   int64
	set bool
}

// String implements pflag.Value.
func (f *sizeFlag) String() string {
	if !f.set {
		return ""
	}
	return formatSize(f.n)
}

// Set implements pflag.Value.
func (f *sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	f.n, f.set = n, true
	return nil
}

// Type implements pflag.Value.
func (f *sizeFlag) Type() string { return "SIZE" }
