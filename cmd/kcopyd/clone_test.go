package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd/device/blockdev/looptest"
	"github.com/kcopyd/kcopyd/device/nbd/nbdtest"
)

// TestCloneUsageErrors: bad input exits 1 and writes nothing: no DEST, no
// metadata, no socket is left behind, existing files are unchanged.
func TestCloneUsageErrors(t *testing.T) {
	t.Parallel()
	dir := nbdtest.ShortDir(t)
	src := writeFile(t, dir, "src.img", randomBytes(31, 1<<20))
	other := writeFile(t, dir, "other.img", randomBytes(32, 1<<20))
	small := writeFile(t, dir, "small.img", randomBytes(33, 1<<19))
	dst := writeFile(t, dir, "dst.img", randomBytes(34, 1<<20))
	meta := filepath.Join(dir, "m.clone")
	sock := filepath.Join(dir, "s")
	// A finished clone of src onto dst, for the metadata.
	if r := runCLI(t, "", "clone", "--quiet", "--until-hydrated", "--region-size", "16K", src, dst, "--metadata", meta, "--socket", sock); r.code != 0 {
		t.Fatalf("first clone: %v", r)
	}
	junk := writeFile(t, dir, "junk", randomBytes(35, 64<<10))
	snap := takeSnapshot(t, src, other, small, dst, meta, junk)
	newDst, newMeta := filepath.Join(dir, "new.img"), filepath.Join(dir, "new.clone")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no metadata", []string{src, dst, "--socket", sock}, "--metadata"},
		{"no socket", []string{src, dst, "--metadata", meta}, "--socket"},
		{"socket and listen", []string{src, dst, "--metadata", meta, "--socket", sock, "--listen", "127.0.0.1:0"}, "--socket"},
		{"one argument", []string{src, "--metadata", meta, "--socket", sock}, "SOURCE and DEST"},
		{"bad region size", []string{src, newDst, "--create", "--metadata", newMeta, "--socket", sock, "--region-size", "12K"}, "power of two"},
		{"DEST missing", []string{src, newDst, "--metadata", newMeta, "--socket", sock}, "--create"},
		{"DEST smaller", []string{src, small, "--metadata", newMeta, "--socket", sock}, "smaller"},
		{"DEST is SOURCE", []string{src, src, "--metadata", newMeta, "--socket", sock}, "overlap"},
		{"metadata of another SOURCE", []string{other, dst, "--metadata", meta, "--socket", sock}, "another clone"},
		{"metadata of another region size", []string{src, dst, "--metadata", meta, "--socket", sock, "--region-size", "64K"}, "region size"},
		{"not metadata", []string{src, dst, "--metadata", junk, "--socket", sock}, "not clone metadata"},
		{"metadata is DEST", []string{src, dst, "--metadata", dst, "--socket", sock}, "overlap"},
		{"URL DEST", []string{src, "nbd://localhost/x", "--metadata", newMeta, "--socket", sock}, "file or block device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, "", append([]string{"clone"}, tt.args...)...)
			if r.code != 1 || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("got %v; want exit 1 and %q", r, tt.want)
			}
			snap.unchanged(t)
			for _, p := range []string{newDst, newMeta, sock} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was left behind", p)
				}
			}
		})
	}
}

// cloneProc is a running kcopyd clone.
type cloneProc struct {
	*serveProc
	args []string
}

// startClone starts kcopyd clone with args and waits until it serves.
func startClone(t *testing.T, bin string, args ...string) *cloneProc {
	t.Helper()
	return &cloneProc{startServer(t, bin, append([]string{"clone"}, args...)...), args}
}

// kill kills the clone with SIGKILL.
func (p *cloneProc) kill(t *testing.T) {
	t.Helper()
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

// finish waits for a clone run with --until-hydrated to exit 0.
func (p *cloneProc) finish(t *testing.T) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("kcopyd clone %q: %v\n%s", p.args, err, p.stderr.String())
		}
	case <-time.After(2 * time.Minute):
		p.cmd.Process.Kill()
		t.Fatalf("kcopyd clone %q did not finish\n%s", p.args, p.stderr.String())
	}
}

// qemuIO runs qemu-io commands on url and fails on any error, including a
// failed pattern check of "read -P".
func qemuIO(t *testing.T, url string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := tool(t, "qemu-io", append(args, url)...)
	if strings.Contains(out, "fail") || strings.Contains(out, "error") {
		t.Fatalf("qemu-io %q:\n%s", cmds, out)
	}
}

// cloneScenario runs the end-to-end scenario on SOURCE srcURL (8 MiB
// holding want) and DEST dst: while a clone throttled to 1 MiB/s hydrates, nbdcopy reads the
// export and gets SOURCE, qemu-io writes partial and whole regions and
// reads them back; the clone is killed with SIGKILL at a random moment,
// restarted, killed again, and finally run with --until-hydrated. It
// returns want with the writes applied.
func cloneScenario(t *testing.T, bin, srcURL, dst string, want []byte, extra ...string) []byte {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 5))
	dir := nbdtest.ShortDir(t)
	sock := filepath.Join(dir, "s")
	meta := filepath.Join(dir, "m.clone")
	args := append([]string{srcURL, dst, "--metadata", meta, "--socket", sock, "--region-size", "64K", "--progress-interval", "100ms"}, extra...)
	p := startClone(t, bin, append(args, "--rate", "1M")...) // 8 s for 8 MiB
	out := filepath.Join(dir, "out.img")
	tool(t, "nbdcopy", p.url, out)
	if got := readFile(t, out); !bytes.Equal(got, want) {
		t.Fatal("nbdcopy of the export during hydration differs from SOURCE")
	}
	want = bytes.Clone(want)
	qemuIO(t, p.url,
		"write -P 0x11 100000 1000",    // part of region 1
		"write -P 0x22 1M 128k",        // regions 16 and 17, whole
		"write -P 0x33 3000000 200000", // parts of 45 and 48, all of 46 and 47
		"read -P 0x11 100000 1000", "read -P 0x22 1M 128k", "read -P 0x33 3000000 200000")
	for _, w := range []struct {
		off, n int
		b      byte
	}{{100000, 1000, 0x11}, {1 << 20, 128 << 10, 0x22}, {3000000, 200000, 0x33}} {
		copy(want[w.off:w.off+w.n], bytes.Repeat([]byte{w.b}, w.n))
	}
	time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond) // a random moment
	p.kill(t)
	p = startClone(t, bin, append(args, "--rate", "8M")...)
	if err := exec.Command(nbdtest.NeedBin(t, "nbdcopy"), p.url, out).Run(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, out); !bytes.Equal(got, want) {
		t.Fatalf("after a SIGKILL and a restart, the export differs from SOURCE with the writes at byte %d", firstDiff(got, want))
	}
	time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
	p.kill(t)
	p = startClone(t, bin, append(args, "--until-hydrated", "--json")...)
	p.finish(t)
	return want
}

// cloneSetup builds the binary, checks for the NBD tools and writes an
// 8 MiB SOURCE image of seeded random data into a fresh directory.
func cloneSetup(t *testing.T, seed uint64) (bin, dir, img string, data []byte) {
	bin = buildBinary(t)
	nbdtest.NeedBin(t, "nbdcopy")
	nbdtest.NeedBin(t, "qemu-io")
	dir = nbdtest.ShortDir(t)
	data = randomBytes(seed, 8<<20)
	return bin, dir, writeFile(t, dir, "src.img", data), data
}

// TestBinaryClone clones an nbdkit export behind the delay filter (a slow
// remote store) into a new file.
func TestBinaryClone(t *testing.T) {
	t.Parallel()
	bin, dir, img, data := cloneSetup(t, 36)
	srv := nbdtest.Nbdkit(t, "--filter=delay", "file", img, "rdelay=2ms")
	dst := filepath.Join(dir, "dst.img")
	want := cloneScenario(t, bin, srv.URI, dst, data, "--create")
	if got := readFile(t, dst); !bytes.Equal(got, want) {
		t.Fatalf("DEST differs from SOURCE with the writes at byte %d", firstDiff(got, want))
	}
	if !bytes.Equal(readFile(t, img), data) {
		t.Fatal("SOURCE changed")
	}
}

// TestBinaryCloneLoop clones a file onto a loop device.
func TestBinaryCloneLoop(t *testing.T) {
	t.Parallel()
	bin, _, img, data := cloneSetup(t, 37)
	loop, backing := looptest.NewWithFile(t, 9<<20)
	want := cloneScenario(t, bin, img, loop, data)
	if got := readFile(t, backing)[:len(want)]; !bytes.Equal(got, want) {
		t.Fatalf("the loop device differs from SOURCE with the writes at byte %d", firstDiff(got, want))
	}
}

// TestBinaryCloneInterrupt: SIGINT stops a clone cleanly (exit 130 with
// --until-hydrated before the end, the metadata committed), and the same
// command then resumes without copying again what was copied.
func TestBinaryCloneInterrupt(t *testing.T) {
	t.Parallel()
	bin, dir, img, data := cloneSetup(t, 38)
	dst := filepath.Join(dir, "dst.img")
	args := []string{"--create", "--until-hydrated", img, dst, "--metadata", filepath.Join(dir, "m"), "--socket", filepath.Join(dir, "s")}
	p := startClone(t, bin, append(args, "--rate", "1M")...)
	// A partial write hydrates its region, and qemu-io flushes at exit.
	qemuIO(t, p.url, "write -P 0x44 4M 512")
	copy(data[4<<20:], bytes.Repeat([]byte{0x44}, 512))
	if code := p.stop(t, os.Interrupt); code != exitInterrupted {
		t.Fatalf("after SIGINT: exit %d; want %d\n%s", code, exitInterrupted, p.stderr.String())
	}
	r := runBinary(t, bin, append([]string{"clone", "--json"}, args...)...)
	if r.code != 0 || !strings.Contains(r.stdout, `"done":true`) {
		t.Fatalf("resumed run: %v", r)
	}
	var rep struct {
		CopiedBytes int64 `json:"copied_bytes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.CopiedBytes > int64(len(data))-64<<10 {
		t.Errorf("the resumed run copied %d bytes; want only what the first run had not", rep.CopiedBytes)
	}
	if !bytes.Equal(readFile(t, dst), data) {
		t.Fatal("DEST differs from SOURCE")
	}
}
