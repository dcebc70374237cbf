package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/kcopyd/kcopyd"
)

const zeroLong = `Zero a region of every DEST (1 to 8) with the kcopyd engine, using each
device's native write-zeroes where it has one (BLKZEROOUT on block devices,
fallocate FALLOC_FL_ZERO_RANGE on files, which keeps their blocks allocated
and frees nothing (--punch-holes frees them instead), NBD_CMD_WRITE_ZEROES) and writing zeroes otherwise, in
requests of up to 128 MiB.

The region starts at --offset and is --length bytes long (default: each
destination to its end). --regions FILE zeroes many regions instead, one
"OFFSET LENGTH" per line ("#" starts a comment), at most --jobs at a time;
the whole file is checked before anything is written.

SIZE is a byte count with an optional suffix: k, K or KiB (1024), M or MiB,
G or GiB, T or TiB (powers of 1024), or s (512-byte sectors).

Everything is checked and opened before the first write (see "kcopyd copy
--help"); mounted block devices are refused unless --force. Destinations
are flushed before success is reported (--no-flush skips this); --verify
reads them back and checks that they read zeroes. --map FILE keeps the
progress in FILE, as for "kcopyd copy --help": a rerun zeroes only what is
not done yet.

` + nbdHelp + `

` + exitStatusHelp

const zeroExample = `  # zero a whole disk, then check it reads zeroes
  kcopyd zero --verify /dev/sdb

  # zero the first 1MiB of two devices
  kcopyd zero --length 1M /dev/sdb /dev/sdc

  # zero an NBD export on a Unix socket, giving up on a server that hangs
  kcopyd zero --nbd-timeout 1m 'nbd+unix:///?socket=/run/nbd.sock'

  # zero 8 sectors at sector 2048 of an image file
  kcopyd zero --offset 2048s --length 8s disk.img`

func newZeroCmd(e *env) *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:     "zero [options] DEST [DEST...]",
		Short:   "Zero a region of up to 8 destinations",
		Long:    zeroLong,
		Example: zeroExample,
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runZero(cmd.Context(), e, cmd, o, args)
		},
	}
	o.register(cmd, flagSet{write: true})
	return cmd
}

func runZero(ctx context.Context, e *env, cmd *cobra.Command, o *options, args []string) error {
	w := &writeRun{e: e, o: o, verb: "zero", start: time.Now()}
	if len(args) < 1 {
		return w.report(exitUsage, usageErrorf("zero needs at least one DEST"))
	}
	if err := o.check(cmd, args); err != nil {
		return w.report(exitUsage, err)
	}
	regions, err := o.loadRegions(e.stdin, zeroRegions)
	if err != nil {
		return w.report(exitUsage, err)
	}
	locs, err := inspectDests(args)
	if err != nil {
		return w.report(exitUsage, err)
	}
	w.locs = locs
	for _, l := range locs {
		if !l.Exists {
			return w.fail(inputError(fmt.Errorf("destination %s does not exist", l.Spec)))
		}
		if err := w.openForWrite(ctx, l); err != nil {
			return w.fail(inputError(fmt.Errorf("destination %w", err)))
		}
	}
	if err := checkOpenedDuplicates(locs); err != nil {
		return w.fail(inputError(err))
	}

	if regions == nil {
		off := o.offset.n
		if o.length.set {
			if o.length.n > maxOffset-off {
				return w.fail(usageErrorf("--offset %d plus --length %d is beyond the largest possible offset (%d)", off, o.length.n, int64(maxOffset)))
			}
			regions = []region{{dest: off, len: o.length.n}}
		} else {
			// To the end of each destination: one region per distinct
			// size.
			bySize := map[int64][]int{}
			var sizes []int64
			for i, l := range locs {
				if off > l.Size || off == l.Size && l.Size > 0 {
					return w.fail(inputError(fmt.Errorf("--offset %d is at or beyond the end of %s (%d bytes)", off, l.Spec, l.Size)))
				}
				if _, ok := bySize[l.Size]; !ok {
					sizes = append(sizes, l.Size)
				}
				bySize[l.Size] = append(bySize[l.Size], i)
			}
			slices.Sort(sizes)
			for _, sz := range sizes {
				rg := region{dest: off, len: sz - off}
				if len(sizes) > 1 {
					rg.dests = bySize[sz]
				}
				regions = append(regions, rg)
			}
		}
	}
	w.regions = regions
	var total int64
	for _, rg := range regions {
		for i, l := range locs {
			if rg.has(i) && rg.len > l.Size-rg.dest { // rg.destEnd() > l.Size, without overflow
				return w.fail(inputError(fmt.Errorf("%s: range [%d, +%d) ends at %d, beyond the end of %s (%d bytes)", rg.where(), rg.dest, rg.len, rg.destEnd(), l.Spec, l.Size)))
			}
		}
		total += rg.len
	}
	if err := checkAliases(regions, nil, locs); err != nil {
		return w.fail(inputError(err))
	}
	if err := checkAlignment(regions, nil, locs, o.direct); err != nil {
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
	if err := checkJobs(client, regions, nil, locs); err != nil {
		client.Close()
		return w.fail(inputError(err))
	}
	dests := make([]*dest, len(locs))
	for i, l := range locs {
		dests[i] = &dest{loc: l, zeroFrom: knownZeroFrom(l, false)}
	}
	if err := w.setupMap(nil, dests); err != nil {
		client.Close()
		return w.fail(err)
	}
	if w.pm.complete() {
		client.Close()
		return w.mapNoop()
	}
	plan := &planner{kind: segZero, regions: regions, dests: dests, align: 1}
	return w.execute(ctx, client, th, rateContent, dests, plan, total)
}
