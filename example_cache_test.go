package kcopyd_test

import (
	"bytes"
	"context"
	"fmt"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
)

// migration is dm-cache's dm_cache_migration for one piece of the policy's
// background work: promote an origin block into a cache block, or write a
// dirty cache block back to the origin (writeback), or also unmap it
// (demote).
type migration struct {
	op     string // "promote", "writeback" or "demote"
	oblock int64
	cblock int64
	failed bool
	result string
}

// cacheTarget is a dm-cache device: origin, cache device, the mapping and
// dirty bits its metadata keeps, and one kcopyd client (cache->copier).
// The migration worker (here the goroutine running run) owns every field;
// kcopyd callbacks only hand the migration back to it, as copy_complete
// does with queue_continuation.
type cacheTarget struct {
	kc            *kcopyd.Client
	origin, cache device.Device
	blockSize     int64 // bytes; sectors_per_block * 512
	threshold     int64 // migration_threshold, in 512-byte sectors
	originIdle    func() bool

	mapping  map[int64]int64 // cache block to origin block
	dirty    map[int64]bool  // cache blocks newer than the origin
	inFlight int             // nr_io_migrations
	maxSeen  int
	wq       chan *migration // the continuation work queue
}

// spareBandwidth is dm-cache's spare_migration_bandwidth: migrate only
// while the origin has been idle and one more migration stays within the
// threshold.
func (c *cacheTarget) spareBandwidth() bool {
	volume := int64(c.inFlight+1) * (c.blockSize / kcopyd.SectorSize)
	return c.originIdle() && volume <= c.threshold
}

// start is dm-cache's mg_start and mg_copy: a promotion copies origin to
// cache, a writeback or demotion copies cache to origin, flags 0. A clean
// block is demoted without a copy.
func (c *cacheTarget) start(mg *migration) {
	if mg.op != "promote" && !c.dirty[mg.cblock] {
		c.wq <- mg // nothing to copy: straight to the metadata update
		return
	}
	o := kcopyd.Region{Dev: c.origin, Off: mg.oblock * c.blockSize, Len: c.blockSize}
	cb := kcopyd.Region{Dev: c.cache, Off: mg.cblock * c.blockSize, Len: c.blockSize}
	from, to := o, cb
	if mg.op != "promote" {
		from, to = cb, o
	}
	c.inFlight++
	c.maxSeen = max(c.maxSeen, c.inFlight)
	_, err := c.kc.Copy(context.Background(), from, []kcopyd.Region{to}, 0,
		func(readErr bool, writeErr uint64, err error) { // copy_complete
			mg.failed = err != nil
			c.wq <- mg // queue_continuation
		})
	if err != nil {
		panic(err)
	}
}

// complete is dm-cache's continuation after the copy: update the metadata
// (mg_update_metadata) and end the migration (mg_complete).
func (c *cacheTarget) complete(mg *migration, copied bool) {
	if copied {
		c.inFlight--
	}
	switch {
	case mg.failed:
		mg.result = "failed, metadata unchanged"
	case mg.op == "promote":
		c.mapping[mg.cblock], c.dirty[mg.cblock] = mg.oblock, false
		mg.result = fmt.Sprintf("origin block %d now cached in cache block %d", mg.oblock, mg.cblock)
	case mg.op == "writeback":
		c.dirty[mg.cblock] = false
		mg.result = fmt.Sprintf("cache block %d written back to origin block %d, now clean", mg.cblock, mg.oblock)
	case mg.op == "demote":
		how := "clean, no copy"
		if copied {
			how = "dirty, copied to origin first"
		}
		delete(c.mapping, mg.cblock)
		delete(c.dirty, mg.cblock)
		mg.result = fmt.Sprintf("cache block %d demoted to origin block %d (%s)", mg.cblock, mg.oblock, how)
	}
}

// run is the migration worker: it starts the policy's work while there is
// spare bandwidth and completes migrations as their continuations arrive.
func (c *cacheTarget) run(work []*migration) {
	copied := map[*migration]bool{}
	next, done := 0, 0
	for done < len(work) {
		for next < len(work) && c.spareBandwidth() {
			mg := work[next]
			copied[mg] = mg.op == "promote" || c.dirty[mg.cblock]
			c.start(mg)
			next++
		}
		mg := <-c.wq
		c.complete(mg, copied[mg])
		done++
	}
}

// Example_cachePromoteDemote models dm-cache's migrations
// (drivers/md/dm-cache-target.c: mg_start, mg_copy, copy, copy_complete,
// spare_migration_bandwidth). A promotion copies a block from the origin
// to the cache device, a writeback or demotion of a dirty block copies it
// back from the cache to the origin: one job of one block each, flags 0.
// The callback does no work itself; it queues the migration's
// continuation, which updates the metadata on the target's own worker.
// Migrations start only while the origin is idle (here it always is) and
// while the blocks in flight, plus the next one, stay within
// migration_threshold sectors: with 32 KiB blocks and a threshold of 128
// sectors, at most two run at once.
func Example_cachePromoteDemote() {
	const blockSize = 32 << 10
	kc, err := kcopyd.NewClient(&kcopyd.Options{Throttle: kcopyd.NewThrottle(100)}) // cache_copy_throttle
	if err != nil {
		panic(err)
	}
	defer kc.Close()

	origin := device.NewMem(16 * blockSize)
	for b := int64(0); b < 16; b++ {
		origin.WriteAt(bytes.Repeat([]byte(fmt.Sprintf("origin%02d", b)), blockSize/8), b*blockSize)
	}
	cache := device.NewMem(8 * blockSize)
	cache.WriteAt(bytes.Repeat([]byte("dirty 05"), blockSize/8), 2*blockSize) // newer than origin block 5
	cache.WriteAt(bytes.Repeat([]byte("dirty 09"), blockSize/8), 3*blockSize) // newer than origin block 9
	c := &cacheTarget{
		kc: kc, origin: origin, cache: cache, blockSize: blockSize,
		threshold:  128,
		originIdle: func() bool { return true },
		mapping:    map[int64]int64{2: 5, 3: 9, 4: 1},
		dirty:      map[int64]bool{2: true, 3: true},
		wq:         make(chan *migration, 8),
	}
	work := []*migration{
		{op: "promote", oblock: 3, cblock: 0},
		{op: "promote", oblock: 7, cblock: 1},
		{op: "writeback", oblock: 5, cblock: 2},
		{op: "demote", oblock: 9, cblock: 3},
		{op: "demote", oblock: 1, cblock: 4},
	}
	c.run(work)
	for _, mg := range work {
		fmt.Println(mg.op+":", mg.result)
	}
	fmt.Println("most migrations in flight:", c.maxSeen)
	for _, b := range []struct {
		name  string
		dev   device.Device
		block int64
	}{{"cache", cache, 0}, {"cache", cache, 1}, {"origin", origin, 5}, {"origin", origin, 9}} {
		p := make([]byte, 8)
		b.dev.ReadAt(p, b.block*blockSize)
		fmt.Printf("%s block %d: %s\n", b.name, b.block, p)
	}
	// Output:
	// promote: origin block 3 now cached in cache block 0
	// promote: origin block 7 now cached in cache block 1
	// writeback: cache block 2 written back to origin block 5, now clean
	// demote: cache block 3 demoted to origin block 9 (dirty, copied to origin first)
	// demote: cache block 4 demoted to origin block 1 (clean, no copy)
	// most migrations in flight: 2
	// cache block 0: origin03
	// cache block 1: origin07
	// origin block 5: dirty 05
	// origin block 9: dirty 09
}
