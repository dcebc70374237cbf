package task

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"slices"
	"time"

	"github.com/kcopyd/kcopyd/batch"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/location"
	"github.com/kcopyd/kcopyd/mapfile"
	"github.com/kcopyd/kcopyd/plan"
)

// Checkpoints of the map: completed ranges are made durable and recorded
// at least every DefaultCheckpointInterval, and after CheckpointBytes
// completed bytes.
const (
	DefaultCheckpointInterval = 2 * time.Second
	CheckpointBytes           = 256 << 20
)

// mapSegChunks bounds a segment of a run with a map, in chunks
// (SubJobSize): a range is recorded when its engine job finishes, so
// smaller jobs lose less work to a crash.
const mapSegChunks = 16

// mapState is the map of a run.
type mapState struct {
	path    string
	m       *mapfile.Map
	ck      *mapfile.Checkpointer
	regions []Region
	base    []int64         // job offset of each region
	snap    []mapfile.Range // the map when the run started: what to plan
	segMax  int64           // the longest segment to plan
	// interval is MapOptions.CheckpointInterval.
	interval time.Duration
	fresh    bool      // the map was created by this run
	last     time.Time // the last checkpoint
	saveErr  error     // the first failed checkpoint
}

// mapJob describes the run as the map records it. Empty regions are left
// out: they have no bytes.
func mapJob(o *Options) mapfile.Job {
	job := mapfile.Job{Kind: mapfile.KindZero, ChunkSize: o.SubJobSize}
	if o.Src != nil {
		job.Kind = mapfile.KindCopy
		job.Source = mapLocation(o.Src)
	}
	for _, l := range o.Dests {
		job.Dests = append(job.Dests, mapLocation(l))
	}
	for _, rg := range o.Regions {
		if rg.Len > 0 {
			job.Regions = append(job.Regions, mapfile.Region{SrcOffset: rg.Src, Length: rg.Len, DestOffset: rg.Dest})
		}
	}
	return job
}

func mapLocation(l *location.Location) mapfile.Location {
	return mapfile.Location{Name: l.Spec, ID: device.IdentityOf(l.Dev), Size: l.Dev.Size()}
}

// setupMap loads the map, or creates and saves it for a new job, once
// every location is open and before anything is written. A map of another
// job is refused. With RetryFailed the failed ranges become untried. It
// also forgets what the destinations were known to read as zeroes when
// the map is resumed: an earlier run may have written anywhere.
func (r *run) setupMap() error {
	o := r.o
	if o.Map == nil {
		return nil
	}
	path, verb := o.Map.Path, "copy"
	if o.Src == nil {
		verb = "zero"
	}
	m, err := mapfile.Load(path)
	fresh := errors.Is(err, fs.ErrNotExist)
	switch {
	case fresh:
		m, err = mapfile.New(mapJob(o))
	case err == nil:
		err = m.Check(mapJob(o))
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w; nothing was written (give another %s FILE for this %s)", o.Names.Map, path, err, o.Names.Map, verb)
	}
	pm := &mapState{path: path, m: m, ck: mapfile.NewCheckpointer(m, path), regions: o.Regions, fresh: fresh,
		last: time.Now(), segMax: mapSegChunks * o.SubJobSize, interval: o.Map.CheckpointInterval}
	var off int64
	for _, rg := range o.Regions {
		pm.base = append(pm.base, off)
		off += rg.Len
	}
	if o.Map.RetryFailed {
		if n := m.RetryFailed(); n > 0 {
			o.Events.info(fmt.Sprintf("retrying %d bytes that failed before (%s)", n, o.Names.RetryFailed))
		}
	}
	if fresh || o.Map.RetryFailed {
		if err := m.Save(path); err != nil {
			return fmt.Errorf("%s: %w; nothing was written", o.Names.Map, err)
		}
	}
	if !fresh {
		for i := range r.zeroFrom {
			r.zeroFrom[i] = math.MaxInt64
		}
	}
	pm.snap = slices.Collect(m.Ranges())
	r.pm = pm
	return nil
}

// complete reports whether a resumed map has nothing left to do.
func (pm *mapState) complete() bool { return pm != nil && !pm.fresh && pm.m.Complete() }

// split hands out s in pieces by the state the map had when the run
// started: untried pieces (at most segMax long) keep s's kind, done ones
// are skipped, and failed ones are skipped and not counted complete.
func (pm *mapState) split(s plan.Segment, emit func(plan.Segment) bool) bool {
	off := pm.jobOff(s.Region, s.Dest)
	end := off + s.Len
	i, _ := slices.BinarySearchFunc(pm.snap, off, func(r mapfile.Range, off int64) int {
		return cmp.Compare(r.End(), off+1)
	})
	for ; i < len(pm.snap) && pm.snap[i].Off < end; i++ {
		r := pm.snap[i]
		lo, hi := max(r.Off, off), min(r.End(), end)
		for lo < hi {
			n := hi - lo
			p := s
			p.Src, p.Dest = s.Src+lo-off, s.Dest+lo-off
			switch r.State {
			case mapfile.Untried:
				n = min(n, pm.segMax)
			case mapfile.Done:
				p.Kind, p.Dests = plan.Skip, nil
			default:
				p.Kind, p.Dests, p.Failed = plan.Skip, nil, true
			}
			p.Len = n
			if !emit(p) {
				return false
			}
			lo += n
		}
	}
	return true
}

// jobOff returns the job offset of destination offset dest in region reg.
func (pm *mapState) jobOff(reg int, dest int64) int64 {
	return pm.base[reg] + dest - pm.regions[reg].Dest
}

// record notes in the map what job j did. A range is added for the next
// checkpoint only when j wrote to every destination of its segments (a
// destination dropped earlier did not get it: the range stays untried).
// Failed ranges are marked at once, reads after writes so that an
// unreadable range is never said to be on the destinations whose write
// succeeded. Coalesced jobs span consecutive regions, whose job offsets
// follow on as their destination offsets do.
func (pm *mapState) record(j *batch.JobResult, ignore bool) {
	at := func(dest int64) int64 { return pm.jobOff(j.Region, dest) }
	je := j.Err
	if je == nil {
		if j.All {
			pm.ck.Add(at(j.Dest), j.Len)
		}
		return
	}
	good := min(max(je.Completed, 0), j.Len)
	if ignore {
		good = j.Len // the engine went to the end; the failures follow
	}
	if j.All {
		pm.ck.Add(at(j.Dest), good)
	}
	var fails []destRange
	for k, i := range j.Dests {
		if k < len(je.WriteRanges) {
			for _, wr := range je.WriteRanges[k] {
				fails = append(fails, destRange{off: at(wr.Off), len: wr.Len, dest: i})
			}
		}
	}
	markWriteFailures(pm.m, fails)
	for _, r := range j.DestReadRanges() {
		pm.m.MarkFailed(at(r.Off), r.Len)
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
func (pm *mapState) maybeCheckpoint(b *batch.Batch, note func(string), name string) {
	if time.Since(pm.last) >= pm.interval || pm.ck.Pending() >= CheckpointBytes {
		pm.checkpoint(b, note, name)
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
func (pm *mapState) checkpoint(b *batch.Batch, note func(string), name string) {
	pm.last = time.Now()
	if err := pm.ck.Checkpoint(b.Flush); err != nil && pm.saveErr == nil {
		pm.saveErr = err
		note(fmt.Sprintf("warning: %s %s: %v", name, pm.path, err))
	}
}

// report returns the map's state for the Report.
func (pm *mapState) report() *MapReport {
	done, failed, untried := pm.m.Counts()
	mr := &MapReport{Path: pm.path, Done: done, Failed: failed, Untried: untried, Complete: failed == 0 && untried == 0, SaveErr: pm.saveErr}
	for r := range pm.m.Failed() {
		if r.Dests == 0 {
			mr.ReadFailed = true
			break
		}
	}
	return mr
}
