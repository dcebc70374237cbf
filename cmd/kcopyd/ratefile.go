package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/kcopyd/kcopyd"
)

// rateFilePoll is how often --rate-file is read.
const rateFilePoll = time.Second

// parseRate parses the contents of a rate file: a SIZE per second with an
// optional "/s", or "0" or "unlimited" for no limit.
func parseRate(s string) (int64, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(s, "/s")
	if s == "unlimited" {
		return 0, nil
	}
	return parseSize(s)
}

// maxRateFile bounds what is read of a rate file: a rate is a few bytes.
const maxRateFile = 4096

// readRegular reads the regular file path. It never blocks on a FIFO or a
// device (it opens with O_NONBLOCK and refuses whatever is not a regular
// file) and reads at most maxRateFile bytes.
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
		return nil, fmt.Errorf("%w: not a regular file (%s)", errNotRegular, st.Mode().Type())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxRateFile+1))
	if err == nil && len(b) > maxRateFile {
		err = fmt.Errorf("longer than %d bytes", maxRateFile)
	}
	return b, err
}

// errNotRegular is returned by readRegular for a FIFO, socket or device.
var errNotRegular = errors.New("refusing to read it")

// readRateFile returns the rate in path and whether the file exists.
func readRateFile(path string) (rate int64, content []byte, exists bool, err error) {
	b, err := readRegular(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil, false, nil
	}
	if err != nil {
		return 0, nil, false, err
	}
	rate, err = parseRate(string(b))
	return rate, b, true, err
}

// rateString renders a rate for messages.
func rateString(rate int64) string {
	if rate == 0 {
		return "unlimited"
	}
	return formatSize(rate) + "/s"
}

// notRegular is the watcher's last content while the rate file is not a
// regular file, so that it says so once.
var notRegular = []byte("\x00not a regular file")

// watchRateFile polls path every interval until ctx is done and applies a
// changed, valid rate to th, telling out. Invalid contents are reported
// and leave the rate as it was. last is the content already applied.
func watchRateFile(ctx context.Context, path string, last []byte, th *kcopyd.Throttle, out io.Writer, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := readRegular(path)
		if errors.Is(err, errNotRegular) {
			if !bytes.Equal(last, notRegular) {
				fmt.Fprintf(out, "kcopyd: --rate-file %s: %v; rate unchanged\n", path, err)
				last = notRegular
			}
			continue
		}
		if err != nil || bytes.Equal(b, last) {
			continue
		}
		last = b
		rate, err := parseRate(string(b))
		if err != nil {
			fmt.Fprintf(out, "kcopyd: --rate-file %s: %v; rate unchanged\n", path, err)
			continue
		}
		th.SetRate(rate)
		fmt.Fprintf(out, "kcopyd: rate set to %s (from %s)\n", rateString(rate), path)
	}
}
