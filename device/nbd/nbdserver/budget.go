package nbdserver

import "sync"

// budget bounds the requests of one connection in flight: their number
// and the payload bytes they hold. The reader acquires before it reads a
// request's payload, so a client that sends faster than the device works
// is held back by TCP (backpressure) rather than by server memory.
type budget struct {
	mu struct {
		sync.Mutex
		slots int           // requests that may still start
		bytes int64         // payload bytes that may still be held
		wake  chan struct{} // closed and replaced by every release
	}
}

func newBudget(slots int, bytes int64) *budget {
	b := &budget{}
	b.mu.slots, b.mu.bytes, b.mu.wake = slots, bytes, make(chan struct{})
	return b
}

// acquire takes one slot and n bytes (n at most the total), waiting for
// releases. It returns false, having taken nothing, when stop is closed
// first.
func (b *budget) acquire(n int64, stop <-chan struct{}) bool {
	for {
		b.mu.Lock()
		if b.mu.slots > 0 && b.mu.bytes >= n {
			b.mu.slots--
			b.mu.bytes -= n
			b.mu.Unlock()
			return true
		}
		wake := b.mu.wake
		b.mu.Unlock()
		select {
		case <-wake:
		case <-stop:
			return false
		}
	}
}

// release returns what one acquire(n) took.
func (b *budget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mu.slots++
	b.mu.bytes += n
	close(b.mu.wake)
	b.mu.wake = make(chan struct{})
}
