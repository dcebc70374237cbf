package main

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/kcopyd/kcopyd/batch"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/mapfile"
	"github.com/kcopyd/kcopyd/plan"
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
	// interval is --checkpoint-interval.
	interval time.Duration
	fresh    bool      // the map was created by this run
	last     time.Time // the last checkpoint
	saveErr  error     // the first failed checkpoint
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

// complete reports whether a resumed map has nothing left to do.
func (pm *progressMap) complete() bool { return pm != nil && !pm.fresh && pm.m.Complete() }

// split hands out s in pieces by the state the map had when the run
// started: untried pieces (at most mapSegMax long) keep s's kind, done
// ones are skipped, and failed ones are skipped and not counted complete.
func (pm *progressMap) split(s plan.Segment, emit func(plan.Segment) bool) bool {
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
func (pm *progressMap) jobOff(reg int, dest int64) int64 {
	return pm.base[reg] + dest - pm.regions[reg].dest
}

// record notes in the map what job j did. A range is added for the next
// checkpoint only when j wrote to every destination of its segments (a
// destination dropped earlier did not get it: the range stays untried).
// Failed ranges are marked at once, reads after writes so that an
// unreadable range is never said to be on the destinations whose write
// succeeded. Coalesced jobs span consecutive regions, whose job offsets
// follow on as their destination offsets do.
func (pm *progressMap) record(j *batch.JobResult, ignore bool) {
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
func (pm *progressMap) maybeCheckpoint(b *batch.Batch, note func(string)) {
	if time.Since(pm.last) >= pm.interval || pm.ck.Pending() >= checkpointBytes {
		pm.checkpoint(b, note)
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
func (pm *progressMap) checkpoint(b *batch.Batch, note func(string)) {
	pm.last = time.Now()
	if err := pm.ck.Checkpoint(b.Flush); err != nil && pm.saveErr == nil {
		pm.saveErr = err
		note(fmt.Sprintf("warning: --map %s: %v", pm.path, err))
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
