package kcopyd_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportDirections keeps the layering honest: the engine does not know
// any concrete back end, back ends do not know each other or the engine,
// and the device contract needs only the standard library.
func TestImportDirections(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go command not found: cannot list imports")
	}
	const mod = "github.com/kcopyd/kcopyd"
	forbidden := map[string][]string{
		mod:                        {mod + "/device/", mod + "/cmd/"},
		mod + "/internal/dmio":     {mod + "/device/", mod + "/internal/throttle"},
		mod + "/internal/bufpool":  {mod + "/"},
		mod + "/internal/throttle": {mod + "/"},
		mod + "/device":            {mod + "/"},
		mod + "/device/blockdev":   {mod + "/device/", mod + "/internal/", mod + "/cmd/"},
		mod + "/device/nbd":        {mod + "/device/blockdev", mod + "/device/zoned", mod + "/device/faultdev", mod + "/internal/", mod + "/cmd/"},
		mod + "/device/zoned":      {mod + "/device/blockdev", mod + "/device/nbd", mod + "/device/faultdev", mod + "/internal/", mod + "/cmd/"},
		mod + "/device/faultdev":   {mod + "/device/blockdev", mod + "/device/nbd", mod + "/device/zoned", mod + "/internal/", mod + "/cmd/"},
	}
	allowed := map[string]bool{mod + "/device": true, mod + "/internal/bufpool": true}
	for pkg, bans := range forbidden {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == pkg || allowed[dep] || strings.HasPrefix(dep, pkg+"/") {
				continue
			}
			for _, ban := range bans {
				if dep == strings.TrimSuffix(ban, "/") || strings.HasPrefix(dep, ban) {
					t.Errorf("%s imports %s", pkg, dep)
				}
			}
		}
	}
}
