package task_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
	"github.com/kcopyd/kcopyd/location"
	"github.com/kcopyd/kcopyd/task"
)

// Run copies a sparse image into a new file, checks it by reading it
// back, and reports what happened as data: what "kcopyd copy --create
// --verify disk.img copy.img" does.
func ExampleRun() {
	dir, _ := os.MkdirTemp("", "task-example")
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "disk.img")
	data := bytes.Repeat([]byte("kcopyd"), 1<<20) // 6 MiB of data ...
	f, _ := os.Create(img)
	f.WriteAt(data, 0)
	f.Truncate(16 << 20) // ... and a 10 MiB hole
	f.Close()

	ctx := context.Background()
	src, err := location.Open(ctx, img, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	dst, err := location.Inspect(filepath.Join(dir, "copy.img"), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	rep := task.Run(ctx, &task.Options{
		Src:     src,
		Dests:   []*location.Location{dst},
		Regions: []task.Region{task.Whole(src.Size)},
		Create:  &location.Options{}, // copy.img does not exist yet
		MaxJobs: 4,
		Sparse:  true,
		Verify:  true,
	})
	if rep.Refused != nil {
		fmt.Println("refused:", rep.Refused)
		return
	}
	d := rep.Dests[0]
	fmt.Println("completed:", rep.Result.Completed, "of", rep.Total)
	fmt.Println("failed:", d.Failed(), "verified identical:", d.Verify.FirstDiff < 0)

	got, _ := os.ReadFile(filepath.Join(dir, "copy.img"))
	want, _ := os.ReadFile(img)
	fmt.Println("same bytes:", bytes.Equal(got, want))
	// Output:
	// completed: 16777216 of 16777216
	// failed: false verified identical: true
	// same bytes: true
}

// A job that cannot run is refused before anything is written: here two
// lines of a regions file that write the same destination bytes. The
// destination file Run would have created is not left behind.
func ExampleRun_refused() {
	dir, _ := os.MkdirTemp("", "task-example")
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "disk.img")
	os.WriteFile(img, make([]byte, 1<<20), 0o644)

	ctx := context.Background()
	src, _ := location.Open(ctx, img, nil)
	dst, _ := location.Inspect(filepath.Join(dir, "copy.img"), nil)
	region := func(line int, srcOff, n, destOff int64) task.Region {
		r := task.Whole(n)
		r.Src, r.Dest, r.Line = srcOff, destOff, line
		return r
	}
	rep := task.Run(ctx, &task.Options{
		Src:     src,
		Dests:   []*location.Location{dst},
		Regions: []task.Region{region(1, 0, 4096, 0), region(2, 8192, 4096, 2048)},
		Create:  &location.Options{},
	})
	fmt.Println(rep.Refused)
	_, err := os.Stat(filepath.Join(dir, "copy.img"))
	fmt.Println("created:", err == nil)
	// Output:
	// regions lines 1 and 2 write overlapping destination ranges [0, +4096) and [2048, +4096); nothing was written: every destination byte may be written by one line only
	// created: false
}

// A destination whose write fails is dropped and the others complete, as
// with "kcopyd copy SRC bad good.img"; Report.Err says what failed, first
// by precedence, with a kind to branch on, and Span gives the region of
// a command line's --offset and --length. Here the source's first 4 MiB
// go to a memory disk that fails every write at 1 MiB and to a file.
func ExampleReport_Err() {
	dir, _ := os.MkdirTemp("", "task-example")
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "disk.img")
	os.WriteFile(img, bytes.Repeat([]byte("kcopyd"), 2<<20), 0o644) // 12 MiB

	ctx := context.Background()
	src, _ := location.Open(ctx, img, nil)
	good, _ := location.Inspect(filepath.Join(dir, "good.img"), nil)
	bad := &location.Location{Spec: "bad", Kind: location.File, Exists: true, Size: 4 << 20,
		Dev: faultdev.Wrap(device.NewMem(4<<20), faultdev.Writes(faultdev.Range(1<<20, 4096, faultdev.Always(nil))))}
	region, err := task.Span{Length: 4 << 20, HasLength: true}.CopyRegion(src, task.Names{})
	if err != nil {
		fmt.Println(err)
		return
	}
	rep := task.Run(ctx, &task.Options{
		Src: src, Dests: []*location.Location{bad, good}, Regions: []task.Region{region},
		Create: &location.Options{}, NoFlush: true,
	})
	err = rep.Err()
	fmt.Println(strings.ReplaceAll(err.Error(), dir, "DIR"))
	fmt.Println("a write error:", errors.Is(err, task.ErrWrite))
	fmt.Println("bad failed at:", rep.Dests[0].Ranges[0].Off, "good failed:", rep.Dests[1].Failed())
	// Output:
	// copy failed on bad; completed on DIR/good.img
	// a write error: true
	// bad failed at: 1048576 good failed: false
}
