package batch_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/batch"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
	"github.com/kcopyd/kcopyd/internal/testutil"
	"github.com/kcopyd/kcopyd/plan"
)

const (
	K     = 1 << 10
	chunk = 64 * K
)

func newClient(t *testing.T) *kcopyd.Client {
	t.Helper()
	testutil.CheckLeaks(t)
	c, err := kcopyd.NewClient(&kcopyd.Options{SubJobSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func patterned(t *testing.T, size int64) *device.Mem {
	t.Helper()
	m := device.NewMem(size)
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7 + i>>12 + 1)
	}
	if _, err := m.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return m
}

// regions4 are four adjacent regions of 256 KiB (source 0 to 1 MiB to
// destination 1 MiB on), then one apart.
var regions4 = []plan.Region{
	{Src: 0, Dest: 1 << 20, Len: 256 * K},
	{Src: 256 * K, Dest: 1<<20 + 256*K, Len: 256 * K},
	{Src: 512 * K, Dest: 1<<20 + 512*K, Len: 256 * K},
	{Src: 768 * K, Dest: 1<<20 + 768*K, Len: 256 * K},
	{Src: 2 << 20, Dest: 0, Len: 128 * K},
}

// smallRegions returns n contiguous regions of 64 KiB.
func smallRegions(n int) []plan.Region {
	var out []plan.Region
	for i := range int64(n) {
		out = append(out, plan.Region{Src: i * 64 * K, Dest: i * 64 * K, Len: 64 * K})
	}
	return out
}

func run(t *testing.T, opts *batch.Options) (*batch.Result, []*batch.JobResult) {
	t.Helper()
	var jobs []*batch.JobResult
	opts.JobDone = func(j *batch.JobResult) { jobs = append(jobs, j) }
	b := batch.New(newClient(t), opts)
	b.Run(context.Background())
	return b.Result(), jobs
}

func checkCopied(t *testing.T, src device.Device, dst *device.Mem, rg plan.Region, n int64) {
	t.Helper()
	want := make([]byte, n)
	src.ReadAt(want, rg.Src)
	got := dst.Bytes()[rg.Dest : rg.Dest+n]
	if !bytes.Equal(got, want) {
		t.Errorf("destination [%d, +%d) does not hold the source [%d, +%d)", rg.Dest, n, rg.Src, n)
	}
}

// TestCoalesce checks that adjacent regions (source and every destination
// contiguous) become one engine job, and the region apart another.
func TestCoalesce(t *testing.T) {
	src := patterned(t, 4<<20)
	d0, d1 := device.NewMem(4<<20), device.NewMem(4<<20)
	res, jobs := run(t, &batch.Options{Src: src, Dests: []batch.Dest{{Dev: d0}, {Dev: d1}}, Regions: regions4, MaxJobs: 2})
	slices.SortFunc(jobs, func(a, b *batch.JobResult) int { return a.Region - b.Region }) // in completion order
	if len(jobs) != 2 || jobs[0].Len != 1<<20 || jobs[0].Region != 0 || jobs[1].Region != 4 || jobs[1].Len != 128*K {
		t.Fatalf("jobs = %+v; want one of the four adjacent regions (1 MiB) and one of the fifth", jobs)
	}
	if res.Completed != 1<<20+128*K || res.ReadErr != nil || res.InternalErr != nil {
		t.Fatalf("result %+v; want every byte complete", res)
	}
	for _, d := range []*device.Mem{d0, d1} {
		for _, rg := range regions4 {
			checkCopied(t, src, d, rg, rg.Len)
		}
	}
	if want := []int64{256 * K, 256 * K, 256 * K, 256 * K, 128 * K}; !slices.Equal(res.Prefixes, want) {
		t.Errorf("Prefixes = %v; want %v", res.Prefixes, want)
	}
}

// TestCoalesceBounds checks what is joined and what is not: regions past
// MaxJobLen are not, a region not ending at a chunk boundary is, and
// nothing is when MaxJobLen is negative.
func TestCoalesceBounds(t *testing.T) {
	src := patterned(t, 4<<20)
	for _, tt := range []struct {
		name    string
		max     int64
		regions []plan.Region
		want    []int64 // job lengths
	}{
		{"max", 512 * K, regions4[:4], []int64{512 * K, 512 * K}},
		{"off", -1, regions4[:4], []int64{256 * K, 256 * K, 256 * K, 256 * K}},
		{"unaligned end", 0, []plan.Region{{Src: 0, Dest: 0, Len: 100 * K}, {Src: 100 * K, Dest: 100 * K, Len: 64 * K}}, []int64{164 * K}},
		{"many small", 512 * K, smallRegions(64), []int64{512 * K, 512 * K, 512 * K, 512 * K, 512 * K, 512 * K, 512 * K, 512 * K}},
		{"source apart", 0, []plan.Region{{Src: 0, Dest: 0, Len: 64 * K}, {Src: 128 * K, Dest: 64 * K, Len: 64 * K}}, []int64{64 * K, 64 * K}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := device.NewMem(4 << 20)
			res, jobs := run(t, &batch.Options{Src: src, Dests: []batch.Dest{{Dev: d}}, Regions: tt.regions, MaxJobLen: tt.max, MaxJobs: 3})
			slices.SortFunc(jobs, func(a, b *batch.JobResult) int { return a.Region - b.Region })
			for reg, rg := range tt.regions {
				if res.Prefixes[reg] != rg.Len {
					t.Errorf("region %d: %d bytes complete; want %d", reg, res.Prefixes[reg], rg.Len)
				}
			}
			var got []int64
			for _, j := range jobs {
				got = append(got, j.Len)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("job lengths = %v; want %v", got, tt.want)
			}
			for _, rg := range tt.regions {
				checkCopied(t, src, d, rg, rg.Len)
			}
		})
	}
}

// TestCoalesceWithinOneDevice checks that regions of one device, each
// clear of its own destination, are not joined when the joined job would
// read what it writes.
func TestCoalesceWithinOneDevice(t *testing.T) {
	dev := patterned(t, 4<<20)
	want := dev.Bytes()[:1<<20]
	regions := []plan.Region{{Src: 0, Dest: 1 << 20, Len: 1 << 20}, {Src: 1 << 20, Dest: 2 << 20, Len: 1 << 20}}
	res, jobs := run(t, &batch.Options{Src: dev, Dests: []batch.Dest{{Dev: dev}}, Regions: regions})
	if len(jobs) != 2 || res.InternalErr != nil || res.Completed != 2<<20 {
		t.Fatalf("jobs %+v, result %+v; want two jobs, both complete", jobs, res)
	}
	// One after the other: the second region reads what the first wrote.
	got := dev.Bytes()
	if !bytes.Equal(got[1<<20:2<<20], want) || !bytes.Equal(got[2<<20:3<<20], want) {
		t.Error("the regions were not copied one after the other")
	}
}

// TestCoalescedFailure checks that a write failing in the third of four
// coalesced regions is reported per region: the destination is dropped,
// its first two regions are complete, the third up to the failed chunk,
// the fourth not at all, and the other destination completes everything.
func TestCoalescedFailure(t *testing.T) {
	src := patterned(t, 4<<20)
	d0, m1 := device.NewMem(4<<20), device.NewMem(4<<20)
	bad := regions4[2].Dest + chunk // the second chunk of region 2
	d1 := faultdev.Wrap(m1, faultdev.Writes(faultdev.Range(bad, 4096, faultdev.Always(nil))))
	var dropped []int
	opts := &batch.Options{Src: src, Dests: []batch.Dest{{Dev: d0}, {Dev: d1}}, Regions: regions4[:4], Dropped: func(i int) { dropped = append(dropped, i) }}
	res, jobs := run(t, opts)
	if len(jobs) < 2 || jobs[0].Len != 1<<20 || jobs[0].Err == nil || !slices.Equal(jobs[1].Dests, []int{0}) {
		t.Fatalf("jobs = %+v; want one coalesced job that failed, then its continuation on destination 0", jobs)
	}
	if !slices.Equal(dropped, []int{1}) || !res.Dests[1].Dropped || len(res.Dests[1].Errs) != 1 || len(res.Dests[0].Errs) != 0 {
		t.Fatalf("dropped %v, results %+v; want destination 1 dropped with one error", dropped, res.Dests)
	}
	if want := []kcopyd.Range{{Off: bad, Len: chunk}}; !slices.Equal(res.Dests[1].Ranges, want) {
		t.Errorf("failed ranges of destination 1 = %v; want %v", res.Dests[1].Ranges, want)
	}
	full := []int64{256 * K, 256 * K, 256 * K, 256 * K}
	if got := res.Dests[0].Prefixes; !slices.Equal(got, full) {
		t.Errorf("prefixes of destination 0 = %v; want %v", got, full)
	}
	want := []int64{256 * K, 256 * K, chunk, 0}
	if got := res.Dests[1].Prefixes; !slices.Equal(got, want) {
		t.Errorf("prefixes of destination 1 = %v; want %v", got, want)
	}
	if !slices.Equal(res.Prefixes, want) {
		t.Errorf("region prefixes = %v; want %v", res.Prefixes, want)
	}
	if res.Completed != 1<<20 {
		t.Errorf("Completed = %d; want %d (every region on the live destination)", res.Completed, 1<<20)
	}
	for _, rg := range regions4[:4] {
		checkCopied(t, src, d0, rg, rg.Len)
	}
	checkCopied(t, src, m1, regions4[0], regions4[0].Len)
	checkCopied(t, src, m1, regions4[1], regions4[1].Len)
	checkCopied(t, src, m1, regions4[2], chunk)
}

// straddling are four contiguous regions of 40 KiB: joined into one job
// of 160 KiB, whose 64 KiB chunks each touch two or three regions.
var straddling = []plan.Region{
	{Src: 0, Dest: 0, Len: 40 * K},
	{Src: 40 * K, Dest: 40 * K, Len: 40 * K},
	{Src: 80 * K, Dest: 80 * K, Len: 40 * K},
	{Src: 120 * K, Dest: 120 * K, Len: 40 * K},
}

// TestStraddlingChunkFailure checks that a chunk failing across the
// boundary of two joined regions is charged to each by byte: a write
// failing in the second chunk, [64K, 128K), leaves region 1 complete up
// to 64K (24 KiB of it), regions 2 and 3 not at all on that destination,
// and the other destination whole; a read failure of one block under
// IgnoreError cuts only the region holding it.
func TestStraddlingChunkFailure(t *testing.T) {
	src := patterned(t, 1<<20)
	t.Run("write", func(t *testing.T) {
		d0, m1 := device.NewMem(1<<20), device.NewMem(1<<20)
		d1 := faultdev.Wrap(m1, faultdev.Writes(faultdev.Range(70*K, 4096, faultdev.Always(nil))))
		res, jobs := run(t, &batch.Options{Src: src, Dests: []batch.Dest{{Dev: d0}, {Dev: d1}}, Regions: straddling})
		if len(jobs) < 1 || jobs[0].Len != 160*K {
			t.Fatalf("jobs = %+v; want one joined job of 160 KiB first", jobs)
		}
		if want := []kcopyd.Range{{Off: 64 * K, Len: chunk}}; !slices.Equal(res.Dests[1].Ranges, want) {
			t.Errorf("failed ranges of destination 1 = %v; want %v", res.Dests[1].Ranges, want)
		}
		if want := []int64{40 * K, 24 * K, 0, 0}; !slices.Equal(res.Dests[1].Prefixes, want) {
			t.Errorf("prefixes of destination 1 = %v; want %v", res.Dests[1].Prefixes, want)
		}
		if want := []int64{40 * K, 40 * K, 40 * K, 40 * K}; !slices.Equal(res.Dests[0].Prefixes, want) {
			t.Errorf("prefixes of destination 0 = %v; want %v", res.Dests[0].Prefixes, want)
		}
		for _, rg := range straddling {
			checkCopied(t, src, d0, rg, rg.Len)
		}
		checkCopied(t, src, m1, straddling[0], straddling[0].Len)
		checkCopied(t, src, m1, straddling[1], 24*K)
	})
	t.Run("read ignored", func(t *testing.T) {
		s := faultdev.Wrap(src, faultdev.Reads(faultdev.Range(76*K, 1, faultdev.Always(nil))))
		d := device.NewMem(1 << 20)
		res, jobs := run(t, &batch.Options{Src: s, Dests: []batch.Dest{{Dev: d}}, Regions: straddling, Flags: kcopyd.IgnoreError})
		if len(jobs) != 1 || jobs[0].Len != 160*K {
			t.Fatalf("jobs = %+v; want one joined job of 160 KiB", jobs)
		}
		if want := []kcopyd.Range{{Off: 76 * K, Len: 4096}}; !slices.Equal(res.Dests[0].Ranges, want) {
			t.Errorf("failed ranges = %v; want %v", res.Dests[0].Ranges, want)
		}
		if want := []int64{40 * K, 36 * K, 40 * K, 40 * K}; !slices.Equal(res.Dests[0].Prefixes, want) {
			t.Errorf("prefixes = %v; want %v", res.Dests[0].Prefixes, want)
		}
	})
}

// TestByOffsetJoins checks that regions listed out of order, planned by
// offset (plan.Planner.ByOffset), become one job, reported per region.
func TestByOffsetJoins(t *testing.T) {
	src := patterned(t, 1<<20)
	d := device.NewMem(1 << 20)
	regions := []plan.Region{straddling[2], straddling[0], straddling[3], straddling[1]}
	p := &plan.Planner{Kind: plan.Copy, Regions: regions, ZeroFrom: []int64{plan.Unknown}, ByOffset: true}
	res, jobs := run(t, &batch.Options{Src: src, Dests: []batch.Dest{{Dev: d}}, Regions: regions, Plan: p.Run})
	if len(jobs) != 1 || jobs[0].Len != 160*K || jobs[0].Region != 1 {
		t.Fatalf("jobs = %+v; want one job of 160 KiB starting with region 1", jobs)
	}
	if want := []int64{40 * K, 40 * K, 40 * K, 40 * K}; !slices.Equal(res.Prefixes, want) {
		t.Errorf("prefixes = %v; want %v", res.Prefixes, want)
	}
	for _, rg := range regions {
		checkCopied(t, src, d, rg, rg.Len)
	}
}

// TestIgnoreErrorPerRegion checks that, under IgnoreError, an unreadable
// source block in a coalesced job is reported at the destination offsets
// of its own region, and cuts that region's prefix only.
func TestIgnoreErrorPerRegion(t *testing.T) {
	m := patterned(t, 4<<20)
	badSrc := regions4[1].Src + 4096
	src := faultdev.Wrap(m, faultdev.Reads(faultdev.Range(badSrc, 1, faultdev.Always(nil))))
	d := device.NewMem(4 << 20)
	res, jobs := run(t, &batch.Options{Src: src, Dests: []batch.Dest{{Dev: d}}, Regions: regions4[:4], Flags: kcopyd.IgnoreError})
	if len(jobs) != 1 || res.ReadErr == nil || !errors.Is(res.ReadErr, faultdev.ErrInjected) {
		t.Fatalf("jobs %+v, read error %v; want one job with an injected read error", jobs, res.ReadErr)
	}
	wantDest := []kcopyd.Range{{Off: regions4[1].Dest + 4096, Len: 4096}}
	if !slices.Equal(res.Dests[0].Ranges, wantDest) {
		t.Errorf("failed ranges = %v; want %v", res.Dests[0].Ranges, wantDest)
	}
	if want := []int64{256 * K, 4096, 256 * K, 256 * K}; !slices.Equal(res.Dests[0].Prefixes, want) {
		t.Errorf("prefixes = %v; want %v", res.Dests[0].Prefixes, want)
	}
}

// TestCheck checks that Check names the first region the engine refuses.
func TestCheck(t *testing.T) {
	c := newClient(t)
	src, d := device.NewMem(1<<20), device.NewMem(1<<20)
	opts := &batch.Options{Src: src, Dests: []batch.Dest{{Dev: d}}, Regions: []plan.Region{{Src: 0, Dest: 0, Len: 4096}, {Src: 0, Dest: 1<<20 - 4096, Len: 8192}}}
	var re *batch.RegionError
	if err := batch.Check(c, opts); !errors.As(err, &re) || re.Region != 1 || !errors.Is(err, kcopyd.ErrOutOfRange) {
		t.Errorf("Check of a region past the end = %v; want a *RegionError for region 1 wrapping ErrOutOfRange", err)
	}
	opts.Regions = opts.Regions[:1]
	if err := batch.Check(c, opts); err != nil {
		t.Errorf("Check = %v; want nil", err)
	}
}
