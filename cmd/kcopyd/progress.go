package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/sys/unix"
)

// progress shows how far a command got. set and fail may be called from
// one goroutine at a time; stop must be called exactly once, last.
type progress interface {
	// set records that done bytes of the total are finished.
	set(done int64)
	// fail marks destination i as failed.
	fail(i int)
	// stop ends the display and waits until it is drawn.
	stop()
}

// progressConfig describes a progress display.
type progressConfig struct {
	out      io.Writer // stderr
	quiet    bool      // no display at all
	verb     string    // "copy", "zero", "verify"
	total    int64     // bytes
	names    []string  // destinations, one bar each when there are several
	interval time.Duration
}

// newProgress returns a live mpb display when out is a terminal, periodic
// plain lines when it is not, and nothing under quiet.
func newProgress(c progressConfig) progress {
	switch {
	case c.quiet || c.total <= 0:
		return nopProgress{}
	case isTerminal(c.out):
		return newBarProgress(c)
	default:
		return newLineProgress(c)
	}
}

// isTerminal reports whether w is a terminal that can show bars: one with
// a known width (a pseudo-terminal without a window size, as under
// script(1) in a pipe, gets plain lines).
func isTerminal(w io.Writer) bool {
	if lw, ok := w.(*lockedWriter); ok {
		w = lw.w
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
		return false
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	return err == nil && ws.Col > 0 && ws.Row > 0
}

type nopProgress struct{}

func (nopProgress) set(int64) {}
func (nopProgress) fail(int)  {}
func (nopProgress) stop()     {}

// barProgress draws one mpb bar, or one per destination.
type barProgress struct {
	p      *mpb.Progress
	bars   []*mpb.Bar
	failed []bool
}

func newBarProgress(c progressConfig) *barProgress {
	out := c.out
	if lw, ok := out.(*lockedWriter); ok {
		// mpb must see the terminal itself; messages during the run go
		// through p.Write (see writeRun.execute).
		out = lw.w
	}
	p := mpb.New(mpb.WithOutput(out), mpb.WithWidth(100), mpb.WithRefreshRate(200*time.Millisecond))
	names := c.names
	if len(names) <= 1 {
		names = []string{c.verb}
	}
	width := 0
	for _, n := range names {
		width = max(width, min(len(n), 32))
	}
	b := &barProgress{p: p, failed: make([]bool, len(names))}
	for _, n := range names {
		if len(n) > 32 {
			n = "…" + n[len(n)-31:]
		}
		bar := p.AddBar(c.total,
			mpb.PrependDecorators(
				decor.Name(n, decor.WC{W: width + 1, C: decor.DindentRight}),
				decor.OnAbort(decor.Percentage(decor.WC{W: 5}), "FAILED"),
			),
			mpb.AppendDecorators(
				decor.CountersKibiByte("% .1f / % .1f"),
				decor.Name("  "),
				decor.AverageSpeed(decor.SizeB1024(0), "% .1f"),
				decor.Name("  ETA "),
				decor.OnComplete(decor.AverageETA(decor.ET_STYLE_GO), "done"),
			),
		)
		b.bars = append(b.bars, bar)
	}
	return b
}

func (b *barProgress) set(done int64) {
	for i, bar := range b.bars {
		if !b.failed[i] {
			bar.SetCurrent(done)
		}
	}
}

func (b *barProgress) fail(i int) {
	if len(b.bars) == 1 {
		i = 0
	}
	if i < len(b.bars) && !b.failed[i] {
		b.failed[i] = true
		b.bars[i].Abort(false)
	}
}

func (b *barProgress) stop() {
	for _, bar := range b.bars {
		if !bar.Completed() {
			bar.Abort(false)
		}
	}
	b.p.Wait()
}

// lineProgress prints "kcopyd: copy: 1.0 GiB of 4.0 GiB (25.0%), ..."
// every interval.
type lineProgress struct {
	c     progressConfig
	start time.Time
	done  atomic.Int64
	quit  chan struct{}
	wg    sync.WaitGroup
}

func newLineProgress(c progressConfig) *lineProgress {
	if c.interval <= 0 {
		c.interval = 5 * time.Second
	}
	l := &lineProgress{c: c, start: time.Now(), quit: make(chan struct{})}
	l.wg.Add(1)
	go l.loop()
	return l
}

func (l *lineProgress) loop() {
	defer l.wg.Done()
	t := time.NewTicker(l.c.interval)
	defer t.Stop()
	for {
		select {
		case <-l.quit:
			return
		case now := <-t.C:
			fmt.Fprintln(l.c.out, progressLine(l.c.verb, l.done.Load(), l.c.total, now.Sub(l.start)))
		}
	}
}

// progressLine formats one plain progress line.
func progressLine(verb string, done, total int64, elapsed time.Duration) string {
	s := fmt.Sprintf("kcopyd: %s: %s of %s (%.1f%%)", verb, humanSize(float64(done)), humanSize(float64(total)), 100*float64(done)/float64(total))
	if secs := elapsed.Seconds(); secs > 0 && done > 0 {
		rate := float64(done) / secs
		eta := time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second)
		s += fmt.Sprintf(", %s/s, ETA %s", humanSize(rate), eta)
	}
	return s
}

func (l *lineProgress) set(done int64) { l.done.Store(done) }
func (l *lineProgress) fail(int)       {}
func (l *lineProgress) stop() {
	close(l.quit)
	l.wg.Wait()
}
