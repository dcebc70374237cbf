package task

import (
	"errors"
	"fmt"
	"strings"
)

// The kinds of failure of a run that Report.Err returns, for errors.Is.
var (
	// ErrInterrupted: ctx stopped the run or its verify.
	ErrInterrupted = errors.New("interrupted")
	// ErrEngine: the engine refused a job (Result.InternalErr; before
	// the first one was submitted when Result.Submitted is false).
	ErrEngine = errors.New("the engine refused the job")
	// ErrRead: the source could not be read, or a destination could not
	// be read back by Verify.
	ErrRead = errors.New("read error")
	// ErrWrite: a write, zeroing, flush or close failed on a destination,
	// or the map could not be saved.
	ErrWrite = errors.New("write error")
	// ErrDiffers: Verify read a destination back and it differs.
	ErrDiffers = errors.New("verify found a difference")
)

// A RunError is the failure Report.Err returns: Kind is one of ErrInterrupted,
// ErrEngine, ErrRead, ErrWrite and ErrDiffers, Err the underlying error
// when there is one.
type RunError struct {
	Kind error
	Err  error
	msg  string
}

// Error implements error.
func (e *RunError) Error() string {
	if e.Err != nil {
		return e.msg + ": " + e.Err.Error()
	}
	return e.msg
}

// Is reports whether target is e's Kind.
func (e *RunError) Is(target error) bool { return target == e.Kind }

// Unwrap returns Err.
func (e *RunError) Unwrap() error { return e.Err }

// Err returns nil when the run did all it was asked, else a *RunError for
// the first failure in this order: interrupted; the engine refused a job;
// a read error on the source; destinations that failed (naming them and
// those that completed); a read error while verifying; a destination
// that differs; then, with a map, a map that could not be saved and
// ranges failed (in this run or an earlier one) that the map still holds.
// A refused run (Refused) and one the map found complete return nil: they
// wrote nothing.
func (r *Report) Err() error {
	res, v := r.Result, r.Verify
	if res == nil {
		return nil
	}
	verb := "copy"
	if r.Source == "" {
		verb = "zero"
	}
	fail := func(kind error, err error, format string, args ...any) error {
		return &RunError{Kind: kind, Err: err, msg: fmt.Sprintf(format, args...)}
	}
	var failed, ok []string
	for _, d := range r.Dests {
		if d.Failed() {
			failed = append(failed, d.Spec)
		} else {
			ok = append(ok, d.Spec)
		}
	}
	switch {
	case res.Canceled:
		return fail(ErrInterrupted, nil, "interrupted")
	case v.Stopped:
		return fail(ErrInterrupted, nil, "interrupted while verifying: the %s finished, but the destinations were not all compared", verb)
	case res.InternalErr != nil:
		return fail(ErrEngine, res.InternalErr, "the engine refused the job")
	case res.ReadErr != nil && r.ignoreErrors:
		return fail(ErrRead, res.ReadErr, "read error on %s (unreadable ranges were written as zeroes, see %s)", r.Source, r.names.withDefaults().FailedRanges)
	case res.ReadErr != nil:
		return fail(ErrRead, res.ReadErr, "read error on %s", r.Source)
	case len(failed) > 0 && len(ok) > 0:
		return fail(ErrWrite, nil, "%s failed on %s; completed on %s", verb, strings.Join(failed, ", "), strings.Join(ok, ", "))
	case len(failed) > 0:
		return fail(ErrWrite, nil, "%s failed on every destination", verb)
	case v.SrcErr != nil:
		return fail(ErrRead, v.SrcErr, "verify: read error on %s", r.Source)
	}
	for _, d := range r.Dests {
		if d.Verify != nil && d.Verify.Err != nil {
			return fail(ErrRead, nil, "verify: a destination could not be read back")
		}
	}
	for _, d := range r.Dests {
		if d.Verify != nil && d.Verify.FirstDiff >= 0 {
			return fail(ErrDiffers, nil, "verify found a difference")
		}
	}
	return r.mapErr()
}

// mapErr returns the failure the map holds at the end of a run that
// otherwise succeeded.
func (r *Report) mapErr() error {
	m := r.Map
	if m == nil {
		return nil
	}
	n := r.names.withDefaults()
	switch {
	case m.SaveErr != nil:
		return &RunError{Kind: ErrWrite, Err: m.SaveErr, msg: fmt.Sprintf("%s %s", n.Map, m.Path)}
	case m.Failed > 0 && m.ReadFailed:
		return &RunError{Kind: ErrRead, msg: fmt.Sprintf("%d bytes failed (read errors, in this run or an earlier one; see %s %s); %s tries them again", m.Failed, n.Map, m.Path, n.RetryFailed)}
	case m.Failed > 0:
		return &RunError{Kind: ErrWrite, msg: fmt.Sprintf("%d bytes failed (write errors, in this run or an earlier one; see %s %s); %s tries them again", m.Failed, n.Map, m.Path, n.RetryFailed)}
	}
	return nil
}
