package plan_test

import (
	"bytes"
	"context"
	"fmt"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/plan"
)

// A sparse copy of a 4 MiB source whose middle 2 MiB is a hole, to two
// destinations: a new file (reads zeroes everywhere) and a disk of unknown
// contents. The hole is read from neither: it is zeroed on the disk alone.
func ExamplePlanner() {
	const M = 1 << 20
	src := device.NewMem(4 * M)                       // sparse: never-written blocks are holes
	src.WriteAt(bytes.Repeat([]byte("data"), M/4), 0) // data in the first MiB
	src.WriteAt(make([]byte, M), 3*M)                 // and in the last

	p := &plan.Planner{
		Extents:  src,
		Regions:  []plan.Region{{Src: 0, Dest: 0, Len: 4 * M}},
		ZeroFrom: []int64{0, plan.Unknown}, // a new file, a used disk
		Align:    4096,
	}
	p.Run(context.Background(), func(s plan.Segment) bool {
		fmt.Printf("%s [%d, +%d) to %v\n", s.Kind, s.Src, s.Len, s.Dests)
		return true
	})
	// Output:
	// copy [0, +1048576) to [0 1]
	// zero [1048576, +2097152) to [1]
	// copy [3145728, +1048576) to [0 1]
}
