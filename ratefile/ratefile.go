// Package ratefile lets a throttle follow a file at run time, as kcopyd's
// --rate-file does: an operator writes "50M" (or "unlimited") into a file
// and the copy slows down or speeds up within a poll interval, without a
// restart.
//
//	th := kcopyd.NewThrottle(100)
//	if rate, content, err := ratefile.Read(path); err == nil {
//		th.SetRate(rate)
//		go ratefile.Follow(ctx, path, content, th, ratefile.PollInterval, nil)
//	}
//
// The file holds one rate in bytes per second as units.ParseRate reads
// it: a size with an optional "/s", or "0" or "unlimited". Only regular
// files are read, without ever blocking: a FIFO or a device named by
// mistake is refused, not waited on.
package ratefile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/units"
)

// PollInterval is how often kcopyd reads its --rate-file.
const PollInterval = time.Second

// MaxSize bounds what is read of a rate file: a rate is a few bytes.
const MaxSize = 4096

// ErrNotRegular is wrapped by the errors of Read and Follow for a path
// that is not a regular file (a FIFO, a socket, a device, a directory).
var ErrNotRegular = errors.New("refusing to read it")

// Read returns the rate in the regular file path and the file's content,
// for Follow. A missing file fails with an error wrapping fs.ErrNotExist,
// one that is not a regular file with one wrapping ErrNotRegular (without
// blocking: it is opened with O_NONBLOCK), one longer than MaxSize or one
// whose content is not a rate with an error saying so (wrapping
// units.ErrBadSize for a bad rate).
func Read(path string) (rate int64, content []byte, err error) {
	b, err := readRegular(path)
	if err != nil {
		return 0, nil, err
	}
	rate, err = units.ParseRate(string(b))
	if err != nil {
		return 0, nil, err
	}
	return rate, b, nil
}

// readRegular reads the regular file path: at most MaxSize bytes, never
// blocking on a FIFO or a device.
func readRegular(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: not a regular file (%s)", ErrNotRegular, st.Mode().Type())
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err == nil && len(b) > MaxSize {
		err = fmt.Errorf("longer than %d bytes", MaxSize)
	}
	return b, err
}

// notRegular is Follow's last content while the file is not a regular
// file, so that it reports that once.
var notRegular = []byte("\x00not a regular file")

// Follow reads path every interval until ctx is done and sets th's rate
// from each new content that is a valid rate. last is the content applied
// already (Read's; nil for none). report, when not nil, is called on
// Follow's goroutine after each change (err nil, with the new rate) and
// for each content it refuses (the rate stays as it was): one that is not
// a rate, and a path that is no longer a regular file, told once until it
// is one again. A file that is missing or unreadable for a while leaves
// the rate as it is, silently. Follow returns when ctx is done.
func Follow(ctx context.Context, path string, last []byte, th *kcopyd.Throttle, interval time.Duration, report func(rate int64, err error)) {
	if report == nil {
		report = func(int64, error) {}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := readRegular(path)
		if errors.Is(err, ErrNotRegular) {
			if !bytes.Equal(last, notRegular) {
				report(0, err)
				last = notRegular
			}
			continue
		}
		if err != nil || bytes.Equal(b, last) {
			continue
		}
		last = b
		rate, err := units.ParseRate(string(b))
		if err != nil {
			report(0, err)
			continue
		}
		th.SetRate(rate)
		report(rate, nil)
	}
}
