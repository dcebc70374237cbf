package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

// result is what one in-process run of the CLI produced.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs kcopyd in-process with args and stdin, as main would.
func runCLI(t testing.TB, stdin string, args ...string) result {
	t.Helper()
	return runCLIContext(t, context.Background(), stdin, args...)
}

func runCLIContext(t testing.TB, ctx context.Context, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := runContext(ctx, args, strings.NewReader(stdin), &out, &errb)
	return result{code, out.String(), errb.String()}
}

func (r result) String() string {
	return "exit " + strconv.Itoa(r.code) + "\nstdout: " + r.stdout + "\nstderr: " + r.stderr
}

// randomBytes returns n bytes of the test pattern for seed.
func randomBytes(seed uint64, n int64) []byte { return testutil.Pattern(seed, 0, int(n)) }

// firstDiff is device.FirstDiff: -1 when a and b are equal.
var firstDiff = device.FirstDiff

// writeFile writes b to a new file name in dir and returns its path.
func writeFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	return testutil.WriteFile(t, dir, name, b)
}

// readFile returns the contents of path.
func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fingerprint returns a hash of a path's contents, "missing", or the
// type of what is not a regular file (opening a FIFO would block).
func fingerprint(t testing.TB, path string) string {
	t.Helper()
	if st, err := os.Stat(path); err == nil && st.Mode()&(os.ModeNamedPipe|os.ModeSocket|os.ModeCharDevice) != 0 {
		return st.Mode().Type().String()
	}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return "missing"
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.IsDir() {
		return "dir"
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	return strconv.FormatInt(n, 10) + ":" + string(h.Sum(nil))
}

// snapshot records the contents of paths; unchanged checks them later.
type snapshot map[string]string

func takeSnapshot(t testing.TB, paths ...string) snapshot {
	t.Helper()
	s := snapshot{}
	for _, p := range paths {
		s[p] = fingerprint(t, p)
	}
	return s
}

func (s snapshot) unchanged(t testing.TB) {
	t.Helper()
	for p, fp := range s {
		if got := fingerprint(t, p); got != fp {
			t.Errorf("%s changed (had %d bytes of fingerprint %q, now %q)", p, len(fp), short(fp), short(got))
		}
	}
}

func short(s string) string {
	if i := strings.IndexByte(s, ':'); i >= 0 {
		return s[:i]
	}
	return s
}

// execCommand runs a program and returns its combined output.
func execCommand(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
