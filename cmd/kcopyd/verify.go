package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kcopyd/kcopyd/batch"
	"github.com/kcopyd/kcopyd/task"
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
	if err := w.openVerifyDests(ctx, locs); err != nil {
		return err
	}
	if regions, err = w.verifyRegions(regions, src, locs); err != nil {
		return w.fail(inputError(err))
	}
	w.regions = regions
	var total int64
	for _, rg := range regions {
		total += rg.Len
	}
	c := &task.CompareOptions{Src: src.Dev, Regions: regions, ChunkSize: o.subJobSize.n, MaxJobs: o.jobs,
		InterruptWait: o.waitOption(), WaitName: "--interrupt-wait", Note: func(s string) { fmt.Fprintf(e.stderr, "kcopyd: %s\n", s) }}
	for _, l := range locs {
		c.Dests = append(c.Dests, l.Dev)
	}
	c.Wrap = wrapVerify
	var prog progress = nopProgress{}
	c.Start = func() { // the client is ready: the jobs start at once
		prog = newProgress(progressConfig{out: e.stderr, quiet: o.quiet, verb: "verify", total: total, interval: o.progressInterval})
	}
	c.Progress = func(n int64) { prog.set(n) }
	res, err := task.Compare(ctx, c)
	prog.stop()
	if err != nil {
		return w.fail(inputError(fmt.Errorf("engine: %w", err)))
	}
	if !res.Abandoned {
		w.closeAll() // else closing would wait for the reads in flight
	}
	w.rep.Bytes, w.rep.Total = res.Compared, total
	return w.verifyReport(res, src, locs, total)
}

// openVerifyDests opens the destinations of verify for reading.
func (w *writeRun) openVerifyDests(ctx context.Context, locs []*location) error {
	for _, l := range locs {
		if !l.Exists {
			return w.fail(inputError(fmt.Errorf("destination %s does not exist", l.Spec)))
		}
		if err := openLocation(ctx, l, openMode{direct: w.o.direct, buffered: w.o.buffered, nbd: &w.o.nbd}); err != nil {
			return w.fail(inputError(fmt.Errorf("destination %w", err)))
		}
		w.warnNotes(l)
	}
	return nil
}

// verifyRegions returns the regions to compare (the command-line region
// when regions is nil) after checking them against the devices.
func (w *writeRun) verifyRegions(regions []task.Region, src *location, locs []*location) ([]task.Region, error) {
	o := w.o
	if regions == nil {
		rg, err := o.span().CopyRegion(src, taskNames)
		if err != nil {
			return nil, err
		}
		regions = []task.Region{rg}
	}
	if err := task.CheckRanges(regions, src, locs); err != nil {
		return nil, err
	}
	direct := ""
	if o.direct {
		direct = "--direct"
	}
	if err := task.CheckAlignment(regions, src, locs, direct); err != nil {
		return nil, err
	}
	return regions, nil
}

// verifyReport prints the outcome of verify, fills the JSON report and
// returns the command's result.
func (w *writeRun) verifyReport(res *batch.VerifyResult, src *location, locs []*location, total int64) error {
	e, o := w.e, w.o
	stopped, srcErr := res.Canceled || res.Abandoned, res.ReadErr
	uncompared := w.uncomparedTails(w.regions, locs, o.length.set || o.regionsFile != "")
	differ, readErr := false, srcErr != nil
	for i, l := range locs {
		c := res.Dests[i]
		jd := jsonDest{Location: l.Spec, FailedRanges: [][2]int64{}}
		switch {
		case c.Err != nil:
			readErr = true
			jd.Error = errPtr(c.Err)
			fmt.Fprintf(e.stderr, "kcopyd: verify: cannot read %s: %v\n", l.Spec, c.Err)
		case c.FirstDiff >= 0:
			differ = true
			f, n := c.FirstDiff, c.Chunks
			jd.FirstDifference, jd.DifferingChunks = &f, &n
			id := false
			jd.Identical = &id
			if !o.json {
				fmt.Fprintf(e.stdout, "%s: differs: first differing byte at offset %d; %s\n", l.Spec, c.FirstDiff, chunksText(c.Chunks, cmp.Or(o.subJobSize.n, task.SubJobSize), stopped))
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
		return w.report(exitInterrupted, fmt.Errorf("interrupted after comparing %d bytes", res.Compared))
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

// uncomparedTails returns, per destination, a remark for one that goes on
// past the end of the default region (the source's end), whose last bytes
// were not compared, and records it as a warning; "" for the others, and
// for all when the user chose the region (explicit).
func (w *writeRun) uncomparedTails(regions []task.Region, locs []*location, explicit bool) []string {
	out := make([]string, len(locs))
	if explicit || len(regions) != 1 {
		return out
	}
	end := regions[0].DestEnd()
	for i, l := range locs {
		if extra := l.Size - end; extra > 0 {
			out[i] = fmt.Sprintf(" over the source's %d bytes; its last %d bytes, past the end of the source, were not compared", regions[0].Len, extra)
			w.rep.Warnings = append(w.rep.Warnings, fmt.Sprintf("%s is %d bytes longer than the source: its last %d bytes were not compared", l.Spec, extra, extra))
		}
	}
	return out
}
