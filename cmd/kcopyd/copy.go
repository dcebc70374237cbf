package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kcopyd/kcopyd/task"
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
	if w.regions, err = resolveCopyRegions(o, regions, src); err != nil {
		return w.fail(err)
	}
	var needed int64
	for _, rg := range w.regions {
		needed = max(needed, rg.DestEnd())
	}
	if err := w.openCopyDests(ctx, locs, needed); err != nil {
		return w.fail(err)
	}
	th, rateContent, err := o.newThrottle()
	if err != nil {
		return w.fail(err)
	}
	return w.execute(ctx, th, rateContent)
}

// resolveCopyRegions returns the regions of a copy: those of --regions, or
// the one --offset, --length and --dest-offset give, checked against the
// source.
func resolveCopyRegions(o *options, regions []task.Region, src *location) ([]task.Region, error) {
	if regions == nil {
		rg, err := o.span().CopyRegion(src, taskNames)
		if err != nil {
			return nil, spanError(err)
		}
		regions = []task.Region{rg}
	}
	if err := task.CheckRanges(regions, src, nil); err != nil {
		return nil, inputError(err)
	}
	return regions, nil
}

// openCopyDests opens the destinations that exist and are big enough
// (needed bytes); files to create or extend (--create) are left to the
// task.
func (w *writeRun) openCopyDests(ctx context.Context, locs []*location, needed int64) error {
	o := w.o
	for _, l := range locs {
		switch {
		case l.Kind == locFile && !l.Exists:
			if !o.create {
				return inputError(fmt.Errorf("destination %s does not exist (use --create to create it)", l.Spec))
			}
			continue
		case l.Kind == locFile && l.Size < needed:
			if !o.create {
				return inputError(fmt.Errorf("destination %s is %d bytes, but the region ends at %d, beyond the end of the file (use --create to extend it)", l.Spec, l.Size, needed))
			}
			continue
		}
		if err := w.openForWrite(ctx, l); err != nil {
			return inputError(fmt.Errorf("destination %w", err))
		}
		if l.Size < needed {
			return inputError(fmt.Errorf("destination %s is %d bytes, but the region ends at %d", l.Spec, l.Size, needed))
		}
	}
	return nil
}
