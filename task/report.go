package task

import (
	"cmp"
	"slices"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/batch"
)

// Report is the outcome of Run, as data.
type Report struct {
	// Refused says why Run stopped before its first write: bad input, a
	// device refusing the job, a map of another job. Nothing was
	// written; files Run created or grew were removed or truncated back.
	// Errors of options that cannot be combined wrap ErrOptions.
	Refused error
	// Source is the source's location string; "" for a zeroing.
	Source string
	// Regions are the regions of the run, Total their bytes.
	Regions []Region
	Total   int64
	// SubJobSize is the chunk size of the run (Options.SubJobSize, or the
	// one chosen): the unit of the map and of DestVerify.Chunks.
	SubJobSize int64
	// Result is the batch's outcome (nil when Refused or when the map
	// says the job is complete already): what was completed, the read
	// error, cancellation, per-region prefixes.
	Result *batch.Result
	// Dests holds, in the order of Options.Dests, what happened to each
	// destination.
	Dests []DestReport
	// Verify is the outcome of Options.Verify.
	Verify VerifyReport
	// Map is the state of Options.Map at the end; nil without one.
	Map *MapReport
	// Warnings are the warnings told to Events.Warn.
	Warnings []string
	// Abandoned: I/O in flight (of the batch, or of the verify) did not
	// finish within InterruptWait, and the locations were left open:
	// closing them would wait for it. When Result.Abandoned says it was
	// the batch's, the destinations were not flushed either: the bytes
	// reported complete were written, the jobs in flight may be partly.
	Abandoned bool

	// ignoreErrors and names are the options Err words its message by.
	ignoreErrors bool
	names        Names
}

// DestReport is what a run did to one destination.
type DestReport struct {
	// Spec is the destination's location string.
	Spec string
	// Errs are the write, zeroing, flush and close errors.
	Errs []error
	// Ranges are destination byte ranges that did not receive the right
	// data (batch.DestResult.Ranges), sorted and merged.
	Ranges []kcopyd.Range
	// Verify is the comparison read back (Options.Verify); nil when the
	// destination was not compared.
	Verify *batch.DestVerify
}

// Failed reports whether anything went wrong on the destination.
func (d *DestReport) Failed() bool { return len(d.Errs) > 0 }

// VerifyReport is the outcome of the verify phase.
type VerifyReport struct {
	Ran     bool  // the destinations were read back
	SrcErr  error // a read error on the source while verifying
	Stopped bool  // interrupted: some chunks were never compared
}

// MapReport is the state of the map at the end of a run.
type MapReport struct {
	Path                  string
	Done, Failed, Untried int64 // bytes
	Complete              bool  // nothing failed or untried
	ReadFailed            bool  // a failed range is a read failure
	SaveErr               error // the first checkpoint that failed
	// AlreadyComplete: the map said the job was done before the run;
	// nothing was written.
	AlreadyComplete bool
}

// Interrupted reports whether ctx stopped the run or its verify.
func (r *Report) Interrupted() bool {
	return r.Result != nil && r.Result.Canceled || r.Verify.Stopped
}

// Remaining returns, as [source offset, length, destination offset], what
// is left of each region of which only prefixes[i] bytes are complete
// (Result.Prefixes, or a destination's); nil when nothing is.
func (r *Report) Remaining(prefixes []int64) [][3]int64 {
	var out [][3]int64
	for i, rg := range r.Regions {
		if p := prefixes[i]; p < rg.Len {
			out = append(out, [3]int64{rg.Src + p, rg.Len - p, rg.Dest + p})
		}
	}
	return out
}

// Unwritten returns the [offset, length] ranges of destination i to which
// nothing was written (it was dropped, or the run stopped).
func (r *Report) Unwritten(i int) [][2]int64 {
	var out [][2]int64
	for reg, u := range r.Result.Dests[i].Unwritten {
		if rg := r.Regions[reg]; u < rg.Len {
			out = append(out, [2]int64{rg.Dest + u, rg.Len - u})
		}
	}
	return out
}

// mergeRanges sorts rs and merges overlapping and adjacent ranges; empty
// ones are left out.
func mergeRanges(rs []kcopyd.Range) []kcopyd.Range {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b kcopyd.Range) int { return cmp.Compare(a.Off, b.Off) })
	var out []kcopyd.Range
	for _, r := range rs {
		if r.Len <= 0 {
			continue
		}
		if n := len(out); n > 0 && out[n-1].Off+out[n-1].Len >= r.Off {
			out[n-1].Len = max(out[n-1].Off+out[n-1].Len, r.Off+r.Len) - out[n-1].Off
			continue
		}
		out = append(out, r)
	}
	return out
}
