package uring

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// result is a Completer that records one completion.
type result struct {
	n    int
	err  error
	done chan struct{}
}

func newResult() *result { return &result{done: make(chan struct{})} }

func (r *result) Complete(n int, err error) {
	r.n, r.err = n, err
	close(r.done)
}

func newRing(t *testing.T, entries uint32) *Ring {
	t.Helper()
	r, err := New(entries)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skipf("io_uring is not available here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReadWrite(t *testing.T) {
	r := newRing(t, 8)
	defer r.Close()
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// 64 requests through an 8-entry ring: each waits for its
	// completion, so slots are reused.
	want := make([]byte, 64<<10)
	for i := range want {
		want[i] = byte(i * 7)
	}
	for i := 0; i < len(want); i += 1024 {
		res := newResult()
		if !r.Start(Write, int(f.Fd()), want[i:i+1024], int64(i), res) {
			t.Fatalf("write %d not started", i)
		}
		<-res.done
		if res.err != nil || res.n != 1024 {
			t.Fatalf("write %d: %d, %v", i, res.n, res.err)
		}
	}
	got, err := os.ReadFile(f.Name())
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("file content differs from what was written (err %v)", err)
	}
	buf := make([]byte, len(want))
	res := newResult()
	if !r.Start(Read, int(f.Fd()), buf, 0, res) {
		t.Fatal("read not started")
	}
	<-res.done
	if res.err != nil || res.n != len(want) || !bytes.Equal(buf, want) {
		t.Fatalf("read: %d, %v, equal %v", res.n, res.err, bytes.Equal(buf, want))
	}
	// A read past the end is short, not an error.
	res = newResult()
	r.Start(Read, int(f.Fd()), buf, int64(len(want)-100), res)
	<-res.done
	if res.err != nil || res.n != 100 {
		t.Fatalf("read across the end: %d, %v; want 100, nil", res.n, res.err)
	}
}

func TestErrorCompletes(t *testing.T) {
	r := newRing(t, 4)
	defer r.Close()
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res := newResult()
	// Writing to a descriptor opened read-only fails in the kernel.
	if !r.Start(Write, int(f.Fd()), make([]byte, 512), 0, res) {
		t.Fatal("write not started")
	}
	<-res.done
	if !errors.Is(res.err, syscall.EBADF) || res.n != 0 {
		t.Fatalf("got %d, %v; want 0, EBADF", res.n, res.err)
	}
	if r.Start(Read, int(f.Fd()), nil, 0, newResult()) || r.Start(Read, int(f.Fd()), make([]byte, 1), -1, newResult()) {
		t.Fatal("an empty buffer or a negative offset was started")
	}
}

// pipeGate returns a pipe: reads of its read end, started on the ring,
// stay in flight until the test writes to the other end.
func pipeGate(t *testing.T) (rd, wr *os.File) {
	t.Helper()
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close(); wr.Close() })
	return rd, wr
}

// TestFullRefuses fills every slot with reads of an empty pipe: the next
// Start is refused at once, not queued; once the pipe has data, all
// complete and a slot is free again.
func TestFullRefuses(t *testing.T) {
	r := newRing(t, 2)
	defer r.Close()
	rd, wr := pipeGate(t)
	slots := len(r.slots)
	res := make([]*result, slots)
	bufs := make([][]byte, slots)
	for i := range res {
		res[i], bufs[i] = newResult(), make([]byte, 1)
		if !r.Start(Read, int(rd.Fd()), bufs[i], 0, res[i]) {
			t.Fatalf("read %d of %d not started", i, slots)
		}
	}
	if r.Start(Read, int(rd.Fd()), make([]byte, 1), 0, newResult()) {
		t.Fatal("a full ring started another request")
	}
	if _, err := wr.Write(bytes.Repeat([]byte{'x'}, slots)); err != nil {
		t.Fatal(err)
	}
	for i, x := range res {
		<-x.done
		if x.err != nil || x.n != 1 || bufs[i][0] != 'x' {
			t.Fatalf("read %d: %d, %v, %q", i, x.n, x.err, bufs[i])
		}
	}
	x := newResult()
	if !r.Start(Write, int(wr.Fd()), []byte{'y'}, 0, x) {
		t.Fatal("no slot free after every request completed")
	}
	<-x.done
}

// TestCloseWaits shows Close waiting for a request in flight: the request
// completes normally, and Close returns only after its Complete ran.
func TestCloseWaits(t *testing.T) {
	r := newRing(t, 4)
	rd, wr := pipeGate(t)
	res := newResult()
	if !r.Start(Read, int(rd.Fd()), make([]byte, 1), 0, res) {
		t.Fatal("read not started")
	}
	closed := make(chan error)
	go func() { closed <- r.Close() }()
	// Wait until Close has begun (it marks the ring closed, then waits
	// for the read, which needs the write below).
	for {
		r.mu.Lock()
		c := r.closed
		r.mu.Unlock()
		if c {
			break
		}
		runtime.Gosched()
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned %v with a request in flight", err)
	default:
	}
	if r.Start(Read, int(rd.Fd()), make([]byte, 1), 0, newResult()) {
		t.Fatal("Start succeeded while Close was waiting")
	}
	wr.Write([]byte{'z'})
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	select {
	case <-res.done:
	default:
		t.Fatal("Close returned before the request in flight completed")
	}
	if r.Start(Read, int(rd.Fd()), make([]byte, 1), 0, newResult()) {
		t.Fatal("Start after Close succeeded")
	}
	if err := r.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

// TestConcurrent runs many goroutines through one small ring; every
// request either starts and completes once, or is refused and done by the
// caller.
func TestConcurrent(t *testing.T) {
	r := newRing(t, 4)
	defer r.Close()
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const workers, each, size = 8, 200, 512
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := bytes.Repeat([]byte{byte(w + 1)}, size)
			for i := range each {
				off := int64((w*each + i) * size)
				res := newResult()
				if !r.Start(Write, int(f.Fd()), p, off, res) {
					if _, err := f.WriteAt(p, off); err != nil {
						t.Error(err)
					}
					continue
				}
				<-res.done
				if res.err != nil || res.n != size {
					t.Errorf("write at %d: %d, %v", off, res.n, res.err)
				}
			}
		}()
	}
	wg.Wait()
	got, _ := os.ReadFile(f.Name())
	for w := range workers {
		want := bytes.Repeat([]byte{byte(w + 1)}, each*size)
		if !bytes.Equal(got[w*each*size:(w+1)*each*size], want) {
			t.Fatalf("worker %d's range differs", w)
		}
	}
}
