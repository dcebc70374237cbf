package location_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kcopyd/kcopyd/device/blockdev"
	"github.com/kcopyd/kcopyd/location"
)

// A Go program opens a location string as the kcopyd command does: a file,
// a block device or an NBD URL.
func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "location-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.img")
	os.WriteFile(path, make([]byte, 1<<20), 0o644)

	l, err := location.Open(context.Background(), path, &location.Options{Write: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	fmt.Println(l.Kind, l.Size)

	_, err = location.Open(context.Background(), dir, nil)
	fmt.Println(err != nil)
	// Output:
	// file 1048576
	// true
}

// Create makes a missing destination file, sparse, at the size a copy
// needs; Undo removes it again when the caller gives up before writing.
func ExampleLocation_Create() {
	dir, _ := os.MkdirTemp("", "location-example")
	defer os.RemoveAll(dir)

	l, err := location.Inspect(filepath.Join(dir, "new.img"), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(l.Kind, l.Exists)
	if err := l.Create(4<<20, nil); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(l.Dev.Size(), l.Created)
	fmt.Println(l.Undo())
	// Output:
	// file false
	// 4194304 true
	// <nil>
}

// Opening a block device for writing refuses one that is mounted or in
// use, unless Options.Force is set; opening an NBD URL needs a server.
func ExampleOpen_refusals() {
	ctx := context.Background()
	_, err := location.Open(ctx, "/dev/loop3", &location.Options{Write: true})
	if errors.Is(err, blockdev.ErrBusy) {
		fmt.Println("in use:", err)
	}
	_, err = location.Open(ctx, "nbd+unix:///disk?socket=/run/nbd.sock", &location.Options{Write: true})
	if errors.Is(err, location.ErrReadOnlyExport) {
		fmt.Println("read-only:", err)
	}
}
