package nbd_test

import (
	"bytes"
	"testing"
)

func TestSmoke(t *testing.T) {
	s := nbdkit(t, "memory", "64M")
	d := open(t, s.URI, nil)
	t.Logf("info %+v limits %+v notes %v", d.Info(), d.Limits(), d.Notes())
	p := make([]byte, 3<<20)
	pattern(p, 4096, 1)
	if n, err := d.WriteAt(p, 4096); err != nil || n != len(p) {
		t.Fatal(n, err)
	}
	q := make([]byte, len(p))
	if n, err := d.ReadAt(q, 4096); err != nil || n != len(p) {
		t.Fatal(n, err)
	}
	if !bytes.Equal(p, q) {
		t.Fatal("mismatch")
	}
	e, err := d.Extents(0, 64<<20)
	t.Log(e, err)
}
