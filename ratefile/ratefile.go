// Package ratefile lets a throttle follow a file at run time, as kcopyd's
// --rate-file does: an operator writes "50M" (or "unlimited") into a file
// and the copy slows down or speeds up within a poll interval, without a
// restart.
//
//	th, content, err := ratefile.NewThrottle(100, 0, path)
//	if err != nil { … } // the file holds no rate
//	stop := ratefile.Watch(ctx, path, content, th, nil)
//	defer stop()
//	client, err := kcopyd.NewClient(&kcopyd.Options{Throttle: th})
//
// Read and Follow are the parts, for a caller that runs its own loop.
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
	"io/fs"
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

// NewThrottle returns the throttle a tool with a rate file needs: percent
// (kcopyd.NewThrottle) with a rate of rate bytes per second, or of the
// file at path when it exists (Read; "" for no file), and the file's
// content for Follow or Watch. It returns a nil throttle when nothing
// limits: percent 100, rate 0 and no path. A file that exists but holds no
// rate is an error.
func NewThrottle(percent int, rate int64, path string) (*kcopyd.Throttle, []byte, error) {
	var content []byte
	if path != "" {
		r, c, err := Read(path)
		switch {
		case err == nil:
			rate, content = r, c
		case !errors.Is(err, fs.ErrNotExist):
			return nil, nil, err
		}
	}
	if percent >= 100 && rate == 0 && path == "" {
		return nil, nil, nil
	}
	th := kcopyd.NewThrottle(percent)
	th.SetRate(rate)
	return th, content, nil
}

// Watch runs Follow on a goroutine of its own, every PollInterval, until
// the returned function is called; that function waits for it to return.
// An empty path watches nothing.
func Watch(ctx context.Context, path string, last []byte, th *kcopyd.Throttle, report func(rate int64, err error)) (stop func()) {
	if path == "" {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Follow(ctx, path, last, th, PollInterval, report)
	}()
	return func() {
		cancel()
		<-done
	}
}
