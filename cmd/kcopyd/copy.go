package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	loc "github.com/kcopyd/kcopyd/location"
)

const copyLong = `Copy a region of SOURCE to every DEST (1 to 8). Each chunk of the source is
read once and written to all destinations in parallel by the kcopyd engine.

The region starts at --offset in SOURCE and at --dest-offset in every DEST,
and is --length bytes long (default: to the end of SOURCE). --regions FILE
runs many regions instead, one "SRC_OFFSET LENGTH DEST_OFFSET" per line
("#" starts a comment), at most --jobs at a time; the whole file is checked
before anything is written.

SIZE is a byte count with an optional suffix: k, K or KiB (1024), M or MiB,
G or GiB, T or TiB (powers of 1024), or s (512-byte sectors).

Sparse copies (the default): ranges the source reports as holes (64KiB or
longer) are not read. On a destination that reads zeroes there already (a
file created by --create, the new part of a file it extended, or every
destination under --dest-is-zero) they are skipped; elsewhere they are
zeroed with the device's write-zeroes, which punches holes in files, so holes
stay holes. All-zero chunks read from the source are written with
write-zeroes too, or skipped on destinations known to read zeroes.
--no-sparse copies every byte as it is.

Everything is checked and opened before the first write: a bad argument,
a destination that is a directory, too small, given twice, in use (mounted
block devices are refused unless --force), or overlapping the source range,
stops the command with status 1 and nothing written. Destinations are
flushed before success is reported (--no-flush skips this).

--rate limits the bytes per second; with --rate-file FILE the limit can be
changed while the copy runs: kcopyd reads FILE once a second and applies
the rate in it ("echo 50M > FILE"; "0" = unlimited). --throttle PERCENT is
the kernel's I/O-time throttle.

On SIGINT or SIGTERM kcopyd stops starting new chunks, waits for those in
flight (at most --interrupt-wait, saying what it waits for), flushes, and
reports how many bytes from the start of the region are complete, with the
options to resume. A second signal ends it at once.

--map FILE keeps the progress in FILE: rerun the same command with the same
map after a crash, kill or interrupt, and only what is not done yet is
copied (a map of another job is refused). Ranges that failed are not tried
again unless --retry-failed is given.

` + nbdHelp + `

` + exitStatusHelp

const copyExample = `  # copy a disk image to two disks at once and check the result
  kcopyd copy --direct --verify disk.img /dev/sdb /dev/sdc

  # copy 1GiB from offset 4GiB of a device into a new sparse file
  kcopyd copy --offset 4G --length 1G --create /dev/sdb part.img

  # copy to an NBD export at 100MiB/s, adjustable while it runs
  echo 100M > /tmp/rate; kcopyd copy --rate-file /tmp/rate src.img nbd://server/export

  # copy an image to an NBD server over TLS with 8 connections, and back
  kcopyd copy --connections 8 --tls-ca ca.pem disk.img nbds://server/disk
  kcopyd copy --create 'nbd+unix:///disk?socket=/run/nbd.sock' disk.img

  # many regions from a file, 8 at a time, result as JSON
  kcopyd copy --regions map.txt --jobs 8 --json /dev/vg/origin /dev/vg/snap`

func newCopyCmd(e *env) *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:     "copy [options] SOURCE DEST [DEST...]",
		Short:   "Copy a region of SOURCE to up to 8 destinations, reading it once",
		Long:    copyLong,
		Example: copyExample,
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCopy(cmd.Context(), e, cmd, o, args)
		},
	}
	o.register(cmd, flagSet{destOffset: true, write: true, copy: true})
	return cmd
}

func runCopy(ctx context.Context, e *env, cmd *cobra.Command, o *options, args []string) error {
	w := &writeRun{e: e, o: o, verb: "copy", start: time.Now()}
	regions, locs, src, err := w.openSource(ctx, cmd, args)
	if err != nil {
		return err
	}

	// The regions.
	if regions == nil {
		// An empty source, or --length 0, copies nothing and succeeds
		// (creating the destination under --create), as dd and cp do.
		// --offset at the end of a non-empty source without --length is
		// taken as a mistake.
		off := o.offset.n
		if off > src.Size || off == src.Size && src.Size > 0 && !o.length.set {
			return w.fail(inputError(fmt.Errorf("--offset %d is at or beyond the end of the source %s (%d bytes): give an --offset below %d", off, src.Spec, src.Size, src.Size)))
		}
		length := src.Size - off
		if o.length.set {
			length = o.length.n
		}
		if length > maxOffset-off {
			return w.fail(usageErrorf("--offset %d plus --length %d is beyond the largest possible offset (%d)", off, length, int64(maxOffset)))
		}
		if o.destOffset.n > maxOffset-length {
			return w.fail(usageErrorf("--dest-offset %d plus --length %d is beyond the largest possible offset (%d)", o.destOffset.n, length, int64(maxOffset)))
		}
		regions = []region{{src: off, len: length, dest: o.destOffset.n}}
	}
	w.regions = regions
	var needed, total int64
	for _, rg := range regions {
		if rg.len > src.Size-rg.src { // rg.srcEnd() > src.Size, without overflow
			return w.fail(inputError(fmt.Errorf("%s: source range [%d, +%d) ends at %d, beyond the end of %s (%d bytes)", rg.where(), rg.src, rg.len, rg.srcEnd(), src.Spec, src.Size)))
		}
		needed = max(needed, rg.destEnd())
		total += rg.len
	}
	// Open the destinations that exist and are big enough; note the files
	// to create or extend.
	var toCreate, toGrow []*location
	for _, l := range locs {
		switch {
		case l.Kind == locFile && !l.Exists:
			if !o.create {
				return w.fail(inputError(fmt.Errorf("destination %s does not exist (use --create to create it)", l.Spec)))
			}
			toCreate = append(toCreate, l)
			continue
		case l.Kind == locFile && l.Size < needed:
			if !o.create {
				return w.fail(inputError(fmt.Errorf("destination %s is %d bytes, but the region ends at %d, beyond the end of the file (use --create to extend it)", l.Spec, l.Size, needed)))
			}
			toGrow = append(toGrow, l)
			continue
		}
		if err := w.openForWrite(ctx, l); err != nil {
			return w.fail(inputError(fmt.Errorf("destination %w", err)))
		}
		if l.Size < needed {
			return w.fail(inputError(fmt.Errorf("destination %s is %d bytes, but the region ends at %d", l.Spec, l.Size, needed)))
		}
	}
	if err := checkOpenedDuplicates(locs); err != nil {
		return w.fail(inputError(err))
	}
	if err := checkRegionOverlaps(regions, src, locs); err != nil {
		return w.fail(inputError(err))
	}
	if err := checkAlignment(regions, src, nil, o.direct); err != nil {
		return w.fail(inputError(err))
	}
	th, rateContent, err := o.newThrottle()
	if err != nil {
		return w.fail(err)
	}
	client, err := kcopyd.NewClient(&kcopyd.Options{SubJobSize: o.subJobSize.n, Throttle: th})
	if err != nil {
		return w.fail(inputError(fmt.Errorf("engine: %w", err)))
	}
	clientClosed := false
	defer func() {
		if !clientClosed {
			client.Close()
		}
	}()

	// Create and extend files last: these are the first changes, and they
	// are undone if anything below fails.
	for _, l := range toCreate {
		if err := l.Create(needed, openMode{write: true, direct: o.direct}.options()); err != nil {
			return w.fail(inputError(fmt.Errorf("destination %w", err)))
		}
	}
	for _, l := range toGrow {
		if err := l.Grow(needed, openMode{write: true, direct: o.direct}.options()); err != nil {
			return w.fail(inputError(fmt.Errorf("destination %w", err)))
		}
	}
	if err := checkAlignment(regions, nil, locs, o.direct); err != nil {
		return w.fail(inputError(err))
	}
	if err := checkJobs(client, regions, src, locs); err != nil {
		return w.fail(inputError(err))
	}

	dests := make([]*dest, len(locs))
	devAlign := maxAlign(src.Dev)
	for i, l := range locs {
		dests[i] = &dest{loc: l, zeroFrom: knownZeroFrom(l, o.destIsZero)}
		devAlign = max(devAlign, maxAlign(l.Dev))
	}
	plan := &planner{kind: segCopy, regions: regions, dests: dests, align: devAlign}
	if ext, ok := src.Dev.(device.Extenter); ok && !o.noSparse {
		plan.ext = ext
	}
	if err := w.setupMap(src, dests); err != nil {
		return w.fail(err)
	}
	if w.pm.complete() {
		return w.mapNoop()
	}
	clientClosed = true
	return w.execute(ctx, client, th, rateContent, dests, plan, total)
}

// checkRegionOverlaps refuses regions whose destination ranges overlap
// each other (the result would depend on timing) and, through
// checkAliases, destinations that are the source, or each other, under
// another name, at overlapping ranges.
func checkRegionOverlaps(regions []region, src *location, locs []*location) error {
	var dst []loc.Range
	for _, rg := range regions {
		if rg.len > 0 {
			dst = append(dst, loc.Range{Off: rg.dest, Len: rg.len, Line: rg.line})
		}
	}
	if x, y, ok := loc.FirstSelfOverlap(dst); ok {
		if x.Line > y.Line {
			x, y = y, x
		}
		return fmt.Errorf("regions lines %d and %d write overlapping destination ranges [%d, +%d) and [%d, +%d); nothing was written: every destination byte may be written by one line only", x.Line, y.Line, x.Off, x.Len, y.Off, y.Len)
	}
	return checkAliases(regions, src, locs)
}

// checkJobs asks the engine whether it accepts the job of every region,
// before the first one is submitted: what it would refuse is bad input,
// found before anything is written.
func checkJobs(client *kcopyd.Client, regions []region, src *location, locs []*location) error {
	for _, rg := range regions {
		if rg.len == 0 {
			continue // nothing is submitted for it
		}
		var dests []kcopyd.Region
		for i, l := range locs {
			if rg.has(i) {
				dests = append(dests, kcopyd.Region{Dev: l.Dev, Off: rg.dest, Len: rg.len})
			}
		}
		var err error
		if src == nil {
			err = client.CheckZero(dests, 0)
		} else {
			err = client.CheckCopy(kcopyd.Region{Dev: src.Dev, Off: rg.src, Len: rg.len}, dests, 0)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", rg.where(), err)
		}
	}
	return nil
}
