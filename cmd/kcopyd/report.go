package main

import (
	"encoding/json"
	"io"

	"github.com/kcopyd/kcopyd"
)

// jsonReport is the object --json prints on stdout at the end of copy,
// zero and verify.
//
// Fields:
//   - bytes: bytes known complete on every live destination: copied,
//     zeroed, or skipped because they read as zeroes already (copy,
//     zero); bytes compared (verify).
//   - total: bytes the command was asked to process.
//   - completed: for a single region, the bytes from its start known
//     complete on every destination, a failed one included: rerun with
//     --offset/--dest-offset moved by this much to resume. remaining
//     lists, in regions-file syntax, what is left of every incomplete
//     region. destinations[i] has the same two for that destination
//     alone, the options that finish it.
//   - destinations[i].failed_ranges: [offset, length] byte pairs in the
//     destination known not to hold the source's data: ranges whose write
//     failed (kcopyd.JobError.WriteRanges) and, under --ignore-errors,
//     ranges written as zeroes because the source could not be read
//     (kcopyd.JobError.ReadRanges moved to destination offsets). Without
//     --ignore-errors a destination is dropped at its first failed write:
//     it lists that range; unwritten_ranges lists what was never sent to
//     it afterwards, and between the two it may hold old or new data
//     (chunks in flight when it failed). Its completed and remaining say
//     what is known good and how to finish it.
type jsonReport struct {
	Command      string     `json:"command"`
	Source       string     `json:"source,omitempty"`
	Bytes        int64      `json:"bytes"`
	Total        int64      `json:"total"`
	Seconds      float64    `json:"seconds"`
	ReadError    bool       `json:"read_error"`
	ReadMessage  *string    `json:"read_error_message,omitempty"`
	Interrupted  bool       `json:"interrupted"`
	Completed    *int64     `json:"completed,omitempty"`
	Remaining    [][3]int64 `json:"remaining,omitempty"`
	ExitCode     int        `json:"exit_code"`
	Error        *string    `json:"error"`
	Destinations []jsonDest `json:"destinations"`
	Warnings     []string   `json:"warnings,omitempty"`
	// Map is the --map file and its counts at the end of the run.
	Map *jsonMap `json:"map,omitempty"`
}

// jsonMap is the --map part of a jsonReport: the file and its bytes done,
// failed and untried at the end of the run.
type jsonMap struct {
	Path     string `json:"path"`
	Done     int64  `json:"done"`
	Failed   int64  `json:"failed"`
	Untried  int64  `json:"untried"`
	Complete bool   `json:"complete"`
}

// jsonDest is one destination in a jsonReport, in argument order.
type jsonDest struct {
	Location     string     `json:"location"`
	Error        *string    `json:"error"`
	FailedRanges [][2]int64 `json:"failed_ranges"`
	// Verified is set by copy --verify and zero --verify: the
	// destination was read back and matched.
	Verified *bool `json:"verified,omitempty"`
	// Identical, FirstDifference and DifferingChunks are set by verify and
	// by --verify: FirstDifference is the destination byte offset of the
	// first differing byte, DifferingChunks the number of --sub-job-size
	// chunks (counted from each region's start) with a difference.
	Identical       *bool  `json:"identical,omitempty"`
	FirstDifference *int64 `json:"first_difference,omitempty"`
	DifferingChunks *int64 `json:"differing_chunks,omitempty"`
	// Completed (single region) is the bytes from the region's start
	// known good on this destination. Remaining lists, in regions-file
	// syntax, what must be copied again to finish it. UnwrittenRanges
	// are [offset, length] byte ranges of the destination to which
	// nothing was written (it was dropped after a write error, or the
	// run stopped). Copy and zero only.
	Completed       *int64     `json:"completed,omitempty"`
	Remaining       [][3]int64 `json:"remaining,omitempty"`
	UnwrittenRanges [][2]int64 `json:"unwritten_ranges,omitempty"`
}

func strPtr(s string) *string { return &s }

func errPtr(err error) *string {
	if err == nil {
		return nil
	}
	return strPtr(err.Error())
}

// rangePairs returns rs as [offset, length] pairs; never nil, so that
// JSON shows [] rather than null.
func rangePairs(rs []kcopyd.Range) [][2]int64 {
	out := make([][2]int64, len(rs))
	for i, r := range rs {
		out[i] = [2]int64{r.Off, r.Len}
	}
	return out
}

// write prints the report as one line of JSON.
func (r *jsonReport) write(w io.Writer) error {
	if r.Destinations == nil {
		r.Destinations = []jsonDest{}
	}
	b, err := json.Marshal(r)
	if err != nil {
		panic(err) // only plain types
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
