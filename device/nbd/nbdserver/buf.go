package nbdserver

import "github.com/kcopyd/kcopyd/internal/bufpool"

// payload is an aligned buffer for the data of one request.
type payload struct {
	b      []byte
	pooled bool // b came from the server's pool and goes back to it
}

// getBuf returns an aligned buffer of n bytes: from the server's pool,
// which keeps up to MaxInFlightBytes of buffers for reuse, else freshly
// allocated. Give it back with putBuf.
func (s *Server) getBuf(n int) payload {
	if n == 0 {
		return payload{}
	}
	if b, ok := s.pool.Get(n); ok {
		return payload{b: b, pooled: true}
	}
	return payload{b: bufpool.Alloc(n)}
}

// putBuf returns a buffer from getBuf; one that was not pooled is left to
// the garbage collector.
func (s *Server) putBuf(p payload) {
	if p.pooled {
		s.pool.Put(p.b)
	}
}
