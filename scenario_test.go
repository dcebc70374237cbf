package kcopyd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/faultdev"
	"github.com/kcopyd/kcopyd/device/zoned"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

// TestScenarios runs the job scenarios of testdata/jobs, one file per
// topic, in the style of pebble's datadriven tests: each command sets up
// devices or faults, runs a job, or inspects the result, and its output is
// compared with the block under "----". go test -run TestScenarios
// -rewrite regenerates the expected output (then review the diff).
//
// Commands (sizes take K, M, G suffixes and sums such as 400K+100):
//
//	dev name=N size=S [pattern=SEED | fill=BYTE] [zoned=ZONE [conventional=K]] [align=A] [nozero]
//	    a memory device; zoned: an emulated host-managed device; align:
//	    O_DIRECT alignment; nozero: without native write-zeroes.
//	write dev=N off=O len=L fill=BYTE
//	    change a device's bytes directly (no faults, no log).
//	fault dev=N op=read|write off=O len=L [once] [cancel] | fault dev=N clear
//	    fail matching operations (writes include write-zeroes); once: only
//	    the first; cancel: let it run but cancel the running job's context.
//	copy src=N[:OFF[:LEN]] dests=(N[:OFF[:LEN]], ...) [flags=(IgnoreError, ...)|flags=0xN]
//	     [sub=S] [maxmem=S] [ioworkers=K] [progress] [stats]
//	zero dests=(N[:OFF[:LEN]], ...) [len=L] [same options]
//	verify src=... dests=(...) [same options]; verifyzero dests=(...) [len=L] [same options]
//	    run a job on a new client and print its outcome: ok, or the
//	    callback's bits, JobError.Completed, errors, ranges and FirstDiff;
//	    or the refusal, after checking that nothing was written. A verify
//	    job must write nothing either.
//	cmp A[:OFF] B[:OFF] [len=L]
//	    equal, or the runs of B that are equal to A or differ (and how).
//	layout dev=N     runs of 512-byte blocks: zero, fill 0xNN, pattern SEED, data.
//	log dev=N [count]  the operations the device saw since the last log.
//	extents dev=N off=O len=L
//	zones dev=N
func TestScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata/jobs", func(t *testing.T, path string) {
		s := &scenario{t: t, devs: map[string]*scDev{}}
		datadriven.RunTest(t, path, s.run)
	})
}

// scenario is the state of one script: its devices, by name.
type scenario struct {
	t     *testing.T
	devs  map[string]*scDev
	seeds []uint64 // pattern seeds in use, for layout

	mu     sync.Mutex
	cancel context.CancelFunc // the running job's, for fault ... cancel
}

// scDev is a script's device: the device jobs see is a faultdev wrapper
// that applies the script's fault rules and logs every operation.
type scDev struct {
	name  string
	mem   *device.Mem
	zoned *zoned.Device
	dev   device.Device // what jobs see

	mu    sync.Mutex
	rules []*faultRule
	log   []faultdev.Op
}

type faultRule struct {
	read       bool
	off, len   int64
	once, done bool
	cancel     bool
}

func (s *scenario) run(t *testing.T, d *datadriven.TestData) string {
	s.t = t
	switch d.Cmd {
	case "dev":
		return s.cmdDev(d)
	case "write":
		dv := s.dev(d, "dev")
		b := parseByte(t, argVal(t, d, "fill"))
		off, n := sizeArg(t, d, "off"), sizeArg(t, d, "len")
		if _, err := dv.mem.WriteAt(bytes.Repeat([]byte{b}, int(n)), off); err != nil {
			t.Fatal(err)
		}
		return ""
	case "fault":
		return s.cmdFault(d)
	case "copy", "zero", "verify", "verifyzero":
		return s.cmdJob(d)
	case "cmp":
		return s.cmdCmp(d)
	case "layout":
		return s.layout(s.dev(d, "dev"))
	case "log":
		return s.cmdLog(d)
	case "extents":
		dv := s.dev(d, "dev")
		ext, err := dv.mem.Extents(sizeArg(t, d, "off"), sizeArg(t, d, "len"))
		if err != nil {
			return "error: " + err.Error()
		}
		var b strings.Builder
		for _, e := range ext {
			fmt.Fprintf(&b, "[%d,+%d) hole=%v zero=%v\n", e.Off, e.Len, e.Hole, e.Zero)
		}
		return b.String()
	case "zones":
		dv := s.dev(d, "dev")
		if dv.zoned == nil {
			t.Fatalf("%s: %s is not zoned", d.Pos, dv.name)
		}
		var b strings.Builder
		for i, z := range dv.zoned.Zones() {
			fmt.Fprintf(&b, "zone %d: [%d,+%d) wp=%d %v\n", i, z.Start, z.Len, z.WP-z.Start, z.Cond)
		}
		return b.String()
	}
	t.Fatalf("%s: unknown command %q", d.Pos, d.Cmd)
	return ""
}

func (s *scenario) cmdDev(d *datadriven.TestData) string {
	t := s.t
	name := argVal(t, d, "name")
	size := sizeArg(t, d, "size")
	dv := &scDev{name: name, mem: device.NewMem(size)}
	switch {
	case d.HasArg("pattern"):
		seed, err := strconv.ParseUint(argVal(t, d, "pattern"), 10, 64)
		if err != nil {
			t.Fatalf("%s: pattern: %v", d.Pos, err)
		}
		dv.mem.WriteAt(testutil.Pattern(seed, 0, int(size)), 0)
		if !slices.Contains(s.seeds, seed) {
			s.seeds = append(s.seeds, seed)
		}
	case d.HasArg("fill"):
		dv.mem.WriteAt(bytes.Repeat([]byte{parseByte(t, argVal(t, d, "fill"))}, int(size)), 0)
	}
	var inner device.Device = dv.mem
	if d.HasArg("zoned") {
		var opts []zoned.Option
		if d.HasArg("conventional") {
			n, _ := strconv.Atoi(argVal(t, d, "conventional"))
			opts = append(opts, zoned.Conventional(n))
		}
		z, err := zoned.New(dv.mem, sizeArg(t, d, "zoned"), opts...)
		if err != nil {
			t.Fatalf("%s: %v", d.Pos, err)
		}
		dv.zoned, inner = z, z
	}
	if d.HasArg("align") {
		inner = &alignedDev{Device: inner, align: sizeArg(t, d, "align")}
	}
	if d.HasArg("nozero") {
		inner = struct{ device.Device }{inner} // hides WriteZeroes and the rest
	}
	dv.dev = faultdev.Wrap(inner, faultdev.InjectorFunc(func(op faultdev.Op) faultdev.Fault { return s.inject(dv, op) }))
	s.devs[name] = dv
	return ""
}

// inject logs op and applies the first rule that matches it.
func (s *scenario) inject(dv *scDev, op faultdev.Op) faultdev.Fault {
	dv.mu.Lock()
	defer dv.mu.Unlock()
	dv.log = append(dv.log, op)
	for _, r := range dv.rules {
		if r.done || r.read != op.IsRead() || (!r.read && !op.IsWrite()) ||
			op.Off >= r.off+r.len || r.off >= op.Off+op.Len {
			continue
		}
		r.done = r.once
		if r.cancel {
			s.mu.Lock()
			s.cancel()
			s.mu.Unlock()
			return faultdev.Fault{}
		}
		return faultdev.Fault{Err: errors.New("EIO")}
	}
	return faultdev.Fault{}
}

func (s *scenario) cmdFault(d *datadriven.TestData) string {
	t := s.t
	dv := s.dev(d, "dev")
	dv.mu.Lock()
	defer dv.mu.Unlock()
	if d.HasArg("clear") {
		dv.rules = nil
		return ""
	}
	r := &faultRule{off: sizeArg(t, d, "off"), len: sizeArg(t, d, "len"), once: d.HasArg("once"), cancel: d.HasArg("cancel")}
	switch op := argVal(t, d, "op"); op {
	case "read":
		r.read = true
	case "write":
	default:
		t.Fatalf("%s: fault op=%q: want read or write", d.Pos, op)
	}
	dv.rules = append(dv.rules, r)
	return ""
}

// refusals name the errors a refused job may return.
var refusals = []struct {
	name string
	err  error
}{
	{"ErrNoDests", kcopyd.ErrNoDests}, {"ErrTooManyDests", kcopyd.ErrTooManyDests},
	{"ErrLengthMismatch", kcopyd.ErrLengthMismatch}, {"ErrOutOfRange", kcopyd.ErrOutOfRange},
	{"ErrOverlap", kcopyd.ErrOverlap}, {"ErrAlignment", kcopyd.ErrAlignment},
	{"ErrNilDevice", kcopyd.ErrNilDevice}, {"ErrBadFlags", kcopyd.ErrBadFlags},
	{"ErrBadLimits", kcopyd.ErrBadLimits}, {"ErrClosed", kcopyd.ErrClosed},
}

// jobSpec is a parsed copy or zero command.
type jobSpec struct {
	src   *kcopyd.Region
	dests []kcopyd.Region
	flags kcopyd.Flags
	opts  kcopyd.Options
}

func (s *scenario) parseJob(d *datadriven.TestData) jobSpec {
	t := s.t
	var j jobSpec
	length := int64(-1)
	if d.HasArg("len") {
		length = sizeArg(t, d, "len")
	}
	if d.Cmd == "copy" || d.Cmd == "verify" {
		r := s.region(d, argVal(t, d, "src"), length)
		j.src, length = &r, r.Len
	}
	if arg, ok := d.Arg("dests"); ok {
		for _, v := range arg.Vals {
			if v == "" {
				continue
			}
			j.dests = append(j.dests, s.region(d, v, length))
			if length < 0 {
				length = j.dests[0].Len
			}
		}
	}
	j.flags = parseFlags(t, d)
	if d.HasArg("sub") {
		j.opts.SubJobSize = sizeArg(t, d, "sub")
	}
	if d.HasArg("maxmem") {
		j.opts.MaxMemory = sizeArg(t, d, "maxmem")
	}
	if d.HasArg("ioworkers") {
		j.opts.IOWorkers = int(sizeArg(t, d, "ioworkers"))
	}
	return j
}

// region parses NAME[:OFF[:LEN]]; LEN defaults to length, or to the rest
// of the device when length is negative. NAME "nil" is a nil device.
func (s *scenario) region(d *datadriven.TestData, spec string, length int64) kcopyd.Region {
	f := strings.Split(spec, ":")
	var r kcopyd.Region
	var size int64
	if f[0] != "nil" {
		dv := s.devs[f[0]]
		if dv == nil {
			s.t.Fatalf("%s: no device %q", d.Pos, f[0])
		}
		r.Dev, size = dv.dev, dv.dev.Size()
	}
	if len(f) > 1 {
		r.Off = parseSize(s.t, f[1])
	}
	switch {
	case len(f) > 2:
		r.Len = parseSize(s.t, f[2])
	case length >= 0:
		r.Len = length
	default:
		r.Len = size - r.Off
	}
	return r
}

func parseFlags(t testing.TB, d *datadriven.TestData) kcopyd.Flags {
	arg, ok := d.Arg("flags")
	if !ok {
		return 0
	}
	var f kcopyd.Flags
	for _, v := range arg.Vals {
		switch v {
		case "IgnoreError":
			f |= kcopyd.IgnoreError
		case "WriteSeq":
			f |= kcopyd.WriteSeq
		case "DetectZeroes":
			f |= kcopyd.DetectZeroes
		case "SkipZeroes":
			f |= kcopyd.SkipZeroes
		default:
			n, err := strconv.ParseUint(v, 0, 64)
			if err != nil {
				t.Fatalf("%s: unknown flag %q", d.Pos, v)
			}
			f |= kcopyd.Flags(n)
		}
	}
	return f
}

// cmdJob runs a copy or zero on a new client, checks the contracts every
// job keeps (one callback, Wait agrees with it, the bits agree with the
// JobError, a refused job writes nothing), and prints the outcome.
func (s *scenario) cmdJob(d *datadriven.TestData) string {
	t := s.t
	j := s.parseJob(d)
	c, err := kcopyd.NewClient(&j.opts)
	if err != nil {
		return "client: " + err.Error()
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Errorf("%s: Close: %v", d.Pos, err)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.mu.Lock()
	s.cancel = cancel
	s.mu.Unlock()

	before := s.snapshot()
	var calls int
	var readErr bool
	var mask uint64
	var cbErr error
	fn := func(r bool, w uint64, err error) { calls, readErr, mask, cbErr = calls+1, r, w, err }
	var job *kcopyd.Job
	switch d.Cmd {
	case "copy":
		job, err = c.Copy(ctx, *j.src, j.dests, j.flags, fn)
	case "zero":
		job, err = c.Zero(ctx, j.dests, j.flags, fn)
	case "verify":
		job, err = c.Verify(ctx, *j.src, j.dests, j.flags, fn)
	case "verifyzero":
		job, err = c.VerifyZero(ctx, j.dests, j.flags, fn)
	}
	if err != nil {
		if job != nil {
			t.Errorf("%s: refused job returned a Job", d.Pos)
		}
		return s.refused(c, err, before, calls)
	}
	werr := job.Wait(context.Background())
	c.Flush()
	if calls != 1 || werr != cbErr {
		t.Fatalf("%s: callback ran %d times; Wait = %v, callback err = %v", d.Pos, calls, werr, cbErr)
	}
	if strings.HasPrefix(d.Cmd, "verify") {
		for n, b := range s.snapshot() {
			if !bytes.Equal(b, before[n]) {
				t.Errorf("%s: %s wrote to %s", d.Pos, d.Cmd, n)
			}
		}
	}
	var b strings.Builder
	s.outcome(&b, job, readErr, mask, cbErr, len(j.dests))
	if d.HasArg("progress") {
		fmt.Fprintf(&b, "progress=%d\n", job.Progress())
	}
	if d.HasArg("stats") {
		fmt.Fprintf(&b, "peak_buffer_bytes=%d\n", c.Stats().PeakBufferBytes)
	}
	return b.String()
}

// refused prints why a job was refused, after checking that it changed
// nothing and got no callback.
func (s *scenario) refused(c *kcopyd.Client, err error, before map[string][]byte, calls int) string {
	name := "unknown"
	for _, r := range refusals {
		if errors.Is(err, r.err) {
			name = r.name
			break
		}
	}
	c.Flush()
	changed := calls != 0
	for n, b := range s.snapshot() {
		changed = changed || !bytes.Equal(b, before[n])
	}
	out := fmt.Sprintf("refused: %s\n%v\n", name, err)
	if changed {
		return out + "but something was written or called back!\n"
	}
	return out + "nothing written\n"
}

// outcome prints a finished job's result and checks that the callback's
// bits agree with the *JobError.
func (s *scenario) outcome(b *strings.Builder, job *kcopyd.Job, readErr bool, mask uint64, err error, ndest int) {
	t := s.t
	if err == nil {
		if readErr || mask != 0 {
			t.Errorf("read_err=%v write_err=%#b with a nil error", readErr, mask)
		}
		b.WriteString("ok\n")
		return
	}
	var je *kcopyd.JobError
	if !errors.As(err, &je) {
		t.Fatalf("error %v is not a *JobError", err)
	}
	if je.ReadFailed() != readErr || je.WriteErrMask() != mask || len(je.Writes) != ndest || len(je.WriteRanges) != ndest {
		t.Errorf("callback bits %v %#b disagree with %+v", readErr, mask, je)
	}
	if job.Progress() < je.Completed {
		t.Errorf("Progress %d < Completed %d", job.Progress(), je.Completed)
	}
	for _, e := range append([]error{je.Read, je.Canceled}, je.Writes...) {
		if e != nil && !errors.Is(err, e) {
			t.Errorf("the *JobError does not unwrap to %v", e)
		}
	}
	fmt.Fprintf(b, "read_err=%v write_err=0b%0*b completed=%d\n", readErr, ndest, mask, je.Completed)
	if je.Read != nil {
		fmt.Fprintf(b, "read: %s\n", errClass(je.Read))
	}
	if len(je.ReadRanges) > 0 {
		fmt.Fprintf(b, "read_ranges=%s\n", fmtRanges(je.ReadRanges))
	}
	for i, w := range je.Writes {
		if w != nil {
			fmt.Fprintf(b, "write[%d]: %s\n", i, errClass(w))
		}
		if len(je.WriteRanges[i]) > 0 {
			fmt.Fprintf(b, "write_ranges[%d]=%s\n", i, fmtRanges(je.WriteRanges[i]))
		}
	}
	for i, k := range je.FirstDiff {
		if k >= 0 {
			fmt.Fprintf(b, "first_diff[%d]=%d\n", i, k)
		}
	}
	if je.Canceled != nil {
		fmt.Fprintf(b, "canceled: %v\n", je.Canceled)
	}
}

// errClass names an error by what it wraps, not by its message.
func errClass(err error) string {
	switch {
	case errors.Is(err, faultdev.ErrInjected):
		return "injected"
	case errors.Is(err, kcopyd.ErrMismatch):
		return "mismatch"
	case errors.Is(err, zoned.ErrUnalignedWrite):
		return "unaligned write"
	case errors.Is(err, device.ErrNotSupported):
		return "not supported"
	}
	return err.Error()
}

func fmtRanges(rs []kcopyd.Range) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("[%d,+%d]", r.Off, r.Len))
	}
	return strings.Join(parts, " ")
}

// snapshot returns every device's bytes, by name.
func (s *scenario) snapshot() map[string][]byte {
	m := map[string][]byte{}
	for n, dv := range s.devs {
		m[n] = dv.mem.Bytes()
	}
	return m
}

// cmdCmp compares two ranges and prints "equal", or the runs of 512-byte
// blocks of B that equal A's or differ, with what B holds there.
func (s *scenario) cmdCmp(d *datadriven.TestData) string {
	t := s.t
	if len(d.CmdArgs) < 2 {
		t.Fatalf("%s: cmp A[:OFF] B[:OFF] [len=L]", d.Pos)
	}
	ra := s.region(d, d.CmdArgs[0].Key, -1)
	rb := s.region(d, d.CmdArgs[1].Key, -1)
	n := min(ra.Len, rb.Len)
	if d.HasArg("len") {
		n = sizeArg(t, d, "len")
	}
	a := testutil.ReadRange(t, s.devs[strings.Split(d.CmdArgs[0].Key, ":")[0]].mem, ra.Off, n)
	bb := testutil.ReadRange(t, s.devs[strings.Split(d.CmdArgs[1].Key, ":")[0]].mem, rb.Off, n)
	if bytes.Equal(a, bb) {
		return "equal\n"
	}
	var out strings.Builder
	runs(int(n), 512, func(i, k int) string {
		if bytes.Equal(a[i:i+k], bb[i:i+k]) {
			return "equal"
		}
		return "differ: " + classify(bb[i:i+k], nil, 0)
	}, &out)
	return out.String()
}

// layout prints a device's contents as runs of 512-byte blocks.
func (s *scenario) layout(dv *scDev) string {
	p := dv.mem.Bytes()
	var out strings.Builder
	runs(len(p), 512, func(i, k int) string { return classify(p[i:i+k], s.seeds, int64(i)) }, &out)
	return out.String()
}

// runs cuts [0, n) into blocks of step bytes, names each with name(i, k),
// and prints the maximal runs of blocks with equal names.
func runs(n, step int, name func(i, k int) string, out *strings.Builder) {
	start, cur := 0, ""
	for i := 0; i < n; i += step {
		nm := name(i, min(step, n-i))
		if i > 0 && nm != cur {
			fmt.Fprintf(out, "[%d,+%d) %s\n", start, i-start, cur)
			start = i
		}
		cur = nm
	}
	if n > 0 {
		fmt.Fprintf(out, "[%d,+%d) %s\n", start, n-start, cur)
	}
}

// classify names a block: zero, fill 0xNN, pattern SEED (the pattern of
// a seed in use at the block's offset) or data.
func classify(p []byte, seeds []uint64, off int64) string {
	if len(p) > 0 && bytes.Count(p, p[:1]) == len(p) {
		if p[0] == 0 {
			return "zero"
		}
		return fmt.Sprintf("fill %#02x", p[0])
	}
	for _, seed := range seeds {
		if bytes.Equal(p, testutil.Pattern(seed, off, len(p))) {
			return fmt.Sprintf("pattern %d", seed)
		}
	}
	return "data"
}

func (s *scenario) cmdLog(d *datadriven.TestData) string {
	dv := s.dev(d, "dev")
	dv.mu.Lock()
	ops := dv.log
	dv.log = nil
	dv.mu.Unlock()
	var b strings.Builder
	if d.HasArg("count") {
		counts := map[device.Op]int{}
		var kinds []device.Op
		for _, op := range ops {
			if counts[op.Kind] == 0 {
				kinds = append(kinds, op.Kind)
			}
			counts[op.Kind]++
		}
		slices.Sort(kinds)
		for _, k := range kinds {
			fmt.Fprintf(&b, "%s=%d\n", k, counts[k])
		}
		return b.String()
	}
	// Group runs of one kind and length, each starting where the last
	// ended: "read off=0 len=4096 x100".
	for i := 0; i < len(ops); {
		k := 1
		for i+k < len(ops) && ops[i+k].Kind == ops[i].Kind && ops[i+k].Len == ops[i].Len &&
			ops[i+k].Off == ops[i+k-1].Off+ops[i].Len {
			k++
		}
		fmt.Fprintf(&b, "%s off=%d len=%d x%d\n", ops[i].Kind, ops[i].Off, ops[i].Len, k)
		i += k
	}
	return b.String()
}

func (s *scenario) dev(d *datadriven.TestData, key string) *scDev {
	name := argVal(s.t, d, key)
	dv := s.devs[name]
	if dv == nil {
		s.t.Fatalf("%s: no device %q", d.Pos, name)
	}
	return dv
}

func argVal(t testing.TB, d *datadriven.TestData, key string) string {
	arg, ok := d.Arg(key)
	if !ok || len(arg.Vals) != 1 {
		t.Fatalf("%s: %s needs %s=VALUE", d.Pos, d.Cmd, key)
	}
	return arg.Vals[0]
}

func sizeArg(t testing.TB, d *datadriven.TestData, key string) int64 {
	return parseSize(t, argVal(t, d, key))
}

// parseSize parses a sum of sizes such as 1M-10 or 400K+100, each term a
// decimal number with an optional K, M or G suffix (powers of 1024); a
// leading minus makes it negative.
func parseSize(t testing.TB, s string) int64 {
	var total int64
	for rest := s; rest != ""; {
		sign := int64(1)
		if rest[0] == '-' || rest[0] == '+' {
			if rest[0] == '-' {
				sign = -1
			}
			rest = rest[1:]
		}
		end := strings.IndexAny(rest, "+-")
		if end < 0 {
			end = len(rest)
		}
		term := rest[:end]
		rest = rest[end:]
		mul := int64(1)
		if k := strings.LastIndexAny(term, "KMG"); k >= 0 && k == len(term)-1 {
			mul, term = int64(1)<<(10*(strings.IndexByte("KMG", term[k])+1)), term[:k]
		}
		n, err := strconv.ParseInt(term, 10, 64)
		if err != nil {
			t.Fatalf("bad size %q: %v", s, err)
		}
		total += sign * n * mul
	}
	return total
}

func parseByte(t testing.TB, s string) byte {
	n, err := strconv.ParseUint(s, 0, 8)
	if err != nil {
		t.Fatalf("bad byte %q: %v", s, err)
	}
	return byte(n)
}

// alignedDev demands O_DIRECT alignment, as a 4Kn disk does.
type alignedDev struct {
	device.Device
	align int64
}

func (a *alignedDev) Limits() device.Limits {
	n := int(a.align)
	return device.Limits{LogicalBlockSize: n, OffsetAlign: n, MemAlign: n}
}

func (a *alignedDev) WriteAt(p []byte, off int64) (int, error) {
	if err := device.CheckRange(off, int64(len(p)), a.Size(), int(a.align)); err != nil {
		return 0, err
	}
	return a.Device.WriteAt(p, off)
}
