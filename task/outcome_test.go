package task

import (
	"errors"
	"strings"
	"testing"

	"github.com/kcopyd/kcopyd/batch"
)

// TestErrPrecedence builds reports with several failures at once and
// checks that Err returns the first by precedence, with its kind and a
// message that names what failed.
func TestErrPrecedence(t *testing.T) {
	readErr, writeErr, saveErr := errors.New("EIO on read"), errors.New("ENOSPC"), errors.New("map disk full")
	differs := &batch.DestVerify{FirstDiff: 4096, Chunks: 1}
	unreadable := &batch.DestVerify{FirstDiff: -1, Err: readErr}
	// every returns a report in which everything goes wrong; drop
	// removes the failures that precede the one a case looks for.
	every := func() *Report {
		return &Report{
			Source: "src.img",
			Result: &batch.Result{Canceled: true, InternalErr: errors.New("bad job"), ReadErr: readErr, Submitted: true},
			Dests: []DestReport{
				{Spec: "a.img", Errs: []error{writeErr}},
				{Spec: "b.img", Verify: differs},
				{Spec: "c.img", Verify: unreadable},
			},
			Verify: VerifyReport{Ran: true, Stopped: true, SrcErr: errors.New("EIO on verify")},
			Map:    &MapReport{Path: "m.map", Failed: 4096, ReadFailed: true, SaveErr: saveErr},
		}
	}
	steps := []struct {
		kind error
		msg  string
		drop func(r *Report)
	}{
		{ErrInterrupted, "interrupted", func(r *Report) { r.Result.Canceled = false }},
		{ErrInterrupted, "interrupted while verifying: the copy finished", func(r *Report) { r.Verify.Stopped = false }},
		{ErrEngine, "the engine refused the job: bad job", func(r *Report) { r.Result.InternalErr = nil }},
		{ErrRead, "read error on src.img: EIO on read", func(r *Report) { r.Result.ReadErr = nil }},
		{ErrWrite, "copy failed on a.img; completed on b.img, c.img", func(r *Report) { r.Dests[0].Errs = nil }},
		{ErrRead, "verify: read error on src.img: EIO on verify", func(r *Report) { r.Verify.SrcErr = nil }},
		{ErrRead, "verify: a destination could not be read back", func(r *Report) { r.Dests[2].Verify = nil }},
		{ErrDiffers, "verify found a difference", func(r *Report) { r.Dests[1].Verify = nil }},
		{ErrWrite, "Map m.map: map disk full", func(r *Report) { r.Map.SaveErr = nil }},
		{ErrRead, "4096 bytes failed (read errors", func(r *Report) { r.Map.ReadFailed = false }},
		{ErrWrite, "4096 bytes failed (write errors, in this run or an earlier one; see Map m.map); RetryFailed tries them again", func(r *Report) { r.Map.Failed = 0 }},
	}
	r := every()
	for i, s := range steps {
		err := r.Err()
		var re *RunError
		if !errors.Is(err, s.kind) || !errors.As(err, &re) || !strings.Contains(err.Error(), s.msg) {
			t.Errorf("step %d: Err() = %v; want %v with %q", i, err, s.kind, s.msg)
		}
		s.drop(r)
	}
	if err := r.Err(); err != nil {
		t.Errorf("with every failure removed: Err() = %v; want nil", err)
	}

	// The remaining cases: every destination failed, a zeroing, errors
	// ignored, and runs that wrote nothing.
	r = &Report{Result: &batch.Result{}, Dests: []DestReport{{Spec: "a", Errs: []error{writeErr}}, {Spec: "b", Errs: []error{writeErr}}}}
	if err := r.Err(); !errors.Is(err, ErrWrite) || err.Error() != "zero failed on every destination" {
		t.Errorf("a zeroing that failed everywhere: Err() = %v", err)
	}
	r = &Report{Source: "s", Result: &batch.Result{ReadErr: readErr}, ignoreErrors: true, names: Names{FailedRanges: "failed_ranges under --json"}}
	if err := r.Err(); !errors.Is(err, ErrRead) || !errors.Is(err, readErr) || !strings.Contains(err.Error(), "written as zeroes, see failed_ranges under --json") {
		t.Errorf("a read error under IgnoreErrors: Err() = %v", err)
	}
	for _, r := range []*Report{{Refused: errors.New("bad")}, {Map: &MapReport{AlreadyComplete: true}}} {
		if err := r.Err(); err != nil {
			t.Errorf("a run that wrote nothing: Err() = %v; want nil (Refused says why)", err)
		}
	}
}
