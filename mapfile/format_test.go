package mapfile

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// docMap returns the map of the example in the package documentation.
func docMap(tb testing.TB) *Map {
	const gib = 1 << 30
	j := copyJob(gib, 0)
	j.Dests = []Location{
		{Name: "copy.img", ID: "file:2049:1312", Size: gib},
		{Name: "nbd://backup/disk0", ID: "nbd://backup/disk0", Size: gib},
	}
	m := mustNew(tb, j)
	m.MarkDone(0, gib/2+64<<10+128<<10)
	m.MarkFailed(gib/2, 64<<10)
	m.MarkFailed(gib/2+192<<10, 1<<20, 1)
	return m
}

// zeroMap returns a zero job of two regions on three destinations.
func zeroMap(tb testing.TB) *Map {
	m := mustNew(tb, Job{
		Kind: KindZero,
		Dests: []Location{
			{Name: "/dev/sdb", ID: "file:5:17", Size: 1 << 30},
			{Name: "a b \"quoted\"\tname", ID: "file:2049:99", Size: 1 << 30},
			{Name: "nbd+unix:///x?socket=/run/s", ID: "nbd+unix:///x?socket=/run/s", Size: 1 << 30},
		},
		Regions: []Region{{Length: 1 << 20, DestOffset: 4096}, {Length: 8192, DestOffset: 1 << 29}},
	})
	m.MarkDone(0, 4096)
	m.MarkFailed(4096, 512, 0, 2)
	m.MarkDone(1<<20, 8192)
	return m
}

// TestFormatGolden pins the file format: the maps of the documentation's
// example and of a zero job encode to the files in testdata, and the
// documentation shows the first one line for line.
func TestFormatGolden(t *testing.T) {
	for name, m := range map[string]*Map{"copy.map": docMap(t), "zero.map": zeroMap(t)} {
		got := m.encode(testTime)
		path := filepath.Join("testdata", name)
		if *update {
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: encode =\n%s\nwant\n%s", name, got, want)
		}
	}
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(docMap(t).encode(testTime))) {
		if !bytes.Contains(doc, []byte("//\t"+line)) {
			t.Errorf("doc.go does not show the example line %q", line)
		}
	}
}

func TestFormatRoundTrip(t *testing.T) {
	for name, m := range map[string]*Map{
		"doc":      docMap(t),
		"zero":     zeroMap(t),
		"new":      mustNew(t, copyJob(1000, 8)),
		"empty":    mustNew(t, Job{Kind: KindCopy, Source: Location{ID: "s"}, Dests: []Location{{ID: "d"}}}),
		"complete": func() *Map { m := mustNew(t, copyJob(10, 1)); m.MarkDone(0, 10); return m }(),
		"failed":   func() *Map { m := mustNew(t, copyJob(10, 1)); m.MarkFailed(0, 10, 0); return m }(),
	} {
		t.Run(name, func(t *testing.T) {
			back := checkRoundTrip(t, m)
			if back.Saved() != "2026-11-29T14:30:00Z" {
				t.Errorf("Saved() = %q; want the status time", back.Saved())
			}
		})
	}
}

// withSum returns body followed by its right checksum line.
func withSum(body string) []byte {
	return fmt.Appendf(nil, "%scrc32 %08x\n", body, crc32.ChecksumIEEE([]byte(body)))
}

// TestFormatCorruptRefused checks that every prefix of a map, every
// single-byte change, and well-checksummed but inconsistent maps are
// refused with ErrCorrupt and a message saying what is wrong.
func TestFormatCorruptRefused(t *testing.T) {
	good := docMap(t).encode(testTime)
	for n := range len(good) {
		if _, err := Parse(good[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Parse(first %d of %d bytes) = %v; want ErrCorrupt", n, len(good), err)
		}
	}
	for i := range good {
		bad := bytes.Clone(good)
		bad[i] ^= 0x04
		if _, err := Parse(bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Parse with byte %d changed = %v; want ErrCorrupt", i, err)
		}
	}
	body := string(good[:bytes.LastIndex(good[:len(good)-1], []byte("\n"))+1])
	tests := []struct {
		name, old, new, want string
	}{
		{"version", "kcopyd map v1", "kcopyd map v2", `format "kcopyd map v2" is not supported`},
		{"not a map", "kcopyd map v1", "ddrescue", "not a kcopyd map"},
		{"kind", "kind copy", "kind move", `kind "move"`},
		{"no source", "source \"disk.img\" id \"file:2049:1311\" size 1073741824\n", "", `"source" line`},
		{"dest index", "dest 1", "dest 2", "dest 2 where dest 1 was due"},
		{"negative size", "size 1073741824\ndest 0", "size -1\ndest 0", `"-1" is not a number`},
		{"status counts", "done 537001984", "done 537001985", "disagrees with the ranges"},
		{"status word", "status running", "status complete", "disagrees with the ranges"},
		{"status time", "2026-11-29T14:30:00Z", "yesterday", "not RFC 3339"},
		{"gap", "536936448 131072 done", "536936449 131071 done", "previous one ended at 536936448"},
		{"not merged", "536870912 65536 failed read", "536870912 65536 done", "state of the one before"},
		{"short", "538116096 535625728 untried", "538116096 535625727 untried", "the job is 1073741824 bytes"},
		{"past end", "538116096 535625728 untried", "538116096 535625729 untried", "runs past the job's end"},
		{"state", "failed read", "failed badly", `state "failed badly"`},
		{"dest list", "write=1", "write=2", "below 2"},
		{"dest order", "write=1", "write=1,0", "ascending"},
		{"empty length", "536936448 131072 done", "536936448 0 done", "above 0"},
		{"double space", "region 0 1073741824 0", "region 0  1073741824 0", "one space"},
		{"trailing space", "chunk 1048576", "chunk 1048576 ", "one space"},
		{"bad quote", `"copy.img"`, `"copy.img`, "line 5:"},
		{"unterminated", `"copy.img" id "file:2049:1312" size 1073741824`, `"copy.img`, "bad quoted string"},
		{"overflow", "size 1073741824\ndest 0", "size 99999999999999999999\ndest 0", "value out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(body, tt.old) {
				t.Fatalf("the body has no %q", tt.old)
			}
			_, err := Parse(withSum(strings.Replace(body, tt.old, tt.new, 1)))
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse = %v; want ErrCorrupt saying %q", err, tt.want)
			}
		})
	}
	for name, data := range map[string]string{
		"empty":        "",
		"no newline":   strings.TrimSuffix(string(good), "\n"),
		"no checksum":  body,
		"only sum":     string(withSum("")),
		"sum upper":    strings.ToUpper(string(good[len(body):])),
		"after sum":    string(good) + "0 1 done\n",
		"wrong sum":    body + "crc32 00000000\n",
		"sum too long": body + "crc32 0000000000\n",
	} {
		if _, err := Parse([]byte(data)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Parse(%s) = %v; want ErrCorrupt", name, err)
		}
	}
}

func TestFormatZeroReadFailureRefused(t *testing.T) {
	body := string(zeroMap(t).encode(testTime))
	body = body[:strings.LastIndex(body[:len(body)-1], "\n")+1]
	bad := strings.Replace(body, "failed write=0,2", "failed read", 1)
	if _, err := Parse(withSum(bad)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Parse(zero map with a read failure) = %v; want ErrCorrupt", err)
	}
	bad = strings.Replace(body, "region - 8192", "region 0 8192", 1)
	if _, err := Parse(withSum(bad)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Parse(zero map with a source offset) = %v; want ErrCorrupt", err)
	}
}
