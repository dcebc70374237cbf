package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

func TestVerify(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := randomBytes(1, 2<<20+77)
	src := writeFile(t, dir, "src", data)
	same := writeFile(t, dir, "same", data)
	longer := writeFile(t, dir, "longer", append(append([]byte(nil), data...), 1, 2, 3))
	diff := append([]byte(nil), data...)
	diff[70000] ^= 1
	diff[70001] ^= 1
	diff[2<<20+5] ^= 0xff
	other := writeFile(t, dir, "other", diff)

	r := runCLI(t, "", "verify", src, same, longer)
	if r.code != 0 || !strings.Contains(r.stdout, same+": identical") {
		t.Errorf("verify identical = %v; want exit 0", r)
	}
	r = runCLI(t, "", "verify", "--sub-job-size", "64K", src, same, other)
	if r.code != exitVerify || !strings.Contains(r.stdout, other+": differs: first differing byte at offset 70000; 2 chunks") {
		t.Errorf("verify with a difference = %v; want exit 4 naming offset 70000 and 2 chunks", r)
	}
	r = runCLI(t, "", "verify", "--json", "--offset", "100", "--length", "100000", "--dest-offset", "100", src, other)
	var rep jsonReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("verify --json = %v: %v", r, err)
	}
	d := rep.Destinations[0]
	if r.code != exitVerify || d.FirstDifference == nil || *d.FirstDifference != 70000 || *d.DifferingChunks != 1 || *d.Identical {
		t.Errorf("verify --json = %+v; want the first difference at 70000 in 1 chunk", d)
	}
	// Regions: skip the difference.
	r = runCLI(t, "0 70000 0\n70002 10000 70002\n", "verify", "--regions", "-", src, other)
	if r.code != 0 {
		t.Errorf("verify --regions around the difference = %v; want exit 0", r)
	}
}

func TestVerifyBadInput(t *testing.T) {
	t.Parallel()
	checkBadInputs(t, []badInput{
		{"short destination", func(t *testing.T, dir string) ([]string, string) {
			src, ds := files(t, dir, 1, 1<<19)
			return []string{"verify", src, ds[0]}, ""
		}, "beyond the end"},
		{"missing destination", func(t *testing.T, dir string) ([]string, string) {
			src, _ := files(t, dir, 0, 0)
			return []string{"verify", src, dir + "/nope"}, ""
		}, "does not exist"},
		{"missing source", func(t *testing.T, dir string) ([]string, string) {
			_, ds := files(t, dir, 1, 1<<20)
			return []string{"verify", dir + "/nope", ds[0]}, ""
		}, "does not exist"},
		{"one argument", func(t *testing.T, dir string) ([]string, string) {
			src, _ := files(t, dir, 0, 0)
			return []string{"verify", src}, ""
		}, "at least one DEST"},
	})
}

func TestVerifyUnreadable(t *testing.T) {
	t.Parallel()
	if os.Geteuid() == 0 {
		t.Skip("root can read a file without read permission")
	}
	dir := t.TempDir()
	src, ds := files(t, dir, 1, 1<<20)
	os.Chmod(src, 0)
	r := runCLI(t, "", "verify", src, ds[0])
	if r.code != exitUsage || !strings.Contains(r.stderr, "permission denied") {
		t.Errorf("verify of an unreadable source = %v; want exit 1", r)
	}
}
