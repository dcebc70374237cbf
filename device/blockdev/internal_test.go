//go:build linux

package blockdev

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device"
)

// fakeSysfs builds a sysfs tree under a temporary root with a disk 8:0
// ("sda") with partition 8:1 ("sda1"), and returns the root. queue holds the
// disk's queue files by name.
func fakeSysfs(t testing.TB, queue map[string]string) string {
	t.Helper()
	root := t.TempDir()
	disk := filepath.Join(root, "devices", "pci0000:00", "block", "sda")
	part := filepath.Join(disk, "sda1")
	for _, dir := range []string{filepath.Join(disk, "queue"), filepath.Join(disk, "holders"), filepath.Join(part, "holders"), filepath.Join(root, "dev", "block")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, v := range queue {
		write(filepath.Join(disk, "queue", name), v)
	}
	write(filepath.Join(disk, "dev"), "8:0")
	write(filepath.Join(part, "dev"), "8:1")
	write(filepath.Join(part, "partition"), "1")
	write(filepath.Join(part, "start"), "2048")
	if err := os.Mkdir(filepath.Join(part, "holders", "dm-3"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Real sysfs uses relative links: /sys/dev/block/8:0 -> ../../devices/...
	for link, target := range map[string]string{"8:0": "../../devices/pci0000:00/block/sda", "8:1": "../../devices/pci0000:00/block/sda/sda1"} {
		if err := os.Symlink(target, filepath.Join(root, "dev", "block", link)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestReadQueue(t *testing.T) {
	root := fakeSysfs(t, map[string]string{
		"max_sectors_kb":         "1280",
		"write_zeroes_max_bytes": "0",
		"discard_max_bytes":      "2147450880",
		"zoned":                  "host-managed",
	})
	want := queueInfo{
		found:               true,
		maxSectorsBytes:     1280 << 10,
		writeZeroesMaxBytes: 0,
		discardMaxBytes:     2147450880,
		zoned:               device.ZoneHostManaged,
	}
	if got := readQueue(root, 8, 0); got != want {
		t.Errorf("readQueue(disk 8:0) = %+v; want %+v", got, want)
	}
	// A partition has no queue of its own: its disk's is used. Its
	// placement is its disk and its start (2048 sectors).
	want.partition, want.diskDev, want.startBytes = true, "8:0", 2048*512
	if got := readQueue(root, 8, 1); got != want {
		t.Errorf("readQueue(partition 8:1) = %+v; want %+v", got, want)
	}
	// No such device, or no sysfs at all: no limits known, not zoned.
	if got := readQueue(root, 9, 9); got != (queueInfo{}) {
		t.Errorf("readQueue(missing 9:9) = %+v; want zero", got)
	}
	if got := readQueue(filepath.Join(root, "nonexistent"), 8, 0); got != (queueInfo{}) {
		t.Errorf("readQueue(no sysfs) = %+v; want zero", got)
	}
}

func TestReadQueueBadValues(t *testing.T) {
	root := fakeSysfs(t, map[string]string{
		"max_sectors_kb":    "lots",
		"discard_max_bytes": "-5",
		"zoned":             "host-aware",
	})
	want := queueInfo{found: true, zoned: device.ZoneHostAware}
	if got := readQueue(root, 8, 0); got != want {
		t.Errorf("readQueue(bad values) = %+v; want %+v", got, want)
	}
}

func TestParseZoned(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want device.ZoneModel
	}{
		{"none", device.ZoneNone},
		{"host-aware", device.ZoneHostAware},
		{"host-managed", device.ZoneHostManaged},
		{"something-new", device.ZoneHostManaged}, // unknown: assume the strictest
	} {
		if got := parseZoned(tc.in); got != tc.want {
			t.Errorf("parseZoned(%q) = %v; want %v", tc.in, got, tc.want)
		}
	}
}

func TestPartitionsAndHolders(t *testing.T) {
	root := fakeSysfs(t, nil)
	if got, want := partitions(root, 8, 0), []uint64{unix.Mkdev(8, 1)}; !slices.Equal(got, want) {
		t.Errorf("partitions(8:0) = %v; want %v", got, want)
	}
	if got := partitions(root, 8, 1); len(got) != 0 {
		t.Errorf("partitions(8:1) = %v; want none", got)
	}
	if got := holders(root, 8, 0); len(got) != 0 {
		t.Errorf("holders(8:0) = %v; want none", got)
	}
	if got, want := holders(root, 8, 1), []string{"dm-3"}; !slices.Equal(got, want) {
		t.Errorf("holders(8:1) = %v; want %v", got, want)
	}
}

func TestMountsOf(t *testing.T) {
	const mountinfo = `22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 7:3 / /mnt/with\040space rw,relatime shared:5 - ext4 /dev/loop3 rw
41 27 7:4 /sub /srv/bind rw,relatime master:1 shared:7 - xfs /dev/loop4 rw
garbage line
`
	devs := []uint64{unix.Mkdev(7, 3), unix.Mkdev(7, 4)}
	got, err := mountsOf(strings.NewReader(mountinfo), devs)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/mnt/with space", "/srv/bind"}; !slices.Equal(got, want) {
		t.Errorf("mountsOf(loop3, loop4) = %q; want %q", got, want)
	}
	got, err = mountsOf(strings.NewReader(mountinfo), []uint64{unix.Mkdev(7, 9)})
	if err != nil || len(got) != 0 {
		t.Errorf("mountsOf(loop9) = %q, %v; want none", got, err)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`/plain`, `/plain`},
		{`/a\040b`, `/a b`},
		{`/tab\011x\134y`, "/tab\tx\\y"},
		{`/short\04`, `/short\04`},
		{`/not\999octal`, `/not\999octal`},
	} {
		if got := unescapeMountinfo(tc.in); got != tc.want {
			t.Errorf("unescapeMountinfo(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func TestUsageString(t *testing.T) {
	for _, tc := range []struct {
		u    Usage
		busy bool
		want string
	}{
		{Usage{}, false, "not in use"},
		{Usage{Claimed: true}, true, "claimed exclusively"},
		{Usage{Mounts: []string{"/mnt", "/srv"}, Holders: []string{"dm-0"}, Claimed: true}, true, "mounted on /mnt, /srv; held by dm-0; claimed exclusively"},
	} {
		if got := tc.u.String(); got != tc.want {
			t.Errorf("%#v.String() = %q; want %q", tc.u, got, tc.want)
		}
		if got := tc.u.Busy(); got != tc.busy {
			t.Errorf("%#v.Busy() = %v; want %v", tc.u, got, tc.busy)
		}
	}
}
