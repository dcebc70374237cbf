package ratefile_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/ratefile"
	"github.com/kcopyd/kcopyd/units"
)

// A throttle whose byte rate an operator changes by rewriting a file.
func Example() {
	dir, err := os.MkdirTemp("", "rate")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "rate")
	if err := os.WriteFile(path, []byte("50M\n"), 0o644); err != nil {
		panic(err)
	}

	th := kcopyd.NewThrottle(100)
	rate, content, err := ratefile.Read(path)
	if err != nil {
		panic(err)
	}
	th.SetRate(rate)
	fmt.Println(units.FormatRate(th.Rate()))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{}, 1)
	go ratefile.Follow(ctx, path, content, th, 10*time.Millisecond, func(rate int64, err error) {
		fmt.Println("rate set to", units.FormatRate(rate), err)
		changed <- struct{}{}
	})
	// Replace the file at once, so that Follow never reads half of it.
	if err := os.WriteFile(path+".new", []byte("unlimited\n"), 0o644); err != nil {
		panic(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		panic(err)
	}
	<-changed
	fmt.Println(units.FormatRate(th.Rate()))
	// Output:
	// 50MiB/s
	// rate set to unlimited <nil>
	// unlimited
}
