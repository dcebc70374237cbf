package kcopyd_test

import (
	"bytes"
	"context"
	"fmt"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
)

// pendingException is dm-snap's dm_snap_pending_exception: a chunk of the
// origin on its way to the COW device, numbered in the order it started.
type pendingException struct {
	seq      uint64
	oldChunk int64 // chunk of the origin (and of the snapshot's view)
	newChunk int64 // chunk of the COW device
	how      string
}

// cowSnapshot is a dm-snap snapshot: an origin, a COW device, and the
// state that puts out-of-order completions back in order. Only callbacks
// touch completeSeq, outOfOrder and log, and a client runs its callbacks
// one at a time: this is why the kernel needs no lock here.
type cowSnapshot struct {
	kc        *kcopyd.Client
	origin    device.Device
	cow       device.Device
	chunkSize int64

	startSeq    uint64                       // exception_start_sequence: the submitter's
	completeSeq uint64                       // exception_complete_sequence: callbacks'
	outOfOrder  map[uint64]*pendingException // out_of_order_tree, keyed by sequence
	exceptions  map[int64]int64              // completed: origin chunk to COW chunk
	log         []string
	allDone     chan struct{}
	want        uint64            // exceptions to complete before allDone is closed
	parked      func(waiting int) // told how many wait after each early completion
}

// newPending numbers a new exception, as dm-snap does when it allocates one.
func (s *cowSnapshot) newPending(oldChunk int64, how string) *pendingException {
	pe := &pendingException{seq: s.startSeq, oldChunk: oldChunk, newChunk: int64(s.startSeq), how: how}
	s.startSeq++
	return pe
}

// startCopy is dm-snap's start_copy: copy the origin chunk to its COW
// chunk, clipped at the end of the origin, flags 0.
func (s *cowSnapshot) startCopy(pe *pendingException) {
	off := pe.oldChunk * s.chunkSize
	n := min(s.chunkSize, s.origin.Size()-off)
	pe.how = fmt.Sprintf("copy of %d bytes", n)
	_, err := s.kc.Copy(context.Background(),
		kcopyd.Region{Dev: s.origin, Off: off, Len: n},
		[]kcopyd.Region{{Dev: s.cow, Off: pe.newChunk * s.chunkSize, Len: n}}, 0,
		func(readErr bool, writeErr uint64, _ error) { s.copyCallback(pe, readErr || writeErr != 0) })
	if err != nil {
		panic(err)
	}
}

// startFullWrite is dm-snap's start_full_bio: a write to the snapshot
// that covers a whole chunk needs no copy. The bio goes straight to the
// COW chunk, and its completion reaches the same callback through a
// prepared handle, fired from the I/O's own goroutine.
func (s *cowSnapshot) startFullWrite(pe *pendingException, data []byte) {
	h, err := s.kc.PrepareCallback(func(readErr bool, writeErr uint64, _ error) {
		s.copyCallback(pe, readErr || writeErr != 0)
	})
	if err != nil {
		panic(err)
	}
	go func() { // the bio's submission and end_io
		var failed uint64
		if _, err := s.cow.WriteAt(data, pe.newChunk*s.chunkSize); err != nil {
			failed = 1
		}
		s.kc.DoCallback(h, false, failed)
	}()
}

// copyCallback is dm-snap's copy_callback: an exception completes only
// after every exception started before it, so a copy that finishes early
// waits in outOfOrder until the ones before it are done.
func (s *cowSnapshot) copyCallback(pe *pendingException, failed bool) {
	if failed {
		panic(fmt.Sprintf("exception %d failed", pe.seq)) // dm-snap would invalidate the snapshot
	}
	if pe.seq != s.completeSeq {
		s.outOfOrder[pe.seq] = pe
		s.parked(len(s.outOfOrder))
		return
	}
	s.log = append(s.log, fmt.Sprintf("exception %d completes with %d later ones waiting behind it", pe.seq, len(s.outOfOrder)))
	for pe != nil {
		s.completeException(pe)
		s.completeSeq++
		pe = s.outOfOrder[s.completeSeq]
		delete(s.outOfOrder, s.completeSeq)
	}
	if s.completeSeq == s.want {
		close(s.allDone)
	}
}

// completeException is dm-snap's complete_exception: the chunk now lives
// on the COW device, and origin writes held back for it may proceed.
func (s *cowSnapshot) completeException(pe *pendingException) {
	s.exceptions[pe.oldChunk] = pe.newChunk
	s.log = append(s.log, fmt.Sprintf("exception %d: chunk %d -> COW chunk %d (%s)", pe.seq, pe.oldChunk, pe.newChunk, pe.how))
}

// Example_snapshotCopyOnWrite models dm-snap's copy-on-write
// (drivers/md/dm-snap.c: start_copy, start_full_bio, copy_callback). A
// write to the origin first copies the chunk it hits to the COW device,
// one job per chunk (clipped at the end of the origin), flags 0. kcopyd
// completes jobs in any order, but exceptions must complete in the order
// they started, so dm-snap numbers them and parks early completions until
// their predecessors are done; it needs no lock for that, because a
// client's callbacks never run concurrently. A write to the snapshot that
// covers a whole chunk needs no copy: it is written to the COW device
// directly and completes through PrepareCallback and DoCallback, in the
// same order. Here the origin read of the first chunk is held back until
// the three later exceptions have completed, so they wait for it.
func Example_snapshotCopyOnWrite() {
	const chunk = 16 << 10
	kc, err := kcopyd.NewClient(nil)
	if err != nil {
		panic(err)
	}
	defer kc.Close()

	// The origin is 10.5 chunks; reading chunk 2 waits for release.
	release := make(chan struct{})
	hold := faultdev.InjectorFunc(func(faultdev.Op) faultdev.Fault { <-release; return faultdev.Fault{} })
	originMem := device.NewMemFrom(bytes.Repeat([]byte("old data"), 21*chunk/2/8))
	s := &cowSnapshot{
		kc:         kc,
		origin:     faultdev.Wrap(originMem, faultdev.Reads(faultdev.Range(2*chunk, 1, hold))),
		cow:        device.NewMem(16 * chunk),
		chunkSize:  chunk,
		outOfOrder: map[uint64]*pendingException{},
		exceptions: map[int64]int64{},
		allDone:    make(chan struct{}),
		want:       4,
		parked: func(waiting int) {
			if waiting == 3 {
				close(release) // the three later exceptions are waiting
			}
		},
	}
	// Writes to origin chunks 2, 5 and 10 (the short last one) start
	// three copies; a whole-chunk write to the snapshot's chunk 9 starts
	// a fourth exception with no copy.
	for _, c := range []int64{2, 5, 10} {
		s.startCopy(s.newPending(c, ""))
	}
	s.startFullWrite(s.newPending(9, "whole-chunk write, no copy"), bytes.Repeat([]byte("new snap"), chunk/8))
	<-s.allDone

	// The origin writes held back by the exceptions may now go on.
	originMem.WriteAt(bytes.Repeat([]byte("NEW DATA"), chunk/8), 2*chunk)
	snap := make([]byte, 8)
	s.cow.ReadAt(snap, s.exceptions[2]*chunk)
	for _, line := range s.log {
		fmt.Println(line)
	}
	fmt.Printf("snapshot chunk 2 reads %q from the COW device\n", snap)
	// Output:
	// exception 0 completes with 3 later ones waiting behind it
	// exception 0: chunk 2 -> COW chunk 0 (copy of 16384 bytes)
	// exception 1: chunk 5 -> COW chunk 1 (copy of 16384 bytes)
	// exception 2: chunk 10 -> COW chunk 2 (copy of 8192 bytes)
	// exception 3: chunk 9 -> COW chunk 3 (whole-chunk write, no copy)
	// snapshot chunk 2 reads "old data" from the COW device
}
