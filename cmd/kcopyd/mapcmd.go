package main

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"slices"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/mapfile"
)

// Checkpoints of --map: completed ranges are made durable and recorded
// at least this often, and after this many completed bytes.
const (
	defaultCheckpointInterval = 2 * time.Second
	checkpointBytes           = 256 << 20
)

// mapSegChunks bounds a segment of a --map run, in chunks (--sub-job-size):
// a range is recorded when its engine job finishes, so smaller jobs lose
// less work to a crash.
const mapSegChunks = 16

// progressMap is the --map state of a copy or zero run.
type progressMap struct {
	path    string
	m       *mapfile.Map
	ck      *mapfile.Checkpointer
	regions []region
	base    []int64         // job offset of each region
	snap    []mapfile.Range // the map when the run started: what to plan
	segMax  int64           // the longest segment to plan
	fresh   bool            // the map was created by this run
	last    time.Time       // the last checkpoint
	saveErr error           // the first failed checkpoint
}

// mapJob describes the run as the map records it. Empty regions are left
// out: they have no bytes.
func mapJob(kind mapfile.Kind, src *location, locs []*location, regions []region, chunk int64) mapfile.Job {
	job := mapfile.Job{Kind: kind, ChunkSize: chunk}
	if src != nil {
		job.Source = mapfile.Location{Name: src.Spec, ID: device.IdentityOf(src.Dev), Size: src.Dev.Size()}
	}
	for _, l := range locs {
		job.Dests = append(job.Dests, mapfile.Location{Name: l.Spec, ID: device.IdentityOf(l.Dev), Size: l.Dev.Size()})
	}
	for _, rg := range regions {
		if rg.len > 0 {
			job.Regions = append(job.Regions, mapfile.Region{SrcOffset: rg.src, Length: rg.len, DestOffset: rg.dest})
		}
	}
	return job
}

// setupMap loads --map, or creates and saves it for a new job, once every
// location is open and before anything is written. A map of another job
// is refused. With --retry-failed the failed ranges become untried. It
// also forgets what the destinations were known to read as zeroes when
// the map is resumed: an earlier run may have written anywhere.
func (w *writeRun) setupMap(src *location, dests []*dest) error {
	o := w.o
	if o.mapFile == "" {
		return nil
	}
	kind := mapfile.KindCopy
	if src == nil {
		kind = mapfile.KindZero
	}
	job := mapJob(kind, src, w.locs, w.regions, w.chunkSize())
	m, err := mapfile.Load(o.mapFile)
	fresh := errors.Is(err, fs.ErrNotExist)
	switch {
	case fresh:
		m, err = mapfile.New(job)
	case err == nil:
		err = m.Check(job)
	}
	if err != nil {
		return inputError(fmt.Errorf("--map %s: %w; nothing was written (give another --map FILE for this %s)", o.mapFile, err, w.verb))
	}
	pm := &progressMap{path: o.mapFile, m: m, ck: mapfile.NewCheckpointer(m, o.mapFile), regions: w.regions, fresh: fresh, last: time.Now(), segMax: mapSegChunks * w.chunkSize()}
	var off int64
	for _, rg := range w.regions {
		pm.base = append(pm.base, off)
		off += rg.len
	}
	if o.retryFailed {
		if n := m.RetryFailed(); n > 0 && !o.quiet {
			fmt.Fprintf(w.e.stderr, "kcopyd: retrying %d bytes that failed before (--retry-failed)\n", n)
		}
	}
	if fresh || o.retryFailed {
		if err := m.Save(o.mapFile); err != nil {
			return inputError(fmt.Errorf("--map: %w; nothing was written", err))
		}
	}
	if !fresh {
		for _, d := range dests {
			d.zeroFrom = math.MaxInt64
		}
	}
	pm.snap = slices.Collect(m.Ranges())
	w.pm = pm
	return nil
}

// complete reports whether a resumed map has nothing left to do.
func (pm *progressMap) complete() bool { return pm != nil && !pm.fresh && pm.m.Complete() }

// mapNoop ends a run whose map says the job is complete already.
func (w *writeRun) mapNoop() error {
	w.closeAll(false)
	done, _, _ := w.pm.m.Counts()
	// Said even under --quiet: the run did nothing.
	fmt.Fprintf(w.e.stderr, "kcopyd: --map %s: the %s is complete already (%d bytes); nothing to do\n", w.pm.path, w.verb, done)
	w.rep.Map = w.pm.json()
	return w.report(exitOK, nil)
}

// split hands out s in pieces by the state the map had when the run
// started: untried pieces (at most mapSegMax long) keep s's kind, done
// ones are skipped, and failed ones are skipped and not counted complete.
func (pm *progressMap) split(s *segment, emit func(*segment) bool) bool {
	off := pm.jobOff(s, s.dest-pm.regions[s.reg].dest)
	end := off + s.len
	i, _ := slices.BinarySearchFunc(pm.snap, off, func(r mapfile.Range, off int64) int {
		return cmp.Compare(r.End(), off+1)
	})
	for ; i < len(pm.snap) && pm.snap[i].Off < end; i++ {
		r := pm.snap[i]
		lo, hi := max(r.Off, off), min(r.End(), end)
		for lo < hi {
			n := hi - lo
			p := *s
			p.src, p.dest = s.src+lo-off, s.dest+lo-off
			switch r.State {
			case mapfile.Untried:
				n = min(n, pm.segMax)
			case mapfile.Done:
				p.kind, p.dests = segSkip, nil
			default:
				p.kind, p.dests, p.failedBefore = segSkip, nil, true
			}
			p.len = n
			if !emit(&p) {
				return false
			}
			lo += n
		}
	}
	return true
}

// jobOff returns the job offset of byte rel of segment s's region.
func (pm *progressMap) jobOff(s *segment, rel int64) int64 { return pm.base[s.reg] + rel }

// record notes in the map what task t did: with je nil it succeeded. A
// range is added for the next checkpoint only when t wrote to every
// destination of its segment (a destination dropped earlier did not get
// it: the range stays untried). Failed ranges are marked at once, reads
// after writes so that an unreadable range is never said to be on the
// destinations whose write succeeded.
func (r *engineRun) record(t *task, je *kcopyd.JobError) {
	pm, seg := r.pm, t.seg
	segRel := seg.dest - pm.regions[seg.reg].dest // the segment's offset in its region
	full := len(t.dests) == len(seg.dests)
	length := seg.len - t.off
	if je == nil {
		if full {
			pm.ck.Add(pm.jobOff(seg, segRel+t.off), length)
		}
		return
	}
	good := min(max(je.Completed, 0), length)
	if r.ignore {
		good = length // the engine went to the end; the failures follow
	}
	if full {
		pm.ck.Add(pm.jobOff(seg, segRel+t.off), good)
	}
	var fails []destRange
	for k, i := range t.dests {
		if k < len(je.WriteRanges) {
			for _, wr := range je.WriteRanges[k] {
				fails = append(fails, destRange{off: pm.jobOff(seg, segRel+wr.Off-seg.dest), len: wr.Len, dest: i})
			}
		}
	}
	markWriteFailures(pm.m, fails)
	for _, rr := range je.ReadRanges {
		pm.m.MarkFailed(pm.jobOff(seg, segRel+rr.Off-seg.src), rr.Len)
	}
}

// destRange is a job range whose write to destination dest failed.
type destRange struct {
	off, len int64
	dest     int
}

// markWriteFailures marks the ranges failed, each byte with every
// destination whose write of it failed.
func markWriteFailures(m *mapfile.Map, fails []destRange) {
	var cuts []int64
	for _, f := range fails {
		cuts = append(cuts, f.off, f.off+f.len)
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	for k := 0; k+1 < len(cuts); k++ {
		lo, hi := cuts[k], cuts[k+1]
		var ds []int
		for _, f := range fails {
			if f.off <= lo && hi <= f.off+f.len && !slices.Contains(ds, f.dest) {
				ds = append(ds, f.dest)
			}
		}
		if len(ds) > 0 {
			m.MarkFailed(lo, hi-lo, ds...)
		}
	}
}

// maybeCheckpoint checkpoints when the interval has passed or enough
// bytes completed since the last checkpoint.
func (r *engineRun) maybeCheckpoint() {
	if r.pm != nil && (time.Since(r.pm.last) >= r.ckInterval || r.pm.ck.Pending() >= checkpointBytes) {
		r.checkpoint()
	}
}

// checkpoint records the completed ranges as done. The ordering that
// keeps the map honest after a crash at any moment: (1) the ranges added
// so far had their writes completed on every destination; (2) flush
// makes every destination durable (fsync, NBD_CMD_FLUSH); (3) only then
// are the ranges marked done, and (4) the map is replaced atomically
// (written to FILE.tmp, synced, renamed, directory synced). A crash
// before (4) leaves the old map, which calls the ranges untried: they are
// copied again. A failed flush leaves them untried for good.
func (r *engineRun) checkpoint() {
	pm := r.pm
	pm.last = time.Now()
	if err := pm.ck.Checkpoint(r.flushErr); err != nil && pm.saveErr == nil {
		pm.saveErr = err
		r.waitNote(fmt.Sprintf("warning: --map %s: %v", pm.path, err))
	}
}

// counts of the map for the report.
func (pm *progressMap) json() *jsonMap {
	done, failed, untried := pm.m.Counts()
	return &jsonMap{Path: pm.path, Done: done, Failed: failed, Untried: untried, Complete: failed == 0 && untried == 0}
}

// readFailed reports whether a failed range of the map is a read failure.
func (pm *progressMap) readFailed() bool {
	for r := range pm.m.Failed() {
		if r.Dests == 0 {
			return true
		}
	}
	return false
}

// concludeMap adjusts the result of a --map run: failed ranges left in
// the map (from this run or an earlier one) or a map that could not be
// saved make a run that is otherwise fine fail. It prints the map's
// counts and fills the JSON report.
func (w *writeRun) concludeMap(code int, err error) (int, error) {
	pm := w.pm
	if pm == nil {
		return code, err
	}
	jm := pm.json()
	w.rep.Map = jm
	if !w.o.quiet || code != exitOK {
		state := "complete"
		if !jm.Complete {
			state = "not complete: rerun the same command to resume"
		}
		fmt.Fprintf(w.e.stderr, "kcopyd: --map %s: %d bytes done, %d failed, %d untried (%s)\n", pm.path, jm.Done, jm.Failed, jm.Untried, state)
	}
	if code != exitOK {
		return code, err
	}
	switch {
	case pm.saveErr != nil:
		return exitWriteError, fmt.Errorf("--map %s: %w", pm.path, pm.saveErr)
	case jm.Failed > 0 && pm.readFailed():
		return exitReadError, fmt.Errorf("%d bytes failed (read errors, in this run or an earlier one; see --map %s); --retry-failed tries them again", jm.Failed, pm.path)
	case jm.Failed > 0:
		return exitWriteError, fmt.Errorf("%d bytes failed (write errors, in this run or an earlier one; see --map %s); --retry-failed tries them again", jm.Failed, pm.path)
	}
	return code, err
}
