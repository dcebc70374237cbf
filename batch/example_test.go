package batch_test

import (
	"context"
	"fmt"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/batch"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
	"github.com/kcopyd/kcopyd/plan"
)

// Three regions copied to two mirrors, one of which fails a write in the
// second region: it is dropped, and the other mirror completes. The first
// two regions are contiguous, and run as one engine job; its continuation
// after the failed chunk runs on the good mirror alone.
func ExampleBatch() {
	const K = 1 << 10
	client, _ := kcopyd.NewClient(&kcopyd.Options{SubJobSize: 64 * K})
	defer client.Close()
	src := device.NewMem(1 << 20)
	src.WriteAt(make([]byte, 1<<20), 0)
	good := device.NewMem(1 << 20)
	bad := faultdev.Wrap(device.NewMem(1<<20), faultdev.Writes(faultdev.Range(200*K, 1, faultdev.Always(nil))))

	b := batch.New(client, &batch.Options{
		Src:   src,
		Dests: []batch.Dest{{Dev: good, Name: "good"}, {Dev: bad, Name: "bad"}},
		Regions: []plan.Region{
			{Src: 0, Dest: 0, Len: 128 * K},
			{Src: 128 * K, Dest: 128 * K, Len: 128 * K},
			{Src: 512 * K, Dest: 512 * K, Len: 256 * K},
		},
		JobDone: func(j *batch.JobResult) {
			fmt.Printf("job: %d bytes at %d to %v, failed: %v\n", j.Len, j.Dest, j.Dests, j.Err != nil)
		},
	})
	b.Run(context.Background())
	res := b.Result()
	for i, name := range []string{"good", "bad"} {
		d := res.Dests[i]
		fmt.Printf("%s: dropped %v, failed ranges %v, complete per region %v\n", name, d.Dropped, d.Ranges, d.Prefixes)
	}
	// Output:
	// job: 262144 bytes at 0 to [0 1], failed: true
	// job: 65536 bytes at 196608 to [0], failed: false
	// job: 262144 bytes at 524288 to [0], failed: false
	// good: dropped false, failed ranges [], complete per region [131072 131072 262144]
	// bad: dropped true, failed ranges [{196608 65536}], complete per region [131072 65536 0]
}

// A copy checked with engine Verify jobs: the second destination had a
// byte changed after the copy.
func ExampleVerify() {
	client, _ := kcopyd.NewClient(&kcopyd.Options{SubJobSize: batch.VerifySubJobSize(64 << 10)})
	defer client.Close()
	src := device.NewMem(1 << 20)
	src.WriteAt([]byte("the data"), 0)
	a, b := device.NewMem(1<<20), device.NewMem(1<<20)
	a.WriteAt([]byte("the data"), 0)
	b.WriteAt([]byte("the date"), 0)

	res := batch.Verify(context.Background(), client, &batch.VerifyOptions{
		Src:       src,
		Dests:     []device.Device{a, b},
		Regions:   []plan.Region{{Src: 0, Dest: 0, Len: 1 << 20}},
		ChunkSize: 64 << 10,
	})
	for i, d := range res.Dests {
		fmt.Printf("destination %d: first difference %d, %d chunk(s) differ\n", i, d.FirstDiff, d.Chunks)
	}
	fmt.Println("compared", res.Compared, "bytes")
	// Output:
	// destination 0: first difference -1, 0 chunk(s) differ
	// destination 1: first difference 7, 1 chunk(s) differ
	// compared 1048576 bytes
}
