package main

import (
	"strings"
	"testing"
)

func TestHelp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"help"}, []string{"copy", "zero", "verify", "version", "Exit status", "130"}},
		{[]string{"--help"}, []string{"copy", "zero", "verify"}},
		{[]string{"copy", "--help"}, []string{"Examples:", "--regions", "--rate-file", "--dest-is-zero", "--create", "Exit status", "sectors"}},
		{[]string{"help", "copy"}, []string{"SOURCE DEST [DEST...]"}},
		{[]string{"zero", "--help"}, []string{"Examples:", "--offset", "Exit status"}},
		{[]string{"verify", "--help"}, []string{"Examples:", "--dest-offset", "first differing byte"}},
		{[]string{"version", "--help"}, []string{"Examples:"}},
	}
	for _, tt := range tests {
		r := runCLI(t, "", tt.args...)
		if r.code != 0 {
			t.Errorf("kcopyd %v = %v; want exit 0", tt.args, r)
		}
		for _, w := range tt.want {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("kcopyd %v printed no %q:\n%s", tt.args, w, r.stdout)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"copy"}, "Run 'kcopyd copy --help'"},
		{[]string{"zero", "--jobs", "0", "x"}, "--jobs"},
	}
	for _, tt := range tests {
		r := runCLI(t, "", tt.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("kcopyd %v = %v; want exit 1 and %q", tt.args, r, tt.want)
		}
	}
}
