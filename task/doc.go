// Package task runs a whole copy or zeroing of locations as the kcopyd
// command runs it: the checks, the sparse plan, the preparation of the
// destinations, the batch with its destination-drop policy, the flush, an
// optional read-back verify and the resumable progress map, with the
// outcome returned as data.
//
//	src, _ := location.Open(ctx, "disk.img", nil)
//	dst, _ := location.Inspect("copy.img", nil) // created by Run
//	rep := task.Run(ctx, &task.Options{
//		Src:     src,
//		Dests:   []*location.Location{dst},
//		Regions: []task.Region{task.Whole(src.Size)},
//		Create:  &location.Options{},
//		Sparse:  true,
//		Verify:  true,
//	})
//	if rep.Refused != nil { … } // bad input: nothing was written
//	if err := rep.Err(); errors.Is(err, task.ErrWrite) { … }
//	rep.Dests[0].Errs, rep.Dests[0].Ranges, rep.Verify, rep.Map …
//
// Regions come from a regions file (ParseRegions), from a start and a
// length over the source or the destinations' sizes (Span), or are built
// by hand; ChooseSubJobSize picks the chunk size by how the locations were
// opened. Report.Err says whether the run did all it was asked, the first
// failure by precedence with its kind (interrupted, the engine refused, a
// read error, a write error, a difference found by Verify).
//
// Packages plan, batch, location and mapfile each do one part; this
// package is their composition, the policy a whole-device tool needs, so
// that a Go program gets exactly what "kcopyd copy", "kcopyd zero" and
// "kcopyd verify" do without the command line.
//
// # Before the first write
//
// Run checks everything before it changes anything: destinations given
// twice under two names, destination ranges overlapping each other or the
// source in the underlying store (location.CheckAliases), the alignment
// every device demands, and the engine's acceptance of every region's job
// (batch.Check). Only then are missing destination files created and short
// ones grown (Options.Create); if anything fails before the first write,
// they are removed or truncated back and Report.Refused says why. A resumed
// progress map of another job is refused the same way.
//
// # Ownership
//
// Run takes the locations over: it closes every one of them before it
// returns, except after Report.Abandoned (the I/O that did not finish
// within Options.InterruptWait may still be in flight: closing would wait
// for it).
//
// # Events
//
// Options.Events tells a caller what happens while Run runs: when the
// batch starts, the bytes done, a destination dropped, warnings and notes.
// The command draws its progress display and prints its messages from
// them; every event is called from one goroutine at a time.
package task
