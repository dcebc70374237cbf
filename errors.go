package kcopyd

import (
	"errors"
	"fmt"
	"strings"
)

// Errors returned by Copy, Zero and PrepareCallback when a request is
// refused. A refused request changed nothing: no I/O was issued and its
// callback is never called.
var (
	// ErrClosed is returned when the client has been closed, or Close has
	// begun.
	ErrClosed = errors.New("kcopyd: client is closed")

	// ErrNoDests is returned when a job names no destination.
	ErrNoDests = errors.New("kcopyd: no destination")

	// ErrTooManyDests is returned when a job names more than MaxRegions
	// destinations.
	ErrTooManyDests = fmt.Errorf("kcopyd: more than %d destinations", MaxRegions)

	// ErrLengthMismatch is returned when a destination's length differs
	// from the source's (or, for Zero, from the first destination's).
	ErrLengthMismatch = errors.New("kcopyd: regions differ in length")

	// ErrOutOfRange is returned when a region has a negative offset or
	// length, or does not lie inside its device.
	ErrOutOfRange = errors.New("kcopyd: region outside its device")

	// ErrOverlap is returned when a destination overlaps the source or
	// another destination on the same device. Chunks run in parallel, so
	// such a copy could read data it has already overwritten; kcopyd
	// refuses it rather than corrupt data (the kernel does not check).
	ErrOverlap = errors.New("kcopyd: regions overlap on the same device")

	// ErrAlignment is returned when a region's offset or length is not a
	// multiple of its device's required alignment (O_DIRECT), or the
	// sub-job size is not.
	ErrAlignment = errors.New("kcopyd: region not aligned for its device")

	// ErrNilDevice is returned when a region has no device.
	ErrNilDevice = errors.New("kcopyd: region has no device")

	// ErrBadFlags is returned when flags has bits that are not defined.
	ErrBadFlags = errors.New("kcopyd: unknown flags")

	// ErrBadLimits is returned when a device's Limits contradict each
	// other so that no request could be issued to it: a MaxTransfer or
	// MaxWriteZeroes smaller than its OffsetAlign. It is a bug in the
	// device's implementation.
	ErrBadLimits = errors.New("kcopyd: device limits allow no request")
)

// ErrMismatch is wrapped by JobError.Writes[i] when a Verify or VerifyZero
// job found destination i to differ.
var ErrMismatch = errors.New("kcopyd: destination differs")

// ErrReported is the Read error of the *JobError that a prepared callback
// receives when DoCallback reported a failure: DoCallback carries the
// kernel's bits, not the errors behind them.
var ErrReported = errors.New("kcopyd: failure reported through DoCallback")

// Range is a byte range of a device.
type Range struct {
	Off, Len int64 // bytes
}

// JobError describes how a job failed. Callbacks and Job.Wait return it
// (as error); errors.As unpacks it. It is the kernel's read_err/write_err
// pair with the errors and byte ranges behind each bit.
type JobError struct {
	// Read is the first source read error, or nil.
	Read error

	// ReadRanges are the source byte ranges that could not be read. With
	// IgnoreError, zeroes were written at the matching destination ranges
	// (the same offsets relative to the start of the job); without it,
	// nothing was written for the chunks that contain them.
	ReadRanges []Range

	// Writes holds one entry per destination, in the order passed: the
	// first write error on that destination, or nil. For Verify, the
	// destination's first read error, or an error wrapping ErrMismatch.
	Writes []error

	// WriteRanges holds one entry per destination: the destination byte
	// ranges whose write failed; their contents are unknown. For Verify,
	// the destination byte ranges that differ or could not be read.
	// ReadRanges are source offsets and WriteRanges destination offsets:
	// byte Off of ReadRanges maps to Off - src.Off + dests[i].Off.
	WriteRanges [][]Range

	// Canceled is the context's error when the job's context stopped it
	// before it was done, else nil.
	Canceled error

	// Completed is the number of bytes, from the start of the job, known
	// to have been written to every destination: a rerun from Completed
	// onward finishes the job. For Verify, the prefix that was compared.
	Completed int64

	// FirstDiff, for Verify and VerifyZero, holds one entry per
	// destination: the lowest destination byte offset found to differ, or
	// -1. Nil for other jobs.
	FirstDiff []int64

	writeMask uint64
}

// WriteErrMask returns the kernel's write_err: bit i is set when a write to
// destination i failed.
func (e *JobError) WriteErrMask() uint64 { return e.writeMask }

// ReadFailed returns the kernel's read_err.
func (e *JobError) ReadFailed() bool { return e.Read != nil }

// Error summarizes the failure: which parts failed and how far the job got.
func (e *JobError) Error() string {
	var parts []string
	if e.Read != nil {
		parts = append(parts, fmt.Sprintf("read failed in %d range(s): %v", len(e.ReadRanges), e.Read))
	}
	for i, w := range e.Writes {
		switch {
		case w == nil:
		case e.FirstDiff != nil && e.FirstDiff[i] >= 0:
			parts = append(parts, fmt.Sprintf("destination %d differs in %d range(s) from byte %d", i, len(e.WriteRanges[i]), e.FirstDiff[i]))
		default:
			parts = append(parts, fmt.Sprintf("destination %d: write failed in %d range(s): %v", i, len(e.WriteRanges[i]), w))
		}
	}
	if e.Writes == nil && e.writeMask != 0 {
		parts = append(parts, fmt.Sprintf("write failed (mask %#x)", e.writeMask))
	}
	if e.Canceled != nil {
		parts = append(parts, fmt.Sprintf("stopped: %v", e.Canceled))
	}
	return fmt.Sprintf("kcopyd: %s; %d bytes complete from the start", strings.Join(parts, "; "), e.Completed)
}

// Unwrap returns the read error, the write errors and the cancellation
// cause, so errors.Is finds any of them.
func (e *JobError) Unwrap() []error {
	var errs []error
	if e.Read != nil {
		errs = append(errs, e.Read)
	}
	for _, w := range e.Writes {
		if w != nil {
			errs = append(errs, w)
		}
	}
	if e.Canceled != nil {
		errs = append(errs, e.Canceled)
	}
	return errs
}

// CallbackPanicError is returned by Client.Close when a job's callback (or
// a prepared callback) panicked. The worker recovered the panic, counted the
// job as done and went on; Value is what the callback panicked with and
// Stack where. Only the first panic is kept.
type CallbackPanicError struct {
	Value any
	Stack []byte
}

func (e *CallbackPanicError) Error() string {
	return fmt.Sprintf("kcopyd: a callback panicked: %v", e.Value)
}

// Unwrap returns the panic value when it is an error.
func (e *CallbackPanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}
