package kcopyd_test

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
	"github.com/kcopyd/kcopyd/device/zoned"
)

// zoneReclaim is dm-zoned's reclaim (struct dmz_reclaim): one kcopyd
// client with a private throttle, moving the valid blocks of a zone to a
// sequential zone of a host-managed device, one job at a time.
type zoneReclaim struct {
	kc       *kcopyd.Client
	throttle *kcopyd.Throttle
	dev      *zoned.Device
	reads    device.Device // dev, as reclaim reads it
	block    int64         // dm-zoned's 4 KiB block
	log      []string
}

// throttleFor is the percentage dmz_do_reclaim gives its throttle: full
// speed when the target is idle or random zones are nearly exhausted
// (under 15% free), else min(75, 100 - free/2).
func throttleFor(idle bool, freeRandomPercent int) int {
	if idle || freeRandomPercent < 15 {
		return 100
	}
	return min(75, 100-freeRandomPercent/2)
}

// run waits for one job, as dm-zoned does (wait_on_bit_io after
// dm_kcopyd_copy).
func (z *zoneReclaim) run(job *kcopyd.Job, err error) error {
	if err != nil {
		return err
	}
	return job.Wait(context.Background())
}

// copyZone is dm-zoned's dmz_reclaim_copy: for each run of valid blocks
// of src, first move dst's write pointer to the run with zeroes
// (dmz_reclaim_align_wp), then copy the run with WriteSeq.
func (z *zoneReclaim) copyZone(src, dst zoned.Zone, valid []bool) error {
	wp := dst.WP
	for b := 0; b < len(valid); {
		if !valid[b] {
			b++
			continue
		}
		n := 1
		for b+n < len(valid) && valid[b+n] {
			n++
		}
		off, length := int64(b)*z.block, int64(n)*z.block
		if gap := dst.Start + off - wp; gap > 0 {
			// The kernel calls blkdev_issue_zeroout here; a Zero job does
			// the same, in write-pointer order (WriteSeq is automatic on
			// a host-managed device).
			if err := z.run(z.kc.Zero(context.Background(),
				[]kcopyd.Region{{Dev: z.dev, Off: wp, Len: gap}}, 0, nil)); err != nil {
				return err
			}
			z.log = append(z.log, fmt.Sprintf("zero the gap [%d, +%d)", wp-dst.Start, gap))
		}
		if err := z.run(z.kc.Copy(context.Background(),
			kcopyd.Region{Dev: z.reads, Off: src.Start + off, Len: length},
			[]kcopyd.Region{{Dev: z.dev, Off: dst.Start + off, Len: length}}, kcopyd.WriteSeq, nil)); err != nil {
			return err
		}
		z.log = append(z.log, fmt.Sprintf("copy valid blocks [%d, +%d)", off, length))
		wp = dst.Start + off + length
		b += n
	}
	return nil
}

// Example_zonedReclaim models dm-zoned's reclaim (drivers/md/dm-zoned-reclaim.c:
// dmz_reclaim_copy, dmz_reclaim_align_wp, dmz_do_reclaim). The valid
// 4 KiB blocks of a random (conventional) zone are moved to a sequential
// zone of a host-managed zoned device, run by run, one job at a time.
// A sequential zone accepts writes only at its write pointer, so the gap
// before each run is zeroed first, and each copy runs with WriteSeq: its
// chunks may be read in any order (here the reads are slowed by random
// delays), but they reach the zone in ascending order, each write issued
// only when the previous one has completed. The reclaim sets its private
// throttle before each pass from the target's state.
func Example_zonedReclaim() {
	const zoneSize, block = 64 << 10, 4 << 10
	var writes zoned.Log
	dev, err := zoned.New(device.NewMem(4*zoneSize), zoneSize, zoned.Conventional(2), zoned.OnWrite(writes.Record))
	if err != nil {
		panic(err)
	}
	th := kcopyd.NewThrottle(100)
	kc, err := kcopyd.NewClient(&kcopyd.Options{SubJobSize: block, Throttle: th})
	if err != nil {
		panic(err)
	}
	defer kc.Close()

	// Zone 1 is a random zone holding the chunk's data; 8 of its 16
	// blocks are still valid.
	valid := make([]bool, zoneSize/block)
	for b := range valid {
		valid[b] = b < 3 || (b >= 5 && b < 7) || b >= 13
		dev.WriteAt(bytes.Repeat([]byte{byte('a' + b)}, block), zoneSize+int64(b)*block)
	}
	slowReads := faultdev.Wrap(dev, faultdev.Reads(faultdev.RandomLatency(1, time.Millisecond)))
	z := &zoneReclaim{kc: kc, throttle: th, dev: dev, reads: slowReads, block: block}
	z.throttle.SetPercent(throttleFor(true, 40)) // before each reclaim pass
	fmt.Println("throttle:", th.Percent(), "(idle); busy with 40% free random zones:", throttleFor(false, 40))

	zones := dev.Zones()
	if err := z.copyZone(zones[1], zones[2], valid); err != nil {
		panic(err)
	}
	for _, line := range z.log {
		fmt.Println(line)
	}
	inOrder, next, zeroes := true, zones[2].Start, 0
	for _, w := range writes.Zone(2) {
		inOrder = inOrder && w.Off == next
		next = w.Off + w.Len
		if w.Zeroes {
			zeroes++
		}
	}
	dst := dev.Zones()[2]
	fmt.Printf("zone 2: %d writes (%d of zeroes), each at the write pointer: %v; write pointer at %d, %v\n",
		len(writes.Zone(2)), zeroes, inOrder, dst.WP-dst.Start, dst.Cond)
	got := make([]byte, zoneSize)
	dev.ReadAt(got, dst.Start)
	for b := range valid {
		fmt.Printf("%c", max(got[b*block], '.'))
	}
	fmt.Println()
	// Output:
	// throttle: 100 (idle); busy with 40% free random zones: 75
	// copy valid blocks [0, +12288)
	// zero the gap [12288, +8192)
	// copy valid blocks [20480, +8192)
	// zero the gap [28672, +24576)
	// copy valid blocks [53248, +12288)
	// zone 2: 16 writes (8 of zeroes), each at the write pointer: true; write pointer at 65536, fu
	// abc..fg......nop
}
