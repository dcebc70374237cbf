package kcopyd_test

import (
	"bytes"
	"context"
	"fmt"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
)

// exception maps a chunk of the origin to the COW chunk holding the
// snapshot's data for it, in the order the persistent store wrote them.
type exception struct{ oldChunk, newChunk int64 }

// snapshotMerge is dm-snap's snapshot-merge target: it copies exceptions
// back to the origin, a run of consecutive chunks at a time, from the end
// of the store. Its state is changed only by the merge callbacks, which
// run one at a time.
type snapshotMerge struct {
	kc             *kcopyd.Client
	origin, cow    device.Device
	chunkSize      int64
	store          []exception
	merging        int // chunks of the current step
	log            []string
	done           chan struct{}
	originFlushErr error
}

// prepareMerge is the persistent store's prepare_merge: the last
// exception and how many before it are consecutive on both devices.
func (m *snapshotMerge) prepareMerge() (first, cowFirst int64, n int) {
	last := m.store[len(m.store)-1]
	n = 1
	for i := len(m.store) - 2; i >= 0; i-- {
		e := m.store[i]
		if e.oldChunk != last.oldChunk-int64(n) || e.newChunk != last.newChunk-int64(n) {
			break
		}
		n++
	}
	return last.oldChunk + 1 - int64(n), last.newChunk + 1 - int64(n), n
}

// nextChunks is dm-snap's snapshot_merge_next_chunks: one job copies the
// whole run from the COW device to the origin, however long it is.
func (m *snapshotMerge) nextChunks() {
	if len(m.store) == 0 {
		m.log = append(m.log, "merge complete")
		close(m.done)
		return
	}
	first, cowFirst, n := m.prepareMerge()
	m.merging = n
	length := min(int64(n)*m.chunkSize, m.origin.Size()-first*m.chunkSize)
	m.log = append(m.log, fmt.Sprintf("merge COW chunks %d-%d to origin chunks %d-%d: one job of %d bytes",
		cowFirst, cowFirst+int64(n)-1, first, first+int64(n)-1, length))
	_, err := m.kc.Copy(context.Background(),
		kcopyd.Region{Dev: m.cow, Off: cowFirst * m.chunkSize, Len: length},
		[]kcopyd.Region{{Dev: m.origin, Off: first * m.chunkSize, Len: length}}, 0, m.mergeCallback)
	if err != nil {
		panic(err)
	}
}

// mergeCallback is dm-snap's merge_callback: on success it makes the
// origin durable, commits the merge (drops the exceptions from the store)
// and starts the next step from the callback itself.
func (m *snapshotMerge) mergeCallback(readErr bool, writeErr uint64, err error) {
	if err != nil {
		m.log = append(m.log, fmt.Sprintf("merge stopped: read_err=%v write_err=%#b", readErr, writeErr))
		close(m.done)
		return
	}
	if err := m.origin.(device.Flusher).Flush(); err != nil {
		m.originFlushErr = err
	}
	m.store = m.store[:len(m.store)-m.merging] // commit_merge
	m.nextChunks()
}

// Example_snapshotMerge models dm-snap's merge of a snapshot back into its
// origin (drivers/md/dm-snap.c: snapshot_merge_next_chunks,
// merge_callback). The store hands out its exceptions from the last one
// back; a run of chunks consecutive on both the COW device and the origin
// is copied by one job, which kcopyd splits into sub-job chunks (here one
// per 16 KiB chunk). The callback commits the step and starts the next
// one synchronously; a callback may submit jobs, and may take long,
// stalling only this client.
func Example_snapshotMerge() {
	const chunk = 16 << 10
	kc, err := kcopyd.NewClient(&kcopyd.Options{SubJobSize: chunk})
	if err != nil {
		panic(err)
	}
	defer kc.Close()

	writes := &faultdev.Counter{}
	originMem := device.NewMemFrom(bytes.Repeat([]byte("origin.."), 12*chunk/8))
	cow := device.NewMemFrom(bytes.Repeat([]byte("snapshot"), 5*chunk/8))
	m := &snapshotMerge{
		kc:        kc,
		origin:    faultdev.Wrap(originMem, faultdev.Writes(writes)),
		cow:       cow,
		chunkSize: chunk,
		// Origin chunks 3, 4, 5 and 9, 10 were changed in the snapshot.
		store: []exception{{3, 0}, {4, 1}, {5, 2}, {9, 3}, {10, 4}},
		done:  make(chan struct{}),
	}
	m.nextChunks()
	<-m.done
	for _, line := range m.log {
		fmt.Println(line)
	}
	fmt.Println("writes to the origin:", writes.Count(), "flush error:", m.originFlushErr)
	for _, c := range []int64{2, 3, 5, 6, 10} {
		b := make([]byte, 8)
		originMem.ReadAt(b, c*chunk)
		fmt.Printf("origin chunk %d: %s\n", c, b)
	}
	// Output:
	// merge COW chunks 3-4 to origin chunks 9-10: one job of 32768 bytes
	// merge COW chunks 0-2 to origin chunks 3-5: one job of 49152 bytes
	// merge complete
	// writes to the origin: 5 flush error: <nil>
	// origin chunk 2: origin..
	// origin chunk 3: snapshot
	// origin chunk 5: snapshot
	// origin chunk 6: origin..
	// origin chunk 10: snapshot
}
