package nbdserver_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/nbd/nbdserver"
	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

// These tests drive the server with the real clients of libnbd-bin
// (nbdinfo, nbdcopy, nbdsh) and qemu-utils (qemu-img, qemu-io).

// run runs a program to completion and returns its standard output,
// failing the test when it fails.
func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := command(tb, name, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		tb.Fatalf("%s %q: %v\n%s%s", name, args, err, out, stderr)
	}
	return string(out)
}

// command returns the command for a program, skipping the test when it is
// not installed. nbdsh runs "python3 -m nbd": /usr/bin comes first in its
// PATH so that it finds the Debian python3 with the nbd module
// (python3-libnbd) rather than another python3.
func command(tb testing.TB, name string, args ...string) *exec.Cmd {
	tb.Helper()
	bin := nbdtest.NeedBin(tb, name)
	cmd := exec.Command(bin, args...)
	if name == "nbdsh" {
		cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin:"+os.Getenv("PATH"))
	}
	return cmd
}

// writeTemp writes data to the file name in dir and returns its path.
func writeTemp(tb testing.TB, dir, name string, data []byte) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// fileDev creates a file of size bytes holding data at offset 0 and opens
// it as a device, closed when the test ends.
func fileDev(tb testing.TB, size int64, data []byte) (*device.File, string) {
	tb.Helper()
	p := writeTemp(tb, tb.TempDir(), "disk.img", data)
	if err := os.Truncate(p, size); err != nil {
		tb.Fatal(err)
	}
	f, err := device.OpenFile(p, device.FileOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	return f, p
}

func TestNbdinfoList(t *testing.T) {
	s := serve(t, memDev(t, 3<<20), &nbdserver.Options{Name: "disk1", Description: "a test disk"})
	out := run(t, "nbdinfo", "--list", "--json", s.uri)
	for _, want := range []string{`"export-name": "disk1"`, `"description": "a test disk"`, `"export-size": 3145728`,
		`"can_multi_conn": true`, `"base:allocation"`, `"block_size_maximum": 33554432`} {
		if !strings.Contains(out, want) {
			t.Errorf("nbdinfo --list --json lacks %s:\n%s", want, out)
		}
	}
}

func TestNbdinfoMap(t *testing.T) {
	m := memDev(t, 1<<20)
	testutil.WriteRange(t, m, 256<<10, bytes.Repeat([]byte{9}, 128<<10))
	s := serve(t, m, nil)
	out := run(t, "nbdinfo", "--map", s.uri)
	fields := func(line string) string { return strings.Join(strings.Fields(line), " ") }
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		got = append(got, fields(l))
	}
	want := []string{"0 262144 3 hole,zero", "262144 131072 0 data", "393216 655360 3 hole,zero"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("nbdinfo --map =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestNbdcopyBothWays(t *testing.T) {
	const size = 24 << 20
	data := testutil.Pattern(11, 0, size)
	dir := t.TempDir()
	src := writeTemp(t, dir, "src.img", data)
	f, img := fileDev(t, size, nil)
	s := serve(t, f, nil)
	run(t, "nbdcopy", "--flush", src, s.uri)
	if got, _ := os.ReadFile(img); !bytes.Equal(got, data) {
		t.Fatal("nbdcopy into the server: the file differs from the source")
	}
	back := filepath.Join(dir, "back.img")
	run(t, "nbdcopy", "-C", "4", s.uri, back)
	if got, _ := os.ReadFile(back); !bytes.Equal(got, data) {
		t.Fatal("nbdcopy out of the server: the copy differs from the file")
	}
}

func TestQemuImgConvert(t *testing.T) {
	const size = 8 << 20
	data := testutil.Pattern(12, 0, size)
	dir := t.TempDir()
	src := writeTemp(t, dir, "src.img", data)
	f, img := fileDev(t, size, bytes.Repeat([]byte{0xff}, size))
	s := serve(t, f, nil)
	run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, s.uri)
	if got, _ := os.ReadFile(img); !bytes.Equal(got, data) {
		t.Fatal("qemu-img convert into the server: the file differs from the source")
	}
	back := filepath.Join(dir, "back.img")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", s.uri, back)
	if got, _ := os.ReadFile(back); !bytes.Equal(got, data) {
		t.Fatal("qemu-img convert out of the server: the copy differs")
	}
}

func TestQemuIO(t *testing.T) {
	f, img := fileDev(t, 4<<20, nil)
	s := serve(t, f, nil)
	out := run(t, "qemu-io", "-f", "raw",
		"-c", "write -P 0xab 4096 1M",
		"-c", "write -z 8192 4096",
		"-c", "write -P 0xcd -f 2M 64k",
		"-c", "read -P 0xab 4096 4096",
		"-c", "read -P 0 8192 4096",
		"-c", "read -P 0xab 12288 1036288",
		"-c", "read -P 0xcd 2M 64k",
		"-c", "flush",
		s.uri)
	if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "failed") {
		t.Fatalf("qemu-io:\n%s", out)
	}
	got, _ := os.ReadFile(img)
	want := make([]byte, 4<<20)
	copy(want[4096:], bytes.Repeat([]byte{0xab}, 1<<20))
	clear(want[8192 : 8192+4096])
	copy(want[2<<20:], bytes.Repeat([]byte{0xcd}, 64<<10))
	if !bytes.Equal(got, want) {
		t.Fatal("the file does not hold what qemu-io wrote")
	}
}
