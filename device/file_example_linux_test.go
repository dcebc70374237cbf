//go:build linux

package device_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kcopyd/kcopyd/device"
)

// A File is created sparse; two opens of one file have the same identity.
func ExampleCreateFile() {
	dir, err := os.MkdirTemp("", "device-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.img")

	f, err := device.CreateFile(path, 1<<20, device.FileOptions{})
	if err != nil {
		panic(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("data"), 64<<10); err != nil {
		panic(err)
	}

	g, err := device.OpenFile(path, device.FileOptions{ReadOnly: true})
	if err != nil {
		panic(err)
	}
	defer g.Close()
	fmt.Println("same storage:", device.IdentityOf(f) == device.IdentityOf(g))
	_, err = g.WriteAt([]byte("x"), 0)
	fmt.Println("read-only:", errors.Is(err, device.ErrReadOnly))

	extents, _ := g.Extents(0, g.Size())
	for _, e := range extents {
		fmt.Printf("hole=%v ", e.Hole)
	}
	fmt.Println()
	// Output:
	// same storage: true
	// read-only: true
	// hole=true hole=false hole=true
}
