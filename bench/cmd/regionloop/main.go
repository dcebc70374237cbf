// Command regionloop is the benchmark's peer for many small regions: it
// copies the regions listed in a file from SRC to DST with a fixed number
// of goroutines, each doing pread then pwrite of one region at a time,
// then fdatasyncs DST. It is what a program without kcopyd would write.
//
// Usage:
//
//	regionloop [-workers 16] [-check] REGIONS SRC DST
//
// REGIONS holds one "SRC_OFFSET LENGTH DEST_OFFSET" per line in bytes,
// the format of `kcopyd copy --regions`; "#" starts a comment. DST must
// exist and be large enough. With -check, regionloop copies nothing and
// instead compares every region of DST with SRC, exiting 1 on the first
// difference.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

type region struct{ src, n, dst int64 }

func main() {
	workers := flag.Int("workers", 16, "goroutines copying regions at once")
	check := flag.Bool("check", false, "compare the regions of DST with SRC instead of copying")
	flag.Parse()
	if flag.NArg() != 3 || *workers < 1 {
		fmt.Fprintln(os.Stderr, "usage: regionloop [-workers N] [-check] REGIONS SRC DST")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), flag.Arg(1), flag.Arg(2), *workers, *check); err != nil {
		fmt.Fprintln(os.Stderr, "regionloop:", err)
		os.Exit(1)
	}
}

func run(list, srcPath, dstPath string, workers int, check bool) error {
	regions, err := readRegions(list)
	if err != nil {
		return err
	}
	src, err := os.Open(srcPath)
	if err != nil {
		return err
	}
	defer src.Close()
	flag := os.O_RDWR
	if check {
		flag = os.O_RDONLY
	}
	dst, err := os.OpenFile(dstPath, flag, 0)
	if err != nil {
		return err
	}
	defer dst.Close()
	next := make(chan region)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() { errs[w] = worker(next, src, dst, check) })
	}
	for _, r := range regions {
		next <- r
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil || check {
		return err
	}
	return dst.Sync()
}

// worker copies (or, with check, compares) the regions it receives. After
// an error it keeps draining the channel so that the sender never blocks.
func worker(next <-chan region, src, dst *os.File, check bool) error {
	var buf, cmp []byte
	var first error
	for r := range next {
		if first != nil {
			continue
		}
		if int64(cap(buf)) < r.n {
			buf, cmp = make([]byte, r.n), make([]byte, r.n)
		}
		if _, err := src.ReadAt(buf[:r.n], r.src); err != nil {
			first = err
			continue
		}
		if !check {
			_, first = dst.WriteAt(buf[:r.n], r.dst)
			continue
		}
		if _, err := dst.ReadAt(cmp[:r.n], r.dst); err != nil {
			first = err
		} else if !bytes.Equal(buf[:r.n], cmp[:r.n]) {
			first = fmt.Errorf("region %d+%d -> %d differs", r.src, r.n, r.dst)
		}
	}
	return first
}

func readRegions(path string) ([]region, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []region
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 3 {
			return nil, fmt.Errorf("%s:%d: want SRC_OFFSET LENGTH DEST_OFFSET", path, line)
		}
		var v [3]int64
		for i, s := range fields {
			if v[i], err = strconv.ParseInt(s, 10, 64); err != nil || v[i] < 0 {
				return nil, fmt.Errorf("%s:%d: bad number %q", path, line, s)
			}
		}
		out = append(out, region{src: v[0], n: v[1], dst: v[2]})
	}
	return out, sc.Err()
}
