//go:build linux

package blockdev

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/kcopyd/kcopyd/device"
)

// loopMajor is the block major number of loop devices (LOOP_MAJOR).
const loopMajor = 7

// placement returns the store under the block device maj:min open as fd,
// and the byte offset at which the device starts in it, from what sysfs
// said in q:
//
//   - a partition lies in its disk, at its start;
//   - a loop device (or a partition of one) lies in its backing file, at
//     the loop's offset (LOOP_GET_STATUS64): the file's identity is
//     device.FileIdentity of the (st_dev, st_ino) the kernel reports, so
//     the loop device and every open of the file, by any name, are one
//     store. A loop over a block device lies in that device (or its disk).
//   - anything else is its own store, at 0.
//
// A loop device's size already ends at its sizelimit, so the offset is all
// that placement needs. A loop device over another loop device is placed
// in that loop device, not in the file beneath it.
func placement(fd int, maj, min uint32, q queueInfo) (store string, off int64) {
	store = fmt.Sprintf("blk:%d:%d", maj, min)
	diskMaj := maj
	if q.partition && q.diskDev != "" {
		store, off = "blk:"+q.diskDev, q.startBytes
		if n, ok := parseDevNum(q.diskDev); ok {
			diskMaj = unix.Major(n)
		}
	}
	if !q.found || diskMaj != loopMajor {
		// Without sysfs a loop partition cannot be told from its disk,
		// and its start is unknown: stay with what is certain.
		return store, off
	}
	info, err := unix.IoctlLoopGetStatus64(fd)
	if err != nil {
		// ENXIO: no file is attached; the device has size 0.
		return store, off
	}
	base := int64(info.Offset)
	if info.Rdevice != 0 {
		// The backing "file" is a block device node: place the loop in
		// that device, or in its disk when it is a partition.
		bmaj, bmin := unix.Major(info.Rdevice), unix.Minor(info.Rdevice)
		bq := readQueue(sysfsRoot, bmaj, bmin)
		bstore := fmt.Sprintf("blk:%d:%d", bmaj, bmin)
		if bq.partition && bq.diskDev != "" {
			bstore, base = "blk:"+bq.diskDev, base+bq.startBytes
		}
		return bstore, off + base
	}
	return device.FileIdentity(info.Device, info.Inode), off + base
}
