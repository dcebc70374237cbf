package ratefile_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/internal/testutil"
	"github.com/kcopyd/kcopyd/ratefile"
	"github.com/kcopyd/kcopyd/units"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }

// put replaces the file at path with content atomically, so that Follow
// never reads half of it.
func put(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rate")
	if _, _, err := ratefile.Read(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read(missing) = %v; want fs.ErrNotExist", err)
	}
	put(t, path, "50M/s\n")
	if rate, content, err := ratefile.Read(path); err != nil || rate != 50<<20 || string(content) != "50M/s\n" {
		t.Errorf("Read = %d, %q, %v; want 50M", rate, content, err)
	}
	put(t, path, "fast\n")
	if _, _, err := ratefile.Read(path); !errors.Is(err, units.ErrBadSize) {
		t.Errorf("Read(bad rate) = %v; want units.ErrBadSize", err)
	}
	put(t, path, strings.Repeat("0", ratefile.MaxSize+1))
	if _, _, err := ratefile.Read(path); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("Read(too long) = %v", err)
	}
	// A FIFO nobody writes to is refused at once, not waited on.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ratefile.Read(fifo); !errors.Is(err, ratefile.ErrNotRegular) {
		t.Errorf("Read(FIFO) = %v; want ErrNotRegular", err)
	}
	if _, _, err := ratefile.Read(dir); !errors.Is(err, ratefile.ErrNotRegular) {
		t.Errorf("Read(directory) = %v; want ErrNotRegular", err)
	}
}

// event is one call of Follow's report.
type event struct {
	rate int64
	err  error
}

// TestFollow changes the file under a running Follow: each new valid rate
// is set and reported, a bad content and a non-regular file are reported
// once each and leave the rate, and Follow returns when its context ends.
func TestFollow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rate")
	put(t, path, "1M")
	rate, content, err := ratefile.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	th := kcopyd.NewThrottle(100)
	th.SetRate(rate)
	events := make(chan event, 16)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ratefile.Follow(ctx, path, content, th, time.Millisecond, func(rate int64, err error) { events <- event{rate, err} })
	}()
	next := func() event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(30 * time.Second):
			t.Fatal("Follow reported nothing")
			return event{}
		}
	}
	put(t, path, "2M\n")
	if e := next(); e.err != nil || e.rate != 2<<20 || th.Rate() != 2<<20 {
		t.Fatalf("after 2M: report %+v, rate %d", e, th.Rate())
	}
	put(t, path, "fast")
	if e := next(); !errors.Is(e.err, units.ErrBadSize) || th.Rate() != 2<<20 {
		t.Fatalf("after a bad rate: report %+v, rate %d", e, th.Rate())
	}
	os.Remove(path)
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if e := next(); !errors.Is(e.err, ratefile.ErrNotRegular) {
		t.Fatalf("after a FIFO: report %+v", e)
	}
	os.Remove(path)
	put(t, path, "unlimited")
	// Reports come in order: the next one is the change, so neither the
	// bad content nor the FIFO was reported twice.
	if e := next(); e.err != nil || e.rate != 0 || th.Rate() != 0 {
		t.Fatalf("after unlimited: report %+v, rate %d", e, th.Rate())
	}
	cancel()
	wg.Wait()
	if len(events) != 0 {
		t.Errorf("extra report %+v", <-events)
	}
}

func TestNewThrottle(t *testing.T) {
	dir := t.TempDir()
	path, missing, bad := filepath.Join(dir, "rate"), filepath.Join(dir, "missing"), filepath.Join(dir, "bad")
	put(t, path, "50M\n")
	put(t, bad, "fast\n")
	for _, c := range []struct {
		name                string
		percent             int
		rate                int64
		path                string
		nilThrottle         bool
		wantPercent         int
		wantRate            int64
		wantContent, errHas string
	}{
		{"nothing limits", 100, 0, "", true, 0, 0, "", ""},
		{"a rate", 100, 1 << 20, "", false, 100, 1 << 20, "", ""},
		{"a duty cycle", 50, 0, "", false, 50, 0, "", ""},
		{"the file's rate wins", 100, 1 << 20, path, false, 100, 50 << 20, "50M\n", ""},
		{"a missing file keeps the rate", 100, 1 << 20, missing, false, 100, 1 << 20, "", ""},
		{"a missing file alone still makes a throttle to follow it", 100, 0, missing, false, 100, 0, "", ""},
		{"a file that holds no rate", 100, 0, bad, true, 0, 0, "", "fast"},
	} {
		th, content, err := ratefile.NewThrottle(c.percent, c.rate, c.path)
		switch {
		case c.errHas != "":
			if err == nil || !strings.Contains(err.Error(), c.errHas) || th != nil {
				t.Errorf("%s: NewThrottle = %v, %v; want an error with %q", c.name, th, err, c.errHas)
			}
		case err != nil || (th == nil) != c.nilThrottle || string(content) != c.wantContent:
			t.Errorf("%s: NewThrottle = %v, %q, %v; want nil %v, content %q", c.name, th, content, err, c.nilThrottle, c.wantContent)
		case th != nil && (th.Percent() != c.wantPercent || th.Rate() != c.wantRate):
			t.Errorf("%s: throttle at %d %%, %d B/s; want %d %%, %d B/s", c.name, th.Percent(), th.Rate(), c.wantPercent, c.wantRate)
		}
	}
}

func TestWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rate")
	put(t, path, "1M")
	th, content, err := ratefile.NewThrottle(100, 0, path)
	if err != nil {
		t.Fatal(err)
	}
	changed := make(chan int64, 1)
	stop := ratefile.Watch(context.Background(), path, content, th, func(rate int64, err error) {
		if err == nil {
			changed <- rate
		}
	})
	put(t, path, "2M")
	select {
	case r := <-changed:
		if r != 2<<20 || th.Rate() != 2<<20 {
			t.Errorf("Watch reported %d, throttle at %d; want 2 MiB/s", r, th.Rate())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Watch did not apply the new rate within 30 s")
	}
	stop() // waits for the goroutine: TestMain checks none is left
	if stop := ratefile.Watch(context.Background(), "", nil, th, nil); stop == nil {
		t.Fatal("Watch of no path returned nil")
	} else {
		stop()
	}
}
