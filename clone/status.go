package clone

import (
	"fmt"
	"time"

	"github.com/kcopyd/kcopyd/units"
)

// Status is a snapshot of a clone's progress.
type Status struct {
	Size             int64   `json:"size"`               // bytes: SOURCE's size
	RegionSize       int64   `json:"region_size"`        // bytes
	Regions          int64   `json:"regions"`            // total regions
	HydratedRegions  int64   `json:"hydrated_regions"`   // regions read from DEST
	HydratedBytes    int64   `json:"hydrated_bytes"`     // bytes of those regions
	HydratingRegions int64   `json:"hydrating_regions"`  // regions being copied by background hydration now
	CopiedBytes      int64   `json:"copied_bytes"`       // bytes copied from SOURCE since Open
	Rate             float64 `json:"rate"`               // bytes copied per second over the last few seconds
	FailedRegions    int64   `json:"failed_regions"`     // regions whose last copy failed, waiting for a retry
	Failures         int64   `json:"failures"`           // failed copies since Open
	SourceReadErrors int64   `json:"source_read_errors"` // client reads SOURCE failed since Open
	LastError        string  `json:"last_error,omitempty"`
	Done             bool    `json:"done"` // every region hydrated and committed
}

// rateWindow is how far back Status looks for the rate.
const rateWindow = 5 * time.Second

type rateSample struct {
	t      time.Time
	copied int64
}

// sampleLocked records the copied bytes for the rate. mu is held.
func (c *Clone) sampleLocked(now time.Time) {
	s := append(c.mu.samples, rateSample{now, c.mu.copied})
	for len(s) > 2 && now.Sub(s[1].t) >= rateWindow {
		s = s[1:]
	}
	c.mu.samples = s
}

// Status returns the clone's progress. Safe at any time, also after Close.
func (c *Clone) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{
		Size:             c.size,
		RegionSize:       c.rs,
		Regions:          c.regions,
		HydratedRegions:  c.mu.count,
		HydratedBytes:    c.mu.count * c.rs,
		HydratingRegions: c.mu.busy,
		CopiedBytes:      c.mu.copied,
		FailedRegions:    c.mu.nfailed,
		Failures:         c.mu.failures,
		SourceReadErrors: c.mu.readErrs,
	}
	if c.mu.bits.test(c.regions - 1) {
		st.HydratedBytes -= c.regions*c.rs - c.size
	}
	if s := c.mu.samples; len(s) >= 2 {
		first, last := s[0], s[len(s)-1]
		if d := last.t.Sub(first.t).Seconds(); d > 0 {
			st.Rate = float64(last.copied-first.copied) / d
		}
	}
	if c.mu.lastErr != nil {
		st.LastError = c.mu.lastErr.Error()
	}
	select {
	case <-c.hydrated:
		st.Done = true
	default:
	}
	return st
}

// String describes the progress in one line, for logs and progress
// displays: "1.0 GiB of 4.0 GiB hydrated (25.0%)", then while copying
// ", 50.0 MiB/s, ETA 1m1s", failed regions with the last error, and
// ", complete" once Done.
func (s Status) String() string {
	str := fmt.Sprintf("%s of %s hydrated (%.1f%%)", units.HumanSize(float64(s.HydratedBytes)), units.HumanSize(float64(s.Size)), 100*float64(s.HydratedBytes)/float64(s.Size))
	if s.Rate > 0 && !s.Done {
		eta := time.Duration(float64(s.Size-s.HydratedBytes) / s.Rate * float64(time.Second)).Round(time.Second)
		str += fmt.Sprintf(", %s/s, ETA %s", units.HumanSize(s.Rate), eta)
	}
	if s.FailedRegions > 0 {
		str += fmt.Sprintf(", %d regions failed to copy (retrying): %s", s.FailedRegions, s.LastError)
	}
	if s.Done {
		str += ", complete"
	}
	return str
}
