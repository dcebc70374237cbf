package zoned_test

import (
	"errors"
	"fmt"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/zoned"
)

// A sequential zone accepts writes only at its write pointer.
func Example() {
	var log zoned.Log
	dev, err := zoned.New(device.NewMem(4<<20), 1<<20, zoned.Conventional(1), zoned.OnWrite(log.Record))
	if err != nil {
		panic(err)
	}
	defer dev.Close()

	block := make([]byte, 4096)
	_, err = dev.WriteAt(block, 1<<20) // at zone 1's write pointer
	fmt.Println("first write:", err)
	_, err = dev.WriteAt(block, 1<<20+8192) // leaves a gap
	fmt.Println("gap is rejected:", errors.Is(err, zoned.ErrUnalignedWrite))
	_, err = dev.WriteAt(block, 1<<20+4096)
	fmt.Println("next write:", err)

	z := dev.Zones()[1]
	fmt.Printf("zone 1: start %d, wp %d, %v\n", z.Start, z.WP, z.Cond)
	fmt.Println("writes:", log.Zone(1))

	dev.ResetZone(1 << 20)
	fmt.Println("after reset:", dev.Zones()[1].Cond)
	// Output:
	// first write: <nil>
	// gap is rejected: true
	// next write: <nil>
	// zone 1: start 1048576, wp 1056768, oi
	// writes: [{1 1048576 4096 false} {1 1052672 4096 false}]
	// after reset: em
}
