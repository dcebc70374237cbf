//go:build linux

package blockdev

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kcopyd/kcopyd/device"
)

// sysfsRoot is where sysfs is mounted. The functions below take the root
// as a parameter so that tests can give them a fake tree.
const sysfsRoot = "/sys"

// queueInfo holds the limits read from a device's sysfs queue directory.
// Fields that could not be read are zero.
type queueInfo struct {
	found               bool // the device's sysfs directory was found
	partition           bool
	diskDev             string // partitions: the disk's "maj:min"
	startBytes          int64  // partitions: offset of the partition on its disk
	maxSectorsBytes     int64
	writeZeroesMaxBytes int64
	discardMaxBytes     int64
	zoned               device.ZoneModel
}

// devDir returns the resolved sysfs directory of block device maj:min under
// root, e.g. /sys/devices/virtual/block/loop0.
func devDir(root string, maj, min uint32) (string, error) {
	return filepath.EvalSymlinks(filepath.Join(root, "dev", "block", fmt.Sprintf("%d:%d", maj, min)))
}

// queueDir returns the queue directory that holds the limits of block device
// maj:min under root, and whether the device is a partition, whose queue is
// its disk's.
func queueDir(root string, maj, min uint32) (dir string, partition bool, err error) {
	dev, err := devDir(root, maj, min)
	if err != nil {
		return "", false, err
	}
	if _, err := os.Stat(filepath.Join(dev, "partition")); err == nil {
		return filepath.Join(filepath.Dir(dev), "queue"), true, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	return filepath.Join(dev, "queue"), false, nil
}

// readQueue reads the queue limits of block device maj:min from sysfs
// under root. Sysfs is advisory: a missing or unreadable file leaves its
// field zero (no limit known, not zoned), so that a device still opens in a
// container without /sys.
func readQueue(root string, maj, min uint32) queueInfo {
	var q queueInfo
	dir, part, err := queueDir(root, maj, min)
	if err != nil {
		return q
	}
	q.found = true
	q.partition = part
	if part {
		// queueDir's dir is <disk>/queue; the partition's own dir holds start.
		disk := filepath.Dir(dir)
		if d, err := readString(filepath.Join(disk, "dev")); err == nil {
			q.diskDev = d
		}
		if dev, err := devDir(root, maj, min); err == nil {
			if st, err := readInt(filepath.Join(dev, "start")); err == nil {
				q.startBytes = st * 512
			}
		}
	}
	if kb, err := readInt(filepath.Join(dir, "max_sectors_kb")); err == nil {
		q.maxSectorsBytes = kb << 10
	}
	if n, err := readInt(filepath.Join(dir, "write_zeroes_max_bytes")); err == nil {
		q.writeZeroesMaxBytes = n
	}
	if n, err := readInt(filepath.Join(dir, "discard_max_bytes")); err == nil {
		q.discardMaxBytes = n
	}
	if s, err := readString(filepath.Join(dir, "zoned")); err == nil {
		q.zoned = parseZoned(s)
	}
	return q
}

// parseZoned maps queue/zoned to a zone model. An unknown model is taken as
// host-managed, the one that constrains writers most.
func parseZoned(s string) device.ZoneModel {
	switch s {
	case "none", "":
		return device.ZoneNone
	case "host-aware":
		return device.ZoneHostAware
	}
	return device.ZoneHostManaged
}

func readString(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func readInt(path string) (int64, error) {
	s, err := readString(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	if n < 0 {
		return 0, fmt.Errorf("%s: negative value %d", path, n)
	}
	return n, nil
}
