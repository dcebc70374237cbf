package task

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/zoned"
	"github.com/kcopyd/kcopyd/location"
)

// TestSequentialForZoned: a run onto a host-managed zoned destination is
// switched to WriteSeq (one job at a time, in order) and writes every
// hole, with a note saying so; IgnoreErrors is refused before anything is
// written; other destinations are left alone.
func TestSequentialForZoned(t *testing.T) {
	z, err := zoned.New(device.NewMem(8<<20), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	plain := &location.Location{Spec: "plain.img", Dev: device.NewMem(8 << 20)}
	zd := &location.Location{Spec: "/dev/zoned0", Dev: z}
	var notes []string
	newRun := func(o *Options, dests ...*location.Location) *run {
		o.Dests = dests
		o.Events.Note = func(s string) { notes = append(notes, s) }
		o = o.clone()
		return &run{o: o, zeroFrom: make([]int64, len(dests))}
	}

	r := newRun(&Options{MaxJobs: 4}, plain)
	if err := r.sequentialFor(); err != nil || r.o.WriteSeq || len(notes) != 0 {
		t.Fatalf("plain destination: err %v, WriteSeq %v, notes %q; want no change", err, r.o.WriteSeq, notes)
	}
	r = newRun(&Options{MaxJobs: 4, Names: Names{WriteSeq: "--write-seq"}}, plain, zd)
	if err := r.sequentialFor(); err != nil {
		t.Fatal(err)
	}
	if !r.o.WriteSeq || len(notes) != 1 || notes[0] != "/dev/zoned0 is a host-managed zoned device: writing in ascending order, one region at a time (--write-seq)" {
		t.Fatalf("zoned destination: WriteSeq %v, notes %q", r.o.WriteSeq, notes)
	}
	if r.zeroFrom[1] != math.MaxInt64 || r.zeroFrom[0] != 0 {
		t.Fatalf("zeroFrom = %v; want holes written on the zoned one only", r.zeroFrom)
	}
	r = newRun(&Options{MaxJobs: 4, IgnoreErrors: true, Names: Names{IgnoreErrors: "--ignore-errors"}}, zd)
	err = r.sequentialFor()
	if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), "--ignore-errors cannot be used") {
		t.Fatalf("IgnoreErrors onto a zoned device = %v; want an ErrOptions error", err)
	}
}

// TestMergeRanges: failed ranges are reported sorted, merged and without
// empty ones.
func TestMergeRanges(t *testing.T) {
	in := []kcopyd.Range{{Off: 8192, Len: 4096}, {Off: 0, Len: 4096}, {Off: 4096, Len: 100}, {Off: 100, Len: 0}, {Off: 10000, Len: 10}}
	got := mergeRanges(in)
	want := []kcopyd.Range{{Off: 0, Len: 4196}, {Off: 8192, Len: 4096}}
	if !slices.Equal(got, want) {
		t.Fatalf("mergeRanges(%v) = %v; want %v", in, got, want)
	}
}
