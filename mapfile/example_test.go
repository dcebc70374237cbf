package mapfile_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/kcopyd/kcopyd/mapfile"
)

// A copy of 1 MiB to two destinations, stopped after its first half and
// resumed from its map, the way `kcopyd copy --map FILE` resumes.
func Example() {
	dir, err := os.MkdirTemp("", "mapfile-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "copy.map")
	job := mapfile.Job{
		Kind:    mapfile.KindCopy,
		Source:  mapfile.Location{Name: "disk.img", ID: "file:2049:1311", Size: 1 << 20},
		Dests:   []mapfile.Location{{Name: "a.img", ID: "file:2049:1312", Size: 1 << 20}, {Name: "b.img", ID: "file:2049:1313", Size: 1 << 20}},
		Regions: []mapfile.Region{{SrcOffset: 0, Length: 1 << 20, DestOffset: 0}},
	}
	flush := func() error { return nil } // fsync every destination here

	// The first run: the first half is copied and flushed, then a write
	// to destination 1 fails, then the run stops (a crash would do too).
	m, err := mapfile.New(job)
	if err != nil {
		panic(err)
	}
	ck := mapfile.NewCheckpointer(m, path)
	ck.Add(0, 512<<10) // the writes completed on both destinations
	m.MarkFailed(512<<10, 4096, 1)
	if err := ck.Checkpoint(flush); err != nil { // flush, mark done, save
		panic(err)
	}

	// The rerun loads the map, checks it belongs to this job, and copies
	// only what is untried.
	m, err = mapfile.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		m, err = mapfile.New(job)
	}
	if err == nil {
		err = m.Check(job)
	}
	if err != nil {
		panic(err)
	}
	ck = mapfile.NewCheckpointer(m, path)
	for r := range m.Untried() {
		fmt.Printf("copy job bytes [%d, +%d)\n", r.Off, r.Len)
		ck.Add(r.Off, r.Len)
	}
	if err := ck.Checkpoint(flush); err != nil {
		panic(err)
	}
	for r := range m.Failed() {
		fmt.Printf("failed [%d, +%d) on destinations %v\n", r.Off, r.Len, r.Dests)
	}
	fmt.Println("complete:", m.Complete())

	// --retry-failed: the failed range is copied again.
	m.RetryFailed()
	for r := range m.Untried() {
		fmt.Printf("retry job bytes [%d, +%d)\n", r.Off, r.Len)
		m.MarkDone(r.Off, r.Len) // after copying and flushing it
	}
	fmt.Println("complete:", m.Complete())

	// A map from another command is refused.
	job.Dests[1].ID = "file:2049:9999"
	fmt.Println(m.Check(job))
	// Output:
	// copy job bytes [528384, +520192)
	// failed [524288, +4096) on destinations 1
	// complete: false
	// retry job bytes [524288, +4096)
	// complete: true
	// mapfile: the map belongs to another job: destination 1 identity is file:2049:1313 (b.img) in the map but file:2049:9999 (b.img) now
}
