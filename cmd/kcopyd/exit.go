package main

import "fmt"

// Exit statuses of kcopyd. When several apply, the first in this order
// wins: exitInterrupted, exitUsage, exitReadError, exitWriteError,
// exitVerify.
const (
	exitOK          = 0   // success
	exitUsage       = 1   // bad usage or input; nothing was written
	exitReadError   = 2   // the source (or, for verify, any location) could not be read
	exitWriteError  = 3   // a write, zeroing or flush failed on at least one destination
	exitVerify      = 4   // verify found a difference
	exitInterrupted = 130 // SIGINT or SIGTERM
)

// exitStatusHelp documents the exit statuses in every --help.
const exitStatusHelp = `Exit status:
  0    success
  1    bad usage or input; nothing was written
  2    a source read error (verify: a read error on any location)
  3    a write error on at least one destination (the message and --json
       say which destinations completed)
  4    verify found a difference
  130  interrupted (SIGINT/SIGTERM); the bytes known complete from the start
       of the region are reported so that the run can be resumed with --offset
When several apply, the first of 130, 2, 3, 4 wins.`

// exitError carries an exit status out of a command. err is printed on
// stderr unless reported is set (the command printed it already).
type exitError struct {
	code     int
	err      error
	reported bool // the message was already written to stderr
	noHint   bool // do not suggest --help after a usage error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageErrorf returns an exitUsage error: bad usage or input, nothing was
// written.
func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// inputError wraps err as an exitUsage error without a --help hint (the
// command line was fine, the input was not).
func inputError(err error) error {
	return &exitError{code: exitUsage, err: err, noHint: true}
}
