package devicetest

import (
	"sync"

	"github.com/kcopyd/kcopyd/device"
)

// completion is a device.Completer that records its one call.
type completion struct {
	n     int
	err   error
	calls int
	mu    sync.Mutex
	done  chan struct{}
}

func newCompletion() *completion { return &completion{done: make(chan struct{})} }

func (c *completion) Complete(n int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.calls == 1 {
		c.n, c.err = n, err
		close(c.done)
	}
}

// testStarter writes and reads through device.Starter, many requests in
// flight at once, and checks the bytes through ReadAt and the other way
// round; each started request completes exactly once. A request that is
// not started is done with WriteAt or ReadAt instead, as the engine does.
func (tt *tester) testStarter() {
	t := tt.t
	s, ok := tt.d.(device.Starter)
	if !ok {
		t.Skip("device does not implement device.Starter")
	}
	piece := tt.down(min(tt.maxN, tt.win/8))
	if piece == 0 {
		t.Skip("window too small for the Starter test")
	}
	model := pattern(21, 0, tt.win)
	type req struct {
		off int64
		buf []byte
		c   *completion
	}
	var reqs []req
	for off := int64(0); off+piece <= tt.win; off += piece {
		b := tt.buf(piece)
		copy(b, model[off:off+piece])
		c := newCompletion()
		if !s.StartWriteAt(b, off, c) {
			tt.write(off, b)
			continue
		}
		reqs = append(reqs, req{off, b, c})
	}
	if len(reqs) == 0 {
		t.Skip("the device implements device.Starter but started no request (it may need an option, such as io_uring)")
	}
	for _, r := range reqs {
		<-r.c.done
		if r.c.n != len(r.buf) || r.c.err != nil {
			t.Fatalf("StartWriteAt(%d bytes, %d) completed with %d, %v", len(r.buf), r.off, r.c.n, r.c.err)
		}
	}
	tail := tt.win - tt.win%piece
	tt.write(tail, model[tail:])
	tt.check("after StartWriteAt", 0, model)
	reqs = reqs[:0]
	for off := int64(0); off+piece <= tt.win; off += piece {
		b := tt.buf(piece)
		c := newCompletion()
		if !s.StartReadAt(b, off, c) {
			continue
		}
		reqs = append(reqs, req{off, b, c})
	}
	for _, r := range reqs {
		<-r.c.done
		if r.c.n != len(r.buf) || r.c.err != nil || string(r.buf) != string(model[r.off:r.off+piece]) {
			t.Fatalf("StartReadAt(%d bytes, %d) completed with %d, %v; bytes equal: %v", len(r.buf), r.off, r.c.n, r.c.err, string(r.buf) == string(model[r.off:r.off+piece]))
		}
	}
	for _, r := range reqs {
		r.c.mu.Lock()
		calls := r.c.calls
		r.c.mu.Unlock()
		if calls != 1 {
			t.Fatalf("a started request completed %d times", calls)
		}
	}
	// Requests outside the device are never started.
	if s.StartReadAt(tt.buf(tt.unit), tt.size, newCompletion()) || s.StartWriteAt(tt.buf(tt.unit), -tt.unit, newCompletion()) {
		t.Fatal("a request outside the device was started")
	}
}
