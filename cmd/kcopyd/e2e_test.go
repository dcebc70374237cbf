package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
)

// built is the kcopyd binary shared by the tests of one test process,
// built on first use and removed by TestMain.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// buildBinary builds kcopyd once per test process and returns its path;
// the test is skipped under -short.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped under -short")
	}
	return kcopydBinary(t)
}

// kcopydBinary is buildBinary for tests that run, smaller, under -short.
func kcopydBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "kcopyd-bin")
		if built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "kcopyd")
		out, err := exec.Command("go", "build", "-o", built.bin, ".").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// runBinary runs the binary to completion.
func runBinary(t *testing.T, bin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

func TestBinaryLoopDevices(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	var devs []string
	for range 3 {
		devs = append(devs, looptest.New(t, 6<<20))
	}
	dir := t.TempDir()
	data := randomBytes(11, 5<<20+4096)
	src := writeFile(t, dir, "src", data)
	file := filepath.Join(dir, "copy")
	args := append([]string{"copy", "--direct", "--create", "--json", "--sub-job-size", "256K", src, file}, devs...)
	r := runBinary(t, bin, args...)
	if r.code != 0 {
		t.Fatalf("kcopyd %v = %v", args, r)
	}
	var rep jsonReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || rep.Bytes != int64(len(data)) || len(rep.Destinations) != 4 {
		t.Errorf("report %q (%v); want %d bytes, 4 destinations", r.stdout, err, len(data))
	}
	if r := runBinary(t, bin, append([]string{"verify", "--direct", src, file}, devs...)...); r.code != 0 {
		t.Errorf("verify = %v", r)
	}
	if r := runBinary(t, bin, "zero", "--length", "5M", devs[0], devs[1]); r.code != 0 {
		t.Errorf("zero = %v", r)
	}
	r = runBinary(t, bin, "verify", src, devs[0], devs[2])
	if r.code != exitVerify || !strings.Contains(r.stdout, devs[0]+": differs: first differing byte at offset 0") || !strings.Contains(r.stdout, devs[2]+": identical") {
		t.Errorf("verify after zero = %v; want exit 4 with %s differing at 0", r, devs[0])
	}
}

func TestBinaryInterrupt(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	dir := t.TempDir()
	const size = 32 << 20
	data := randomBytes(12, size)
	src := writeFile(t, dir, "src", data)
	dst := filepath.Join(dir, "dst")
	cmd := exec.Command(bin, "copy", "--create", "--rate", "1M", "--no-sparse", "--progress-interval", "100ms", src, dst)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for the first progress line that shows bytes copied, then
	// interrupt.
	sc := bufio.NewScanner(stderr)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if strings.Contains(sc.Text(), "kcopyd: copy: ") && !strings.Contains(sc.Text(), ": 0 B of") {
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(stderr)
	err = cmd.Wait()
	out := strings.Join(lines, "\n") + "\n" + string(rest)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitInterrupted {
		t.Fatalf("interrupted kcopyd: %v; want exit 130\n%s", err, out)
	}
	m := regexp.MustCompile(`kcopyd: (\d+) bytes .* from the start of the region are complete`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no completed byte count in:\n%s", out)
	}
	c, _ := strconv.ParseInt(m[1], 10, 64)
	if c <= 0 || c >= size {
		t.Errorf("completed = %d; want between 0 and %d exclusive", c, size)
	}
	if !bytes.Equal(readFile(t, dst)[:c], data[:c]) {
		t.Errorf("the reported prefix of %d bytes is not the source's", c)
	}
	if !strings.Contains(out, fmt.Sprintf("--offset %d --dest-offset %d --length %d", c, c, size-c)) {
		t.Errorf("no resume hint in:\n%s", out)
	}
}

func TestBinaryRateFile(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	dir := t.TempDir()
	data := randomBytes(13, 16<<20)
	src := writeFile(t, dir, "src", data)
	dst := filepath.Join(dir, "dst")
	rate := writeFile(t, dir, "rate", []byte("1M\n"))
	cmd := exec.Command(bin, "copy", "--create", "--no-sparse", "--rate-file", rate, src, dst)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// At 1MiB/s the copy would take 16 s; lift the limit at once.
	time.Sleep(200 * time.Millisecond)
	if err := os.WriteFile(rate, []byte("unlimited\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("copy: %v\n%s", err, errb.String())
	}
	if !strings.Contains(errb.String(), "rate set to unlimited") {
		t.Errorf("stderr %q does not report the new rate", errb.String())
	}
	if !bytes.Equal(readFile(t, dst), data) {
		t.Errorf("copy differs")
	}
}
