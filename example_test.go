package kcopyd_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
)

// Copy one region to two destinations and wait for the job.
func ExampleClient_Copy() {
	c, err := kcopyd.NewClient(nil)
	if err != nil {
		panic(err)
	}
	defer c.Close()

	src := device.NewMemFrom([]byte("hello, kcopyd"))
	a, b := device.NewMem(13), device.NewMem(20)
	job, err := c.Copy(context.Background(),
		kcopyd.Region{Dev: src, Off: 7, Len: 6},
		[]kcopyd.Region{{Dev: a, Off: 0, Len: 6}, {Dev: b, Off: 10, Len: 6}},
		0, nil)
	if err != nil {
		panic(err)
	}
	if err := job.Wait(context.Background()); err != nil {
		panic(err)
	}
	buf := make([]byte, 6)
	a.ReadAt(buf, 0)
	fmt.Printf("%s\n", buf)
	b.ReadAt(buf, 10)
	fmt.Printf("%s\n", buf)
	// Output:
	// kcopyd
	// kcopyd
}

// The callback gets the kernel's read_err and write_err bits; the error
// value carries the details.
func ExampleCallback() {
	c, _ := kcopyd.NewClient(nil)
	defer c.Close()

	src := device.NewMem(1 << 20)
	good := device.NewMem(1 << 20)
	bad := faultdev.Wrap(device.NewMem(1<<20), faultdev.Writes(faultdev.Always(errors.New("medium error"))))
	done := make(chan struct{})
	_, err := c.Copy(context.Background(), kcopyd.Region{Dev: src, Len: 1 << 20},
		[]kcopyd.Region{{Dev: good, Len: 1 << 20}, {Dev: bad, Len: 1 << 20}}, 0,
		func(readErr bool, writeErr uint64, err error) {
			defer close(done)
			fmt.Printf("read_err=%v write_err=%#b\n", readErr, writeErr)
			var je *kcopyd.JobError
			if errors.As(err, &je) {
				fmt.Println("destination 1 failed at", je.WriteRanges[1][0].Off)
			}
		})
	if err != nil {
		panic(err)
	}
	<-done
	// Output:
	// read_err=false write_err=0b10
	// destination 1 failed at 0
}

// A throttle shared by two clients limits them as a group.
func ExampleThrottle() {
	group := kcopyd.NewThrottle(50) // at most half the time with I/O in flight
	group.SetRate(64 << 20)         // and 64 MiB/s
	c1, _ := kcopyd.NewClient(&kcopyd.Options{Throttle: group})
	c2, _ := kcopyd.NewClient(&kcopyd.Options{Throttle: group})
	defer c1.Close()
	defer c2.Close()
	group.SetPercent(100) // lifted while running
	fmt.Println(group.Percent(), group.Rate())
	// Output: 100 67108864
}

// Zero two regions with one job.
func ExampleClient_Zero() {
	c, _ := kcopyd.NewClient(nil)
	defer c.Close()
	d := device.NewMemFrom([]byte("xxxxxxxx"))
	job, _ := c.Zero(context.Background(), []kcopyd.Region{{Dev: d, Off: 0, Len: 2}, {Dev: d, Off: 6, Len: 2}}, 0, nil)
	job.Wait(context.Background())
	buf := make([]byte, 8)
	d.ReadAt(buf, 0)
	fmt.Printf("%q\n", buf)
	// Output: "\x00\x00xxxx\x00\x00"
}
