// Package invariants switches on expensive run-time checks of the engine's
// rules (chunks queued and issued in ascending order, every buffer returned,
// the pool's accounting), in the manner of pebble's internal/invariants.
//
// The checks cost time on every chunk, so they are compiled in only with
// the build tag "invariants":
//
//	go test -tags invariants ./...
//
// A violated invariant is a bug in kcopyd and panics.
package invariants
