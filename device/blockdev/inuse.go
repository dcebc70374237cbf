//go:build linux

package blockdev

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Usage says who uses a block device, as InUse found it.
type Usage struct {
	// Mounts lists the mount points of the device and of its partitions
	// in this process's mount namespace (/proc/self/mountinfo).
	Mounts []string
	// Holders lists the kernel names of the devices stacked on the
	// device or on its partitions (sysfs holders/), such as "dm-0" for
	// device-mapper and LVM or "md127" for md RAID.
	Holders []string
	// Claimed is true when an exclusive open (O_EXCL) of the device
	// failed with EBUSY. It catches every exclusive user, including ones
	// Mounts and Holders miss: mounts in other namespaces, active swap,
	// multi-device file systems and other processes (or this one)
	// holding the device open with Options.Exclusive.
	Claimed bool
}

// Busy reports whether anything uses the device.
func (u Usage) Busy() bool { return u.Claimed || len(u.Mounts) > 0 || len(u.Holders) > 0 }

// String describes the usage for an error message, for example
// "mounted on /mnt; held by dm-0; claimed exclusively", or "not in use".
func (u Usage) String() string {
	var parts []string
	if len(u.Mounts) > 0 {
		parts = append(parts, "mounted on "+strings.Join(u.Mounts, ", "))
	}
	if len(u.Holders) > 0 {
		parts = append(parts, "held by "+strings.Join(u.Holders, ", "))
	}
	if u.Claimed {
		parts = append(parts, "claimed exclusively")
	}
	if len(parts) == 0 {
		return "not in use"
	}
	return strings.Join(parts, "; ")
}

// InUse reports who uses the block device at path. It combines three
// checks: the mount table (/proc/self/mountinfo) for the device and its
// partitions, their sysfs holders/ directories, and an exclusive open
// (O_RDONLY|O_EXCL) that is closed again at once; the last is the kernel's
// own answer and the one Open with Options.Exclusive enforces. The first
// two explain what the claim is.
//
// The answer is a snapshot: the device may be mounted or claimed right
// after InUse returns. To keep others away while writing, open the device
// with Options.Exclusive. It returns an error wrapping ErrNotBlockDevice
// when path is not a block device.
func InUse(path string) (Usage, error) {
	var u Usage
	if err := checkBlock(path); err != nil {
		return u, err
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return u, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	devs := append([]uint64{st.Rdev}, partitions(sysfsRoot, unix.Major(st.Rdev), unix.Minor(st.Rdev))...)

	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		mounts, err := mountsOf(f, devs)
		f.Close()
		if err != nil {
			return u, err
		}
		u.Mounts = mounts
	} else if !errors.Is(err, os.ErrNotExist) {
		return u, err
	}
	for _, dev := range devs {
		u.Holders = append(u.Holders, holders(sysfsRoot, unix.Major(dev), unix.Minor(dev))...)
	}

	fd, err := openRetry(path, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC)
	switch {
	case err == nil:
		unix.Close(fd)
	case errors.Is(err, unix.EBUSY):
		u.Claimed = true
	default:
		return u, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return u, nil
}

// partitions returns the device numbers of the partitions of disk maj:min
// found in sysfs under root; none when maj:min is a partition or sysfs is
// unavailable.
func partitions(root string, maj, min uint32) []uint64 {
	dir, err := devDir(root, maj, min)
	if err != nil {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var devs []uint64
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "partition")); err != nil {
			continue
		}
		s, err := readString(filepath.Join(dir, e.Name(), "dev"))
		if err != nil {
			continue
		}
		if dev, ok := parseDevNum(s); ok {
			devs = append(devs, dev)
		}
	}
	return devs
}

// holders returns the names in the sysfs holders/ directory of maj:min
// under root.
func holders(root string, maj, min uint32) []string {
	dir, err := devDir(root, maj, min)
	if err != nil {
		return nil
	}
	ents, err := os.ReadDir(filepath.Join(dir, "holders"))
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// parseDevNum parses "major:minor".
func parseDevNum(s string) (uint64, bool) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return 0, false
	}
	maj, err1 := strconv.ParseUint(a, 10, 32)
	min, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return unix.Mkdev(uint32(maj), uint32(min)), true
}

// mountsOf returns the mount points in the mountinfo table r whose device
// (field 3) or mount source is one of devs. Matching the source as well
// catches file systems such as btrfs that report an anonymous device
// number.
func mountsOf(r io.Reader, devs []uint64) ([]string, error) {
	var mounts []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 5 || sep+2 >= len(fields) {
			continue
		}
		match := false
		if dev, ok := parseDevNum(fields[2]); ok && slices.Contains(devs, dev) {
			match = true
		}
		if src := unescapeMountinfo(fields[sep+2]); !match && strings.HasPrefix(src, "/") {
			var st unix.Stat_t
			if unix.Stat(src, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK && slices.Contains(devs, st.Rdev) {
				match = true
			}
		}
		if match {
			mounts = append(mounts, unescapeMountinfo(fields[4]))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	return mounts, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) the kernel
// puts in mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
