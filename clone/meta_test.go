package clone_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/kcopyd/kcopyd/clone"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

// TestMetadataSlots: a commit never overwrites the newest slot, so when the
// newest is damaged (a torn write) the previous commit is loaded; a torn
// first commit leaves a new clone.
func TestMetadataSlots(t *testing.T) {
	const rs = 4 << 10
	s := newSetup(t, 256<<10, rs, 16)
	slot := clone.MetadataSize(s.src.Size(), rs) / 2
	c := s.open(t, clone.Options{NoHydration: true}) // generation 1 in slot 0
	write := func(r int64) {
		t.Helper()
		if _, err := c.WriteAt(testutil.Pattern(uint64(r), r*rs, rs), r*rs); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	write(3) // generation 2 in slot 1: region 3
	write(5) // generation 3 in slot 0: regions 3 and 5
	closeClone(t, c)
	img := s.md.Bytes()

	// Damage slot 0's bitmap: generation 2 (region 3 only) is loaded.
	s.md.WriteAt([]byte{0xff}, 4096+100)
	c = s.open(t, clone.Options{NoHydration: true})
	if st := c.Status(); st.HydratedRegions != 1 {
		t.Fatalf("with the newest slot damaged: %d regions hydrated; want 1 (the previous commit)", st.HydratedRegions)
	}
	if got, want := testutil.ReadRange(t, c, 5*rs, rs), s.src.Bytes()[5*rs:6*rs]; !bytes.Equal(got, want) {
		t.Error("region 5, not hydrated in the previous commit, does not read from SOURCE")
	}
	closeClone(t, c)

	// Both slots damaged: refused, nothing written.
	s.md.WriteAt(img, 0)
	s.md.WriteAt([]byte{0xff}, 4096+100)
	s.md.WriteAt([]byte{0xff}, slot+4096+100)
	before := s.md.Bytes()
	if c, err := clone.Open(s.src, s.dst, s.md, &clone.Options{RegionSize: rs}); err == nil {
		c.Close()
		t.Fatal("Open with both slots damaged succeeded")
	} else if !errors.Is(err, clone.ErrMetadataCorrupt) {
		t.Errorf("Open with both slots damaged = %v; want ErrMetadataCorrupt", err)
	}
	if !bytes.Equal(s.md.Bytes(), before) {
		t.Error("a refused Open changed the metadata")
	}

	// A torn first commit (slot 0 damaged, slot 1 never written): new clone.
	blank := make([]byte, len(img))
	s.md.WriteAt(blank, 0)
	s.md.WriteAt(img[:4096], 0)
	s.md.WriteAt([]byte{0xff}, 100) // inside the header, after the magic
	c = s.open(t, clone.Options{NoHydration: true})
	if st := c.Status(); st.HydratedRegions != 0 {
		t.Fatalf("after a torn first commit: %d regions hydrated; want a new clone", st.HydratedRegions)
	}
	closeClone(t, c)
}
