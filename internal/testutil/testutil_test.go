package testutil_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

// recorder is a testing.TB that records failures instead of failing, so
// that helpers can be tested on cases where they must complain.
type recorder struct {
	testing.TB
	mu       sync.Mutex
	errs     []string
	cleanups []func()
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) Error(args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprint(args...))
}

func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

func (r *recorder) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func TestRandomDeviceAndCheckPattern(t *testing.T) {
	d := testutil.RandomDevice(t, 3<<20+5, 42)
	if !testutil.CheckPattern(t, d, 42, 0, d.Size()) {
		t.Fatal("CheckPattern on RandomDevice's own pattern failed")
	}
	if !testutil.CheckPattern(t, d, 42, 1<<20+3, 10) {
		t.Fatal("CheckPattern on a sub-range failed")
	}
	// One changed byte is found and named.
	if _, err := d.WriteAt([]byte{^d.Bytes()[2<<20+77]}, 2<<20+77); err != nil {
		t.Fatal(err)
	}
	r := &recorder{TB: t}
	if testutil.CheckPattern(r, d, 42, 0, d.Size()) {
		t.Fatal("CheckPattern missed a changed byte")
	}
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], fmt.Sprint(2<<20+77)) {
		t.Errorf("CheckPattern reported %q; want one error naming offset %d", r.errs, 2<<20+77)
	}
}

func TestEqualRange(t *testing.T) {
	a := testutil.RandomDevice(t, 1<<20, 1)
	b := device.NewMem(3 << 20)
	defer b.Close()
	testutil.WriteRange(t, b, 1<<20+3, testutil.ReadRange(t, a, 0, a.Size()))
	if !testutil.EqualRange(t, a, 0, b, 1<<20+3, a.Size()) {
		t.Fatal("EqualRange of a copy failed")
	}
	if _, err := b.WriteAt([]byte{0}, 1<<20+3+999); err != nil {
		t.Fatal(err)
	}
	want := a.Bytes()[999] == 0
	r := &recorder{TB: t}
	if got := testutil.EqualRange(r, a, 0, b, 1<<20+3, a.Size()); got != want {
		t.Fatalf("EqualRange after changing byte 999 = %v; want %v", got, want)
	}
	if !want && (len(r.errs) != 1 || !strings.Contains(r.errs[0], "first at byte 999")) {
		t.Errorf("EqualRange reported %q; want one error naming byte 999", r.errs)
	}
}

func TestCheckZero(t *testing.T) {
	d := device.NewMem(1 << 20)
	defer d.Close()
	if !testutil.CheckZero(t, d, 0, d.Size()) {
		t.Fatal("CheckZero on a new Mem failed")
	}
	d.WriteAt([]byte{1}, 12345)
	r := &recorder{TB: t}
	if testutil.CheckZero(r, d, 0, d.Size()) || len(r.errs) != 1 || !strings.Contains(r.errs[0], "12345") {
		t.Errorf("CheckZero with a 1 at 12345 reported %q; want one error naming 12345", r.errs)
	}
}

func TestCheckLeaks(t *testing.T) {
	testutil.CheckLeaks(t)
	release := make(chan struct{})
	r := &recorder{TB: t}
	testutil.CheckLeaks(r)
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-release
	}()
	r.runCleanups()
	if len(r.errs) == 0 {
		t.Error("CheckLeaks did not report a goroutine left blocked")
	}
	close(release)
	<-done
	r = &recorder{TB: t}
	testutil.CheckLeaks(r)
	r.runCleanups()
	if len(r.errs) != 0 {
		t.Errorf("CheckLeaks reported %q with no goroutine left", r.errs)
	}
}
