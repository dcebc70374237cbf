package faultdev_test

import (
	"errors"
	"fmt"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
)

// copyFirstBlocks stands for the code under test: it copies three 512-byte
// blocks from src to dst.
func copyFirstBlocks(src, dst device.Device) error {
	buf := make([]byte, 512)
	for off := int64(0); off < 3*512; off += 512 {
		if _, err := src.ReadAt(buf, off); err != nil {
			return err
		}
		if _, err := dst.WriteAt(buf, off); err != nil {
			return err
		}
	}
	return nil
}

// Fail each operation of a scenario in turn, until the scenario runs
// without reaching the index.
func Example_sweep() {
	for i := int64(0); ; i++ {
		inj := faultdev.OnIndex(i)
		src := faultdev.Wrap(device.NewMem(4096), inj)
		dst := faultdev.Wrap(device.NewMem(4096), inj)
		err := copyFirstBlocks(src, dst)
		if !inj.Fired() {
			fmt.Printf("%d operations, each failed once; last run: %v\n", i, err)
			break
		}
		var ioe *device.IOError
		if errors.As(err, &ioe) && errors.Is(err, faultdev.ErrInjected) {
			fmt.Printf("op %d: %s at %d failed\n", i, ioe.Op, ioe.Off)
		}
	}
	// Output:
	// op 0: read at 0 failed
	// op 1: write at 0 failed
	// op 2: read at 512 failed
	// op 3: write at 512 failed
	// op 4: read at 1024 failed
	// op 5: write at 1024 failed
	// 6 operations, each failed once; last run: <nil>
}

// Make writes to a range vanish while the "power" is off.
func ExampleToggle() {
	mem := device.NewMem(4096)
	flaky := faultdev.NewToggle(faultdev.Range(0, 512, faultdev.DropWrites()))
	dev := faultdev.Wrap(mem, flaky)

	dev.WriteAt([]byte("kept"), 0)
	flaky.On()
	n, err := dev.WriteAt([]byte("lost"), 0)
	fmt.Println(n, err)
	flaky.Off()

	fmt.Printf("%s\n", mem.Bytes()[:4])
	// Output:
	// 4 <nil>
	// kept
}
