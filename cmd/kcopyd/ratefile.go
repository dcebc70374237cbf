package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/ratefile"
	"github.com/kcopyd/kcopyd/units"
)

// rateFilePoll is how often --rate-file is read.
const rateFilePoll = ratefile.PollInterval

// readRateFile returns the rate in the --rate-file path, its content and
// whether the file exists (ratefile.Read).
func readRateFile(path string) (rate int64, content []byte, exists bool, err error) {
	rate, content, err = ratefile.Read(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil, false, nil
	}
	return rate, content, true, err
}

// watchRateFile follows the --rate-file path until ctx is done
// (ratefile.Follow), telling out of each new rate and each refused one.
func watchRateFile(ctx context.Context, path string, last []byte, th *kcopyd.Throttle, out io.Writer, interval time.Duration) {
	ratefile.Follow(ctx, path, last, th, interval, func(rate int64, err error) {
		if err != nil {
			fmt.Fprintf(out, "kcopyd: --rate-file %s: %v; rate unchanged\n", path, err)
			return
		}
		fmt.Fprintf(out, "kcopyd: rate set to %s (from %s)\n", units.FormatRate(rate), path)
	})
}
