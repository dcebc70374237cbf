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

// readRateFile returns the rate in path and whether the file exists.
func readRateFile(path string) (rate int64, content []byte, exists bool, err error) {
	b, err := os.ReadFile(path)
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
		b, err := os.ReadFile(path)
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
