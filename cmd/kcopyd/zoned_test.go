package main

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/zoned"
)

// TestSequentialForZoned checks finding 6 of the engine-order issue: a run
// onto a host-managed zoned destination is switched to --write-seq (one
// job at a time, in order) and writes every hole, with a note saying so;
// --ignore-errors is refused before anything is written; other
// destinations are left alone.
func TestSequentialForZoned(t *testing.T) {
	z, err := zoned.New(device.NewMem(8<<20), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	plain := &dest{loc: &location{Spec: "plain.img", Dev: device.NewMem(8 << 20)}, zeroFrom: 0}
	zd := &dest{loc: &location{Spec: "/dev/zoned0", Dev: z}, zeroFrom: 0}

	o := &options{jobs: 4}
	var msg bytes.Buffer
	if err := o.sequentialFor([]*dest{plain}, &msg); err != nil || o.writeSeq || msg.Len() != 0 {
		t.Fatalf("plain destination: err %v, writeSeq %v, note %q; want no change", err, o.writeSeq, msg.String())
	}
	if err := o.sequentialFor([]*dest{plain, zd}, &msg); err != nil {
		t.Fatal(err)
	}
	if !o.writeSeq || o.inFlight() != 1 || !strings.Contains(msg.String(), "/dev/zoned0 is a host-managed zoned device") {
		t.Fatalf("zoned destination: writeSeq %v, in flight %d, note %q", o.writeSeq, o.inFlight(), msg.String())
	}
	if zd.zeroFrom != math.MaxInt64 || plain.zeroFrom != 0 {
		t.Fatalf("zeroFrom: zoned %d, plain %d; want holes written on the zoned one only", zd.zeroFrom, plain.zeroFrom)
	}
	o = &options{jobs: 4, ignoreErrors: true}
	if err := o.sequentialFor([]*dest{zd}, &msg); err == nil || !strings.Contains(err.Error(), "--ignore-errors cannot be used") {
		t.Fatalf("--ignore-errors onto a zoned device = %v; want a usage error", err)
	}
}
