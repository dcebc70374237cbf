package kcopyd_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
)

// thinMapping is dm-thin's dm_thin_new_mapping: a virtual block being
// given a data block, ready once every preparation action has completed.
type thinMapping struct {
	virt, data int64
	how        string
	prepare    atomic.Int32 // prepare_actions: kcopyd jobs, plus the scheduler's reference
	failed     atomic.Bool  // the status the callbacks record
}

// thinPool is a dm-thin pool: a data device cut into blocks, an external
// origin, and one kcopyd client (pool->copier).
type thinPool struct {
	kc        *kcopyd.Client
	data      device.Device
	origin    device.Device // external origin, read-only, may be shorter than the thin device
	blockSize int64
	zeroNew   bool // the pool's zero_new_blocks feature
	prepared  chan *thinMapping
}

// copyComplete is dm-thin's copy_complete: record the status and drop one
// preparation action. It is the callback of every job of a mapping.
func (p *thinPool) copyComplete(m *thinMapping) kcopyd.Callback {
	return func(readErr bool, writeErr uint64, err error) {
		if err != nil {
			m.failed.Store(true)
		}
		p.completePreparation(m)
	}
}

// completePreparation is dm-thin's complete_mapping_preparation.
func (p *thinPool) completePreparation(m *thinMapping) {
	if m.prepare.Add(-1) == 0 {
		p.prepared <- m // the worker would now commit the mapping to the metadata
	}
}

func (p *thinPool) block(b int64) int64 { return b * p.blockSize }

// scheduleCopy is dm-thin's schedule_copy: copy len bytes of a block from
// a device (the pool's own data device when breaking sharing, or the
// external origin) to the new data block, then zero the rest of the block
// if the copy was short and zeroing is on. The two jobs run in parallel.
func (p *thinPool) scheduleCopy(m *thinMapping, from device.Device, fromBlock, length int64) {
	m.prepare.Store(2)
	p.submit(p.kc.Copy(context.Background(),
		kcopyd.Region{Dev: from, Off: p.block(fromBlock), Len: length},
		[]kcopyd.Region{{Dev: p.data, Off: p.block(m.data), Len: length}}, 0, p.copyComplete(m)))
	if length < p.blockSize && p.zeroNew {
		m.prepare.Add(1)
		p.llZero(m, p.block(m.data)+length, p.block(m.data+1))
	}
	p.completePreparation(m) // drop the scheduler's reference
}

// scheduleZero is dm-thin's schedule_zero: a new block is zeroed first,
// unless the write that provisions it overwrites all of it.
func (p *thinPool) scheduleZero(m *thinMapping, overwrite []byte) {
	m.prepare.Store(1)
	switch {
	case !p.zeroNew:
	case len(overwrite) == int(p.blockSize):
		// remap_and_issue_overwrite: the write itself fills the block.
		if _, err := p.data.WriteAt(overwrite, p.block(m.data)); err != nil {
			m.failed.Store(true)
		}
	default:
		m.prepare.Add(1)
		p.llZero(m, p.block(m.data), p.block(m.data+1))
	}
	p.completePreparation(m)
}

// llZero is dm-thin's ll_zero: a kcopyd zeroing of [begin, end).
func (p *thinPool) llZero(m *thinMapping, begin, end int64) {
	p.submit(p.kc.Zero(context.Background(),
		[]kcopyd.Region{{Dev: p.data, Off: begin, Len: end - begin}}, 0, p.copyComplete(m)))
}

func (p *thinPool) submit(_ *kcopyd.Job, err error) {
	if err != nil {
		panic(err) // a refused job: a bug in the target
	}
}

// Example_thinProvisioning models how dm-thin prepares new data blocks
// (drivers/md/dm-thin.c: schedule_copy, schedule_internal_copy,
// schedule_external_copy, schedule_zero). Breaking sharing copies the
// shared block to a new block of the same data device. A block of an
// external origin is copied from the origin; where the origin ends inside
// the block, only its part is copied and the tail is zeroed by a second
// job running beside the copy. A new block is zeroed, unless the write
// that provisions it covers the whole block. Every job's callback only
// records the status and counts down the mapping's preparation actions;
// the mapping is committed when they reach zero. The data device starts
// with stale bytes of deleted volumes, which must never show through.
func Example_thinProvisioning() {
	const blockSize = 64 << 10
	kc, err := kcopyd.NewClient(nil) // one client per pool, flags 0
	if err != nil {
		panic(err)
	}
	defer kc.Close()

	data := device.NewMemFrom(bytes.Repeat([]byte("stale..."), 8*blockSize/8))
	data.WriteAt(bytes.Repeat([]byte("shared.."), blockSize/8), 0) // data block 0: shared with a snapshot
	p := &thinPool{
		kc:        kc,
		data:      data,
		origin:    device.NewMemFrom(bytes.Repeat([]byte("external"), (2*blockSize+blockSize/2)/8)),
		blockSize: blockSize,
		zeroNew:   true,
		prepared:  make(chan *thinMapping, 4),
	}
	mappings := []*thinMapping{
		{virt: 0, data: 3, how: "break sharing of data block 0"},
		{virt: 2, data: 4, how: "external origin, ends inside the block"},
		{virt: 5, data: 5, how: "new block, partial write"},
		{virt: 6, data: 6, how: "new block, whole-block write"},
	}
	p.scheduleCopy(mappings[0], p.data, 0, blockSize)
	p.scheduleCopy(mappings[1], p.origin, 2, p.origin.Size()-p.block(2))
	p.scheduleZero(mappings[2], nil)
	p.scheduleZero(mappings[3], bytes.Repeat([]byte("written!"), blockSize/8))

	var ready []*thinMapping
	for range mappings {
		ready = append(ready, <-p.prepared)
	}
	slices.SortFunc(ready, func(a, b *thinMapping) int { return int(a.virt - b.virt) })
	for _, m := range ready {
		head, tail := make([]byte, 8), make([]byte, 8)
		data.ReadAt(head, p.block(m.data))
		data.ReadAt(tail, p.block(m.data+1)-8)
		fmt.Printf("virtual block %d -> data block %d (%s): failed=%v, starts %q, ends %q\n",
			m.virt, m.data, m.how, m.failed.Load(), head, tail)
	}
	// Output:
	// virtual block 0 -> data block 3 (break sharing of data block 0): failed=false, starts "shared..", ends "shared.."
	// virtual block 2 -> data block 4 (external origin, ends inside the block): failed=false, starts "external", ends "\x00\x00\x00\x00\x00\x00\x00\x00"
	// virtual block 5 -> data block 5 (new block, partial write): failed=false, starts "\x00\x00\x00\x00\x00\x00\x00\x00", ends "\x00\x00\x00\x00\x00\x00\x00\x00"
	// virtual block 6 -> data block 6 (new block, whole-block write): failed=false, starts "written!", ends "written!"
}
