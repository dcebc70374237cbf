package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kcopyd/kcopyd/plan"
	"github.com/kcopyd/kcopyd/task"
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
	regions, err := o.loadRegions(e.stdin, plan.ZeroRegions)
	if err != nil {
		return w.report(exitUsage, err)
	}
	locs, err := inspectDests(args)
	if err != nil {
		return w.report(exitUsage, err)
	}
	w.locs = locs
	if err := w.openZeroDests(ctx, locs); err != nil {
		return w.fail(err)
	}
	if regions == nil {
		if regions, err = o.span().ZeroRegions(locs, taskNames); err != nil {
			return w.fail(spanError(err))
		}
	}
	w.regions = regions
	th, rateContent, err := o.newThrottle()
	if err != nil {
		return w.fail(err)
	}
	return w.execute(ctx, th, rateContent)
}

// openZeroDests opens every destination of zero for writing.
func (w *writeRun) openZeroDests(ctx context.Context, locs []*location) error {
	for _, l := range locs {
		if !l.Exists {
			return inputError(fmt.Errorf("destination %s does not exist", l.Spec))
		}
		if err := w.openForWrite(ctx, l); err != nil {
			return inputError(fmt.Errorf("destination %w", err))
		}
	}
	if err := task.CheckDuplicates(locs); err != nil {
		return inputError(err)
	}
	return nil
}
