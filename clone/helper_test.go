package clone_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/clone"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

// The kill test's child is this test binary, re-executed with
// CLONE_KILL_DIR set: it runs a clone of DIR/src onto DIR/dst with its
// metadata in DIR/meta, hydrating in the background while it writes,
// flushes and reads, and reports on stdout, one line each:
//
//	W i off len   before write i (data: killData(seed, i, off, len))
//	A i           after write i returned
//	F i           after a Flush called after A i returned
//	DONE          after the last write
const (
	killRegion = 16 << 10
	killWrites = 400
)

func killData(seed uint64, i int, off, n int64) []byte {
	return testutil.Pattern(seed^uint64(i)<<32, off, int(n))
}

// helperMain runs the kill test's child when the binary is re-executed as
// one, and reports whether it did (it exits then).
func helperMain() bool {
	dir := os.Getenv("CLONE_KILL_DIR")
	if dir == "" {
		return false
	}
	seed, err := strconv.ParseUint(os.Getenv("CLONE_KILL_SEED"), 10, 64)
	if err == nil {
		err = killChild(dir, seed)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

func openKillClone(dir string, o clone.Options) (*clone.Clone, error) {
	src, err := device.OpenFile(filepath.Join(dir, "src"), device.FileOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	dst, err := device.OpenFile(filepath.Join(dir, "dst"), device.FileOptions{})
	if err != nil {
		return nil, err
	}
	md, _, err := clone.OpenMetadataFile(filepath.Join(dir, "meta"), src.Size(), killRegion)
	if err != nil {
		return nil, err
	}
	o.RegionSize = killRegion
	return clone.Open(src, dst, md, &o)
}

func killChild(dir string, seed uint64) error {
	th := kcopyd.NewThrottle(100)
	th.SetRate(256 << 10)
	c, err := openKillClone(dir, clone.Options{Throttle: th, BatchSize: 4, CommitInterval: 20 * time.Millisecond})
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, 2))
	go func() { // a reader, for company
		buf := make([]byte, 8192)
		r := rand.New(rand.NewPCG(seed, 3))
		for {
			c.ReadAt(buf, r.Int64N(c.Size()-int64(len(buf))))
		}
	}()
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, args ...any) {
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	for i := range killWrites {
		off, n := randomWrite(rng, c.Size(), killRegion)
		say("W %d %d %d", i, off, n)
		if _, err := c.WriteAt(killData(seed, i, off, n), off); err != nil {
			return err
		}
		say("A %d", i)
		if rng.IntN(3) == 0 {
			if err := c.Flush(); err != nil {
				return err
			}
			say("F %d", i)
		}
	}
	say("DONE")
	select {} // until killed
}

// randomWrite returns a write of whole regions, or of any length at any
// offset (at most two regions long).
func randomWrite(rng *rand.Rand, size, rs int64) (off, n int64) {
	if rng.IntN(3) == 0 {
		off = rng.Int64N(size/rs) * rs
		return off, min(rs*(1+rng.Int64N(3)), size-off)
	}
	off = rng.Int64N(size - 1)
	return off, 1 + rng.Int64N(min(2*rs, size-off))
}
