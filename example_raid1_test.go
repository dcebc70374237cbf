package kcopyd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
)

// mirrorSet is a dm-raid1 mirror set: its legs, the default leg that
// recovery reads from, and the state its recovery callbacks keep. The
// callbacks run one at a time on the set's client worker, so the fields
// they change need no lock; main reads them after the set's done channel
// is closed.
type mirrorSet struct {
	name       string
	kc         *kcopyd.Client
	legs       []device.Device
	defaultLeg int
	regionSize int64
	flags      kcopyd.Flags

	failed []bool   // legs failed by recovery (fail_mirror)
	log    []string // one line per recovered region
	done   chan struct{}
}

// recover copies region r from the default leg to every other leg in one
// job, as dm-raid1's recover() does; the callback recovers the next region.
func (ms *mirrorSet) recover(r int64) {
	size := ms.legs[0].Size()
	if r*ms.regionSize >= size {
		close(ms.done)
		return
	}
	n := min(ms.regionSize, size-r*ms.regionSize) // the last region may be shorter
	from := kcopyd.Region{Dev: ms.legs[ms.defaultLeg], Off: r * ms.regionSize, Len: n}
	var to []kcopyd.Region
	for i, leg := range ms.legs {
		if i != ms.defaultLeg {
			to = append(to, kcopyd.Region{Dev: leg, Off: from.Off, Len: n})
		}
	}
	_, err := ms.kc.Copy(context.Background(), from, to, ms.flags, func(readErr bool, writeErr uint64, err error) {
		ms.recoveryComplete(r, n, readErr, writeErr, err)
		ms.recover(r + 1) // callbacks may submit jobs
	})
	if err != nil {
		panic(err) // a refused job: a bug in the target
	}
}

// recoveryComplete is dm-raid1's recovery_complete: a read error fails the
// default leg; write_err bit i belongs to the i-th leg other than the
// default one, and fails it. The region is in sync only if nothing failed.
func (ms *mirrorSet) recoveryComplete(r, n int64, readErr bool, writeErr uint64, err error) {
	if readErr {
		ms.failed[ms.defaultLeg] = true
	}
	var legs []int
	bit := 0
	for i := range ms.legs {
		if i == ms.defaultLeg {
			continue
		}
		if writeErr&(1<<bit) != 0 {
			ms.failed[i] = true
			legs = append(legs, i)
		}
		bit++
	}
	if !readErr && writeErr == 0 {
		ms.log = append(ms.log, fmt.Sprintf("region %d (%d bytes) in sync", r, n))
		return
	}
	line := fmt.Sprintf("region %d out of sync: read_err=%v write_err=%#b, failed legs %v", r, readErr, writeErr, legs)
	var je *kcopyd.JobError
	if errors.As(err, &je) {
		for bit, ranges := range je.WriteRanges {
			if len(ranges) > 0 {
				line += fmt.Sprintf("; bit %d failed at %v", bit, ranges)
			}
		}
	}
	ms.log = append(ms.log, line)
}

// Example_raid1Resync models dm-raid1's resynchronisation of a mirror
// (drivers/md/dm-raid1.c, recover and recovery_complete). Each mirror set
// has its own client, and all of them share one throttle group, the
// kernel's raid1_resync_throttle: here two sets, two clients and one
// Throttle. A set recovers one region at a time: a single job reads the
// region once from the default leg and writes it to every other leg.
// Unless the set handles errors itself, the job carries IgnoreError, so a
// leg that cannot be written does not stop the copy to the others. The
// callback maps write_err bit i to the i-th leg other than the default leg
// and fails that leg (a read error would fail the default leg), and
// JobError.WriteRanges says which bytes of the leg are not in sync. The
// last region of a set whose size is not a multiple of the region size is
// shorter.
func Example_raid1Resync() {
	const regionSize = 64 << 10
	group := kcopyd.NewThrottle(100) // raid1_resync_throttle, shared by every set
	group.SetRate(256 << 20)         // at most 256 MiB/s of resync I/O for the group

	// Mirror A: three legs; leg 2 has a bad range in region 1.
	// Mirror B: two legs, 160 KiB, so its third region is 32 KiB.
	primaryA := device.NewMemFrom(bytes.Repeat([]byte("mirror A"), 4*regionSize/8))
	badLeg := faultdev.Wrap(device.NewMem(4*regionSize),
		faultdev.Writes(faultdev.Range(regionSize+4096, 512, faultdev.Always(errors.New("medium error")))))
	primaryB := device.NewMemFrom(bytes.Repeat([]byte("mirror B"), 160<<10/8))
	sets := []*mirrorSet{
		{name: "A", legs: []device.Device{primaryA, device.NewMem(4 * regionSize), badLeg}},
		{name: "B", legs: []device.Device{primaryB, device.NewMem(160 << 10)}},
	}
	for _, ms := range sets {
		kc, err := kcopyd.NewClient(&kcopyd.Options{Throttle: group})
		if err != nil {
			panic(err)
		}
		defer kc.Close()
		ms.kc, ms.regionSize, ms.flags = kc, regionSize, kcopyd.IgnoreError
		ms.failed = make([]bool, len(ms.legs))
		ms.done = make(chan struct{})
	}
	for _, ms := range sets {
		ms.recover(0) // both sets resync at once, throttled as a group
	}
	for _, ms := range sets {
		<-ms.done
		for _, line := range ms.log {
			fmt.Printf("mirror %s: %s\n", ms.name, line)
		}
		for i, leg := range ms.legs {
			if i == ms.defaultLeg {
				continue
			}
			fmt.Printf("mirror %s: leg %d failed=%v same as the default leg=%v\n",
				ms.name, i, ms.failed[i], sameBytes(leg, ms.legs[ms.defaultLeg]))
		}
	}
	// Output:
	// mirror A: region 0 (65536 bytes) in sync
	// mirror A: region 1 out of sync: read_err=false write_err=0b10, failed legs [2]; bit 1 failed at [{65536 65536}]
	// mirror A: region 2 (65536 bytes) in sync
	// mirror A: region 3 (65536 bytes) in sync
	// mirror A: leg 1 failed=false same as the default leg=true
	// mirror A: leg 2 failed=true same as the default leg=false
	// mirror B: region 0 (65536 bytes) in sync
	// mirror B: region 1 (65536 bytes) in sync
	// mirror B: region 2 (32768 bytes) in sync
	// mirror B: leg 1 failed=false same as the default leg=true
}

// sameBytes reports whether two devices of one size hold the same bytes.
func sameBytes(a, b device.Device) bool {
	pa, pb := make([]byte, a.Size()), make([]byte, b.Size())
	if _, err := a.ReadAt(pa, 0); err != nil {
		panic(err)
	}
	if _, err := b.ReadAt(pb, 0); err != nil {
		panic(err)
	}
	return bytes.Equal(pa, pb)
}
