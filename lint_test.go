package kcopyd_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/kcopyd/kcopyd"

// importRules gives every package of the module the module packages and
// the outside modules it may import directly ("M/" stands for the module).
// A package missing from the table fails TestImportDirections until it has
// a rule, so the layering is decided, not drifted into. The arrows:
// cmd → kcopyd → internal/dmio → device ← back ends; back ends know only
// device and never each other or the engine; internal helpers know at most
// device and invariants.
var importRules = map[string][]string{
	"M":                           {"M/device", "M/internal/bufpool", "M/internal/dmio", "M/internal/invariants", "M/internal/throttle"},
	"M/batch":                     {"M", "M/device", "M/plan"},
	"M/bench/cmd/regionloop":      {"golang.org/x/sys/unix"},
	"M/clone":                     {"M", "M/device", "M/units"},
	"M/clone/cloneserver":         {"M/clone", "M/device", "M/device/nbd/nbdserver", "M/location"},
	"M/cmd/kcopyd":                {"M", "M/batch", "M/clone", "M/clone/cloneserver", "M/mapfile", "M/plan", "M/task", "M/device", "M/device/blockdev", "M/device/nbd", "M/device/nbd/nbdserver", "M/location", "M/ratefile", "M/units", "github.com/spf13/", "github.com/vbauerster/mpb/", "golang.org/x/sys/unix"},
	"M/device":                    {"M/internal/uring", "golang.org/x/sys/unix"},
	"M/device/blockdev":           {"M/device", "M/internal/uring", "golang.org/x/sys/unix"},
	"M/device/blockdev/looptest":  {"golang.org/x/sys/unix"},
	"M/device/devicetest":         {"M/device"},
	"M/device/faultdev":           {"M/device"},
	"M/device/nbd":                {"M/device", "M/device/nbd/internal/proto", "golang.org/x/sys/unix"},
	"M/device/nbd/internal/proto": {},
	"M/device/nbd/nbdserver":      {"M/device", "M/device/nbd/internal/proto", "M/internal/bufpool"},
	"M/device/nbd/nbdtest":        {"M/device/nbd"},
	"M/device/zoned":              {"M/device"},
	"M/internal/bufpool":          {"M/device", "M/internal/invariants"},
	"M/internal/dmio":             {"M/device", "M/internal/bufpool"},
	"M/internal/invariants":       {},
	"M/internal/testutil":         {"M/device", "M/device/devicetest", "go.uber.org/goleak", "golang.org/x/sys/unix"},
	"M/internal/throttle":         {},
	"M/internal/uring":            {"golang.org/x/sys/unix"},
	"M/location":                  {"M/device", "M/device/blockdev", "M/device/nbd", "golang.org/x/sys/unix"},
	"M/mapfile":                   {},
	"M/plan":                      {"M/device", "M/units"},
	"M/ratefile":                  {"M", "M/units"},
	"M/task":                      {"M", "M/batch", "M/device", "M/location", "M/mapfile", "M/plan", "golang.org/x/sys/unix"},
	"M/units":                     {},
}

// importViolations returns one message per import in imports (package to
// its direct imports, full paths) that rules does not allow, and one per
// package that has no rule. Standard-library imports are always allowed;
// an allowed entry ending in "/" allows every path under it.
func importViolations(rules map[string][]string, imports map[string][]string) []string {
	full := func(p string) string { // "M/x" to the import path
		return mod + strings.TrimPrefix(p, "M")
	}
	var bad []string
	for pkg, deps := range imports {
		rule, ok := rules["M"+strings.TrimPrefix(pkg, mod)]
		if !ok {
			bad = append(bad, pkg+" has no import rule: add one to importRules")
			continue
		}
		allow := make([]string, len(rule))
		for i, a := range rule {
			if strings.HasPrefix(a, "M") {
				a = full(a)
			}
			allow[i] = a
		}
		for _, dep := range deps {
			first, _, _ := strings.Cut(dep, "/")
			if !strings.Contains(first, ".") {
				continue // the standard library
			}
			if !slices.ContainsFunc(allow, func(a string) bool {
				return dep == a || (strings.HasSuffix(a, "/") && strings.HasPrefix(dep, a))
			}) {
				bad = append(bad, pkg+" imports "+dep)
			}
		}
	}
	slices.Sort(bad)
	return bad
}

// TestImportDirections keeps the layering honest: every package's direct
// imports are checked against its own rule.
func TestImportDirections(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go command not found: cannot list imports")
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", mod+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		imports[f[0]] = f[1:]
	}
	if len(imports) < len(importRules) {
		t.Fatalf("go list found %d packages; the rules name %d", len(imports), len(importRules))
	}
	for _, v := range importViolations(importRules, imports) {
		t.Error(v)
	}
}

// TestImportViolationsCatches shows the check failing on deliberate
// violations: the engine importing a back end, a back end importing the
// engine or another back end, a new package without a rule, and an outside
// module nobody allowed.
func TestImportViolationsCatches(t *testing.T) {
	imports := map[string][]string{
		mod:                       {"fmt", mod + "/device", mod + "/device/nbd"},
		mod + "/device/zoned":     {mod + "/device", mod + "/device/blockdev"},
		mod + "/device/faultdev":  {mod},
		mod + "/internal/dmio":    {mod + "/device", "github.com/spf13/cobra"},
		mod + "/newpkg":           {"fmt"},
		mod + "/cmd/kcopyd":       {mod, "github.com/spf13/cobra", "github.com/spf13/pflag"},
		mod + "/internal/bufpool": {mod + "/internal/invariants"},
		// The conformance suite must not pull goleak into back ends.
		mod + "/device/devicetest": {mod + "/device", mod + "/internal/testutil"},
	}
	got := importViolations(importRules, imports)
	want := []string{
		mod + " imports " + mod + "/device/nbd",
		mod + "/device/devicetest imports " + mod + "/internal/testutil",
		mod + "/device/faultdev imports " + mod,
		mod + "/device/zoned imports " + mod + "/device/blockdev",
		mod + "/internal/dmio imports github.com/spf13/cobra",
		mod + "/newpkg has no import rule: add one to importRules",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("importViolations =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
