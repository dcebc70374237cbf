package device_test

import (
	"errors"
	"fmt"
	"io"

	"github.com/kcopyd/kcopyd/device"
)

// A Mem is a sparse device in memory: reads and writes behave as on any
// other device, including at the end.
func ExampleNewMem() {
	d := device.NewMem(10 << 10) // 10 KiB
	defer d.Close()

	n, err := d.WriteAt([]byte("hello, device"), 4096)
	fmt.Println("write:", n, err)

	p := make([]byte, 5)
	n, err = d.ReadAt(p, 4096)
	fmt.Printf("read: %d %v %q\n", n, err, p)

	n, err = d.ReadAt(make([]byte, 100), d.Size()-10)
	fmt.Println("read across the end:", n, err == io.EOF)

	_, err = d.WriteAt(make([]byte, 100), d.Size()-10)
	fmt.Println("write across the end is out of range:", errors.Is(err, device.ErrOutOfRange))

	// The first and last 4 KiB blocks were never written: they are holes.
	extents, _ := d.Extents(0, d.Size())
	for _, e := range extents {
		fmt.Printf("extent [%d, +%d) hole=%v\n", e.Off, e.Len, e.Hole)
	}
	// Output:
	// write: 13 <nil>
	// read: 5 <nil> "hello"
	// read across the end: 10 true
	// write across the end is out of range: true
	// extent [0, +4096) hole=true
	// extent [4096, +4096) hole=false
	// extent [8192, +2048) hole=true
}

// Optional capabilities are found by type assertion; LimitsOf says how
// large a native zeroing may be.
func ExampleWriteZeroer() {
	var d device.Device = device.NewMemFrom([]byte("some old data!"))
	defer d.Close()

	if wz, ok := d.(device.WriteZeroer); ok && device.LimitsOf(d).MaxWriteZeroes > 0 {
		if err := wz.WriteZeroes(5, 3); err != nil {
			fmt.Println(err)
		}
	}
	p := make([]byte, d.Size())
	d.ReadAt(p, 0)
	fmt.Printf("%q\n", p)
	// Output:
	// "some \x00\x00\x00 data!"
}
