package task

import (
	"fmt"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/location"
	"github.com/kcopyd/kcopyd/plan"
)

// A Region is a byte range to copy from the source at Src to every
// destination at Dest (or to zero at Dest), as plan.Region, with the line
// of the regions file it came from for messages.
type Region struct {
	plan.Region
	// Line is the line of a regions file the region came from, 0 for a
	// region given otherwise ("the region" in messages).
	Line int
}

// Whole returns the region of n bytes at offset 0 of the source and of
// every destination.
func Whole(n int64) Region { return Region{Region: plan.Region{Len: n}} }

// Where names r in messages: "the region" or "regions line N".
func (r Region) Where() string {
	if r.Line == 0 {
		return "the region"
	}
	return fmt.Sprintf("regions line %d", r.Line)
}

// SrcEnd and DestEnd return the ends of r's source and destination ranges.
func (r Region) SrcEnd() int64  { return r.Src + r.Len }
func (r Region) DestEnd() int64 { return r.Dest + r.Len }

// The chunk sizes ChooseSubJobSize picks (docs/PERFORMANCE.md).
const (
	// SubJobSize is the chunk size of a run through the page cache: 1
	// MiB, the kernel's largest sub-job (the engine keeps the kernel's
	// default, 512 KiB). Each request costs a context switch and a device
	// doorbell; on 1 GiB with O_DIRECT, 1 MiB chunks took 0.65-0.80 s of
	// CPU against 1.04-1.33 s for 512 KiB, for 18 MiB of peak memory
	// instead of 14.
	SubJobSize = 1 << 20
	// DirectSubJobSize is the chunk size when a location reads or writes
	// with O_DIRECT, where each request costs a round trip to the device
	// and no page cache batches them: on 1 GiB, 4 MiB against 1 MiB
	// chunks took 0.22-0.34 against 0.46-0.59 CPU seconds file -> file
	// and 0.33-0.35 against 0.50-0.52 loop -> loop, at the same wall
	// time; peak RSS 40 MiB against 15 MiB.
	DirectSubJobSize = 4 << 20
)

// ChooseSubJobSize returns the chunk size for a run over the opened
// locations (nil and unopened ones are left out): DirectSubJobSize when
// one of them uses O_DIRECT (Location.Direct), else SubJobSize. Under a
// throttle with a percentage below 100 it is SubJobSize: the duty cycle is
// kept chunk by chunk, and 4 MiB chunks overshot it (loop -> loop --direct
// --throttle 50: a 56.5 % I/O-time share against 50.9 % with 1 MiB).
func ChooseSubJobSize(th *kcopyd.Throttle, locs ...*location.Location) int64 {
	if th != nil && th.Percent() < 100 {
		return SubJobSize
	}
	for _, l := range locs {
		if l != nil && l.Direct() {
			return DirectSubJobSize
		}
	}
	return SubJobSize
}

// Options configure Run. Src (for a copy), Dests and Regions are
// required; the zero value of every other field is a plain, non-sparse
// run without a throttle, map or verify.
type Options struct {
	// Src is the opened source; nil zeroes the regions of the
	// destinations.
	Src *location.Location
	// Dests are the destinations, 1 to kcopyd.MaxRegions, opened for
	// writing, except (with Create) unopened files: a missing one is
	// created, a short one grown, to the end of the last region.
	Dests []*location.Location
	// Regions are processed in order; Region.Dests limits a region to
	// some destinations.
	Regions []Region
	// Create is how files are created and grown (location.Create,
	// location.Grow); nil when no destination needs it. Hazard: a file
	// created or grown is removed or truncated back only when Run stops
	// before its first write.
	Create *location.Options

	// SubJobSize is the engine's chunk size (kcopyd.Options.SubJobSize),
	// also the unit of the map and of verify's differing chunks. Zero
	// picks one by measurement (ChooseSubJobSize); Report.SubJobSize
	// says which.
	SubJobSize int64
	// Throttle paces the run and its verify; nil: no limit.
	Throttle *kcopyd.Throttle
	// MaxJobs bounds the engine jobs in flight. Default 1. WriteSeq
	// (asked for or forced by a zoned destination) runs one at a time.
	MaxJobs int
	// Sparse skips the source's holes and writes all-zero chunks as
	// write-zeroes (copy only), unless the copy is left to the file
	// system's reflink.
	Sparse bool
	// DestIsZero declares that every destination reads zeroes already:
	// holes and zero chunks are not written at all. Hazard: a destination
	// that does not keeps its old bytes there.
	DestIsZero bool
	// IgnoreErrors keeps going after read and write errors
	// (kcopyd.IgnoreError); WriteSeq writes each destination in
	// ascending order (kcopyd.WriteSeq). They cannot be combined: Run
	// refuses both, with an error wrapping ErrOptions.
	IgnoreErrors, WriteSeq bool
	// NoFlush leaves the destinations' caches unflushed at the end.
	// Hazard: success then proves nothing about a crash.
	NoFlush bool
	// Verify reads every destination that did not fail back at the end
	// and compares it with the source (zeroes for a zeroing run).
	Verify bool
	// Direct says the user asked for O_DIRECT: alignment errors say so.
	Direct bool
	// InterruptWait bounds the wait for the I/O in flight once ctx is
	// done. Zero means batch.DefaultInterruptWait; negative, no wait.
	InterruptWait time.Duration
	// Map keeps the progress in a map file and resumes from it; nil:
	// none.
	Map *MapOptions
	// Names name options in messages. Default: the Go field names.
	Names Names
	// Events are told what happens; nil fields are not called.
	Events Events
	// WrapVerify, when not nil, wraps each destination's device before
	// Verify reads it back: for instrumentation (counting, gates in
	// tests).
	WrapVerify func(device.Device) device.Device
}

// MapOptions configure the progress map (package mapfile).
type MapOptions struct {
	// Path is the map file: loaded and resumed when it exists, else
	// created before the first write.
	Path string
	// RetryFailed turns the ranges that failed before back to untried.
	RetryFailed bool
	// CheckpointInterval: completed ranges are flushed and recorded at
	// least this often. Default DefaultCheckpointInterval.
	CheckpointInterval time.Duration
}

// Names name options in the advice of messages ("give another --map
// FILE"). An empty field takes the Go name.
type Names struct {
	Map, RetryFailed, InterruptWait, Direct, WriteSeq, IgnoreErrors string
	// Offset, Length and DestOffset name the fields of a Span.
	Offset, Length, DestOffset string
	// FailedRanges says where a user finds the failed ranges.
	FailedRanges string
}

func (n Names) withDefaults() Names {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&n.Map, "Map")
	def(&n.RetryFailed, "RetryFailed")
	def(&n.InterruptWait, "InterruptWait")
	def(&n.Direct, "Direct")
	def(&n.WriteSeq, "WriteSeq")
	def(&n.IgnoreErrors, "IgnoreErrors")
	def(&n.Offset, "Offset")
	def(&n.Length, "Length")
	def(&n.DestOffset, "DestOffset")
	def(&n.FailedRanges, "the destinations' failed ranges")
	return n
}

// Events tell the caller of Run what happens. Start, Progress, Dropped,
// Note and Info are called one at a time, on the goroutine that called
// Run. Warn is called on the planner's goroutine, concurrently with the
// others (and, after an abandoned run, possibly after Run returned).
type Events struct {
	// Start is told that the checks passed and the engine is about to
	// start, with the bytes of the regions.
	Start func(total int64)
	// Progress is told the bytes done so far, about five times a second
	// and at the end.
	Progress func(done int64)
	// Dropped is told that destination i was dropped (a write or flush
	// failed).
	Dropped func(i int)
	// Warn is told what went wrong without stopping the run (an
	// allocation map that could not be read); every warning is also in
	// Report.Warnings.
	Warn func(msg string)
	// Note is told what the run decided or waits for (a zoned
	// destination written in order, the I/O awaited after an interrupt).
	Note func(msg string)
	// Info is told what a quiet caller may leave out (failed ranges
	// retried).
	Info func(msg string)
}

func (e *Events) warn(msg string) {
	if e.Warn != nil {
		e.Warn(msg)
	}
}

func (e *Events) note(msg string) {
	if e.Note != nil {
		e.Note(msg)
	}
}

func (e *Events) info(msg string) {
	if e.Info != nil {
		e.Info(msg)
	}
}

// clone returns a copy of o with the defaults applied.
func (o *Options) clone() *Options {
	c := *o
	c.Regions = append([]Region(nil), o.Regions...)
	c.Dests = append([]*location.Location(nil), o.Dests...)
	if c.SubJobSize == 0 {
		c.SubJobSize = ChooseSubJobSize(c.Throttle, append([]*location.Location{c.Src}, c.Dests...)...)
	}
	if c.MaxJobs <= 0 {
		c.MaxJobs = 1
	}
	if c.Map != nil {
		m := *c.Map
		if m.CheckpointInterval <= 0 {
			m.CheckpointInterval = DefaultCheckpointInterval
		}
		c.Map = &m
	}
	c.Names = c.Names.withDefaults()
	return &c
}

// planRegions returns the regions as plan and batch take them.
func planRegions(regions []Region) []plan.Region {
	out := make([]plan.Region, len(regions))
	for i, rg := range regions {
		out[i] = rg.Region
	}
	return out
}
