package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/kcopyd/kcopyd/device"
)

const verifyLong = `Compare a region of SOURCE with the same-sized region of every DEST (1 to 8).
Nothing is written. The exit status is 0 when every destination is identical
over the region; otherwise, for each destination that differs, kcopyd
reports the destination byte offset of the first differing byte and how
many chunks (--sub-job-size, counted from the region's start) differ.

The region options are those of "kcopyd copy": --offset (in SOURCE),
--length (default: to the end of SOURCE), --dest-offset, or --regions FILE
with "SRC_OFFSET LENGTH DEST_OFFSET" lines.

On SIGINT or SIGTERM verify stops, waits for the reads in flight (at most
--interrupt-wait) and exits with status 130, never saying "identical".

` + nbdHelp + `

` + exitStatusHelp

const verifyExample = `  # check a copy
  kcopyd verify disk.img /dev/sdb /dev/sdc

  # compare an image with an NBD export served over TLS
  kcopyd verify --tls-ca ca.pem disk.img nbds://server/disk

  # compare 1GiB at offset 4GiB of a device with the start of a file
  kcopyd verify --offset 4G --length 1G /dev/sdb part.img`

func newVerifyCmd(e *env) *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:     "verify [options] SOURCE DEST [DEST...]",
		Short:   "Compare a region of SOURCE with up to 8 destinations",
		Long:    verifyLong,
		Example: verifyExample,
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVerify(cmd.Context(), e, cmd, o, args)
		},
	}
	o.register(cmd, flagSet{destOffset: true})
	return cmd
}

func runVerify(ctx context.Context, e *env, cmd *cobra.Command, o *options, args []string) error {
	w := &writeRun{e: e, o: o, verb: "verify", start: time.Now()}
	regions, locs, src, err := w.openSource(ctx, cmd, args)
	if err != nil {
		return err
	}
	for _, l := range locs {
		if !l.Exists {
			return w.fail(inputError(fmt.Errorf("destination %s does not exist", l.Spec)))
		}
		if err := openLocation(ctx, l, openMode{direct: o.direct, nbd: &o.nbd}); err != nil {
			return w.fail(inputError(fmt.Errorf("destination %w", err)))
		}
		w.warnNotes(l)
	}
	if regions == nil {
		off := o.offset.n
		if off >= src.Size {
			return w.fail(inputError(fmt.Errorf("--offset %d is at or beyond the end of the source %s (%d bytes)", off, src.Spec, src.Size)))
		}
		length := src.Size - off
		if o.length.set {
			length = o.length.n
		}
		regions = []region{{src: off, len: length, dest: o.destOffset.n}}
	}
	w.regions = regions
	var total int64
	for _, rg := range regions {
		if rg.srcEnd() > src.Size {
			return w.fail(inputError(fmt.Errorf("%s: source range [%d, +%d) ends at %d, beyond the end of %s (%d bytes)", rg.where(), rg.src, rg.len, rg.srcEnd(), src.Spec, src.Size)))
		}
		for _, l := range locs {
			if rg.destEnd() > l.Size {
				return w.fail(inputError(fmt.Errorf("%s: destination range [%d, +%d) ends at %d, beyond the end of %s (%d bytes)", rg.where(), rg.dest, rg.len, rg.destEnd(), l.Spec, l.Size)))
			}
		}
		total += rg.len
	}
	if err := checkAlignment(regions, src, locs, o.direct); err != nil {
		return w.fail(inputError(err))
	}

	devs := make([]device.Device, len(locs))
	idx := make([]int, len(locs))
	for i, l := range locs {
		devs[i], idx[i] = l.Dev, i
	}
	prog := newProgress(progressConfig{out: e.stderr, quiet: o.quiet, verb: "verify", total: total, interval: o.progressInterval})
	var counter atomic.Int64
	stopTick := make(chan struct{})
	tickDone := make(chan struct{})
	go func() {
		defer close(tickDone)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopTick:
				prog.set(counter.Load())
				return
			case <-t.C:
				prog.set(counter.Load())
			}
		}
	}()
	res, srcErr, stopped := compareRegions(ctx, src.Dev, devs, idx, regions, o.subJobSize.n, o.jobs, &counter, w.giveUp)
	close(stopTick)
	<-tickDone
	prog.stop()
	w.closeAll(false)

	w.rep.Bytes, w.rep.Total = counter.Load(), total
	uncompared := w.uncomparedTails(regions, locs, o.length.set || o.regionsFile != "")
	differ, readErr := false, srcErr != nil
	for i, l := range locs {
		c := res[i]
		jd := jsonDest{Location: l.Spec, FailedRanges: [][2]int64{}}
		switch {
		case c.err != nil:
			readErr = true
			jd.Error = errPtr(c.err)
			fmt.Fprintf(e.stderr, "kcopyd: verify: cannot read %s: %v\n", l.Spec, c.err)
		case c.first >= 0:
			differ = true
			f, n := c.first, c.chunks
			jd.FirstDifference, jd.DifferingChunks = &f, &n
			id := false
			jd.Identical = &id
			if !o.json {
				fmt.Fprintf(e.stdout, "%s: differs: first differing byte at offset %d; %s\n", l.Spec, c.first, chunksText(c.chunks, o.subJobSize.n, stopped))
			}
		case srcErr == nil && !stopped:
			id := true
			jd.Identical = &id
			if !o.json {
				fmt.Fprintf(e.stdout, "%s: identical%s\n", l.Spec, uncompared[i])
			}
		}
		w.rep.Destinations = append(w.rep.Destinations, jd)
	}
	switch {
	case stopped:
		w.rep.Interrupted = true
		return w.report(exitInterrupted, fmt.Errorf("interrupted after comparing %d bytes", counter.Load()))
	case readErr:
		w.rep.ReadError = true
		if srcErr != nil {
			w.rep.ReadMessage = errPtr(srcErr)
			return w.report(exitReadError, fmt.Errorf("read error on %s: %w", src.Spec, srcErr))
		}
		return w.report(exitReadError, errors.New("a destination could not be read"))
	case differ:
		return w.report(exitVerify, errors.New("the destinations differ from the source"))
	}
	if !o.quiet && !o.json {
		fmt.Fprintf(e.stderr, "kcopyd: compared %s (%d bytes) with %d destination%s in %s\n", humanSize(float64(total)), total, len(locs), plural(len(locs)), time.Since(w.start).Round(time.Millisecond))
	}
	return w.report(exitOK, nil)
}

// verifyChunkHook, when not nil, is called by compareRegions after each
// chunk is compared. Tests set it to interrupt a comparison at a known
// point.
var verifyChunkHook func()

// uncomparedTails returns, per destination, a remark for one that goes on
// past the end of the default region (the source's end), whose last bytes
// were not compared, and records it as a warning; "" for the others, and
// for all when the user chose the region (explicit).
func (w *writeRun) uncomparedTails(regions []region, locs []*location, explicit bool) []string {
	out := make([]string, len(locs))
	if explicit || len(regions) != 1 {
		return out
	}
	end := regions[0].destEnd()
	for i, l := range locs {
		if extra := l.Size - end; extra > 0 {
			out[i] = fmt.Sprintf(" over the source's %d bytes; its last %d bytes, past the end of the source, were not compared", regions[0].len, extra)
			w.rep.Warnings = append(w.rep.Warnings, fmt.Sprintf("%s is %d bytes longer than the source: its last %d bytes were not compared", l.Spec, extra, extra))
		}
	}
	return out
}

// cmpResult is the comparison of one destination.
type cmpResult struct {
	first  int64 // destination offset of the first differing byte; -1 when none
	chunks int64 // chunks with a difference
	err    error // the first read error on the destination
}

// compareRegions compares every region of src (nil: zeroes) with the same
// range of each device in devs; idx gives the argument index of each
// device for region.has. Chunks of chunk bytes, counted from each region's
// start, are compared by up to workers goroutines. Bytes compared are
// added to counter when it is not nil. It returns one result per device
// and the first read error on src. It stops early when ctx is done, and
// then returns stopped true: the chunks not compared count as neither
// equal nor different, so the results prove nothing about identity. Once
// ctx is done, the reads in flight are waited for as long as giveUp
// allows (see writeRun.giveUp); then they are left behind.
func compareRegions(ctx context.Context, src device.Device, devs []device.Device, idx []int, regions []region, chunk int64, workers int, counter *atomic.Int64, giveUp func(ctx context.Context, idle <-chan struct{}, what string) bool) (res []cmpResult, srcErr error, stopped bool) {
	all := append([]device.Device{src}, devs...)
	for _, d := range all {
		if d == nil {
			continue
		}
		l := device.LimitsOf(d)
		if l.MaxTransfer > 0 && l.MaxTransfer < chunk {
			a := max(int64(l.OffsetAlign), 4096)
			chunk = max(l.MaxTransfer/a*a, a)
		}
	}
	res = make([]cmpResult, len(devs))
	for i := range res {
		res[i].first = -1
	}
	var mu sync.Mutex // guards res and srcErr
	type item struct {
		rg  region
		off int64 // within the region
	}
	items := make(chan item)
	var wg sync.WaitGroup
	workers = max(1, min(workers, 8))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sbuf := device.AlignedBuf(int(chunk), maxMemAlign)
			dbuf := device.AlignedBuf(int(chunk), maxMemAlign)
			for it := range items {
				n := min(chunk, it.rg.len-it.off)
				s := sbuf[:n]
				if src != nil {
					if err := readFull(src, s, it.rg.src+it.off); err != nil {
						mu.Lock()
						if srcErr == nil {
							srcErr = err
						}
						mu.Unlock()
						continue
					}
				} else {
					clear(s)
				}
				for k, d := range devs {
					if idx != nil && !it.rg.has(idx[k]) {
						continue
					}
					b := dbuf[:n]
					doff := it.rg.dest + it.off
					err := readFull(d, b, doff)
					if err == nil && bytes.Equal(s, b) {
						continue
					}
					mu.Lock()
					r := &res[k]
					if err != nil {
						if r.err == nil {
							r.err = err
						}
					} else {
						at := doff + int64(device.FirstDiff(s, b))
						if r.first < 0 || at < r.first {
							r.first = at
						}
						r.chunks++
					}
					mu.Unlock()
				}
				if counter != nil {
					counter.Add(n)
				}
				if verifyChunkHook != nil {
					verifyChunkHook()
				}
			}
		}()
	}
feed:
	for _, rg := range regions {
		for off := int64(0); off < rg.len; off += chunk {
			mu.Lock()
			stop := srcErr != nil
			mu.Unlock()
			if stop {
				break feed
			}
			select {
			case items <- item{rg, off}:
			case <-ctx.Done():
				stopped = true
				break feed
			}
		}
	}
	close(items)
	idle := make(chan struct{})
	go func() {
		wg.Wait()
		close(idle)
	}()
	if giveUp(ctx, idle, "reads in flight") {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(res), srcErr, true
	}
	return res, srcErr, stopped
}

// readFull reads len(p) bytes at off; a short read is an error even when
// the device returned none.
func readFull(d device.Device, p []byte, off int64) error {
	n, err := d.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil {
		err = fmt.Errorf("short read of %d bytes at %d", n, off)
	}
	return fmt.Errorf("reading %s at %d: %w", device.Name(d), off, err)
}

// maxMemAlign is the largest device.Limits.MemAlign a device may ask for,
// the alignment of the comparison buffers.
const maxMemAlign = 4096

// chunksText says how many chunks of size bytes differ; partial says the
// comparison was interrupted, so that n is a lower bound.
func chunksText(n, size int64, partial bool) string {
	s := fmt.Sprintf("%d chunks of %s differ", n, formatSize(size))
	if n == 1 {
		s = fmt.Sprintf("1 chunk of %s differs", formatSize(size))
	}
	if partial {
		s = "at least " + s + " (the comparison was interrupted)"
	}
	return s
}
