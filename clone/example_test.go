package clone_test

import (
	"fmt"

	"github.com/kcopyd/kcopyd/clone"
	"github.com/kcopyd/kcopyd/device"
)

// A clone reads as SOURCE at once, takes writes, and hydrates DEST in the
// background.
func Example() {
	const size = 1 << 20
	src, dst := device.NewMem(size), device.NewMem(size)
	md := device.NewMem(clone.MetadataSize(size, clone.DefaultRegionSize))
	src.WriteAt([]byte("hello from SOURCE"), 0)

	c, err := clone.Open(src, dst, md, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	buf := make([]byte, 17)
	c.ReadAt(buf, 0) // from SOURCE or DEST, whichever holds the region now
	fmt.Printf("%s\n", buf)
	c.WriteAt([]byte("HELLO"), 0) // hydrates region 0 first: a partial write
	<-c.Hydrated()
	if err := c.Close(); err != nil {
		fmt.Println(err)
		return
	}
	dst.ReadAt(buf, 0)
	st := c.Status()
	fmt.Printf("%s; %d of %d regions hydrated\n", buf, st.HydratedRegions, st.Regions)
	// Output:
	// hello from SOURCE
	// HELLO from SOURCE; 16 of 16 regions hydrated
}
