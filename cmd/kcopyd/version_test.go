package main

import (
	"runtime"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	t.Parallel()
	r := runCLI(t, "", "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "kcopyd ") || !strings.Contains(r.stdout, runtime.Version()) {
		t.Errorf("kcopyd version = %v; want kcopyd and %s", r, runtime.Version())
	}
	if r := runCLI(t, "", "version", "extra"); r.code != exitUsage {
		t.Errorf("kcopyd version extra = %v; want exit 1", r)
	}
}
