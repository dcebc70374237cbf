package device_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/devicetest"
	"github.com/kcopyd/kcopyd/internal/bufpool"
)

func TestFileIOUringConformance(t *testing.T) {
	devicetest.Run(t, openFile(device.FileOptions{Direct: true, IOUring: true}, 4096))
}

// completion records one Complete call.
type completion struct {
	n    int
	err  error
	done chan struct{}
}

func newCompletion() *completion { return &completion{done: make(chan struct{})} }

func (c *completion) Complete(n int, err error) {
	c.n, c.err = n, err
	close(c.done)
}

func (c *completion) wait() (int, error) {
	<-c.done
	return c.n, c.err
}

// TestFileStarter writes and reads an O_DIRECT file through its ring, and
// checks that the requests the ordinary path would refuse or split are not
// started: the caller then gets ReadAt's or WriteAt's error.
func TestFileStarter(t *testing.T) {
	const size = 1 << 20
	path := filepath.Join(t.TempDir(), "f")
	f, err := device.CreateFile(path, size+100, device.FileOptions{Direct: true, IOUring: true})
	if errors.Is(err, device.ErrNotSupported) {
		t.Skipf("CreateFile(Direct) = %v: the filesystem refuses O_DIRECT", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var s device.Starter = f
	buf := bufpool.Alloc(size)
	for i := range buf {
		buf[i] = byte(i*13 + 1)
	}
	c := newCompletion()
	if !s.StartWriteAt(buf, 0, c) {
		t.Skip("io_uring refused here: the File works without it")
	}
	if n, err := c.wait(); n != size || err != nil {
		t.Fatalf("StartWriteAt: %d, %v", n, err)
	}
	got := bufpool.Alloc(size)
	c = newCompletion()
	if !s.StartReadAt(got, 0, c) {
		t.Fatal("StartReadAt refused an aligned read")
	}
	if n, err := c.wait(); n != size || err != nil || !bytes.Equal(got, buf) {
		t.Fatalf("StartReadAt: %d, %v, equal %v", n, err, bytes.Equal(got, buf))
	}
	plain := make([]byte, size)
	if _, err := f.ReadAt(plain, 0); err != nil || !bytes.Equal(plain, buf) {
		t.Fatalf("ReadAt after StartWriteAt: %v, equal %v", err, bytes.Equal(plain, buf))
	}
	for name, start := range map[string]func() bool{
		"unaligned offset": func() bool { return s.StartReadAt(got[:4096], 512+1, newCompletion()) },
		"unaligned buffer": func() bool { return s.StartReadAt(got[1:4097], 0, newCompletion()) },
		"unaligned tail":   func() bool { return s.StartReadAt(got[:4096+100], size, newCompletion()) },
		"past the end":     func() bool { return s.StartWriteAt(got[:8192], size-4096, newCompletion()) },
		"negative offset":  func() bool { return s.StartReadAt(got[:4096], -4096, newCompletion()) },
		"empty":            func() bool { return s.StartReadAt(nil, 0, newCompletion()) },
	} {
		if start() {
			t.Errorf("%s: started", name)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if s.StartReadAt(got[:4096], 0, newCompletion()) {
		t.Fatal("started after Close")
	}
}

// TestFileStarterReadOnly: a read-only File starts reads but never writes.
func TestFileStarterReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	w, err := device.CreateFile(path, 1<<16, device.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	f, err := device.OpenFile(path, device.FileOptions{ReadOnly: true, Direct: true, IOUring: true})
	if errors.Is(err, device.ErrNotSupported) {
		t.Skipf("OpenFile(Direct) = %v: the filesystem refuses O_DIRECT", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := bufpool.Alloc(4096)
	if f.StartWriteAt(buf, 0, newCompletion()) {
		t.Fatal("a read-only File started a write")
	}
	c := newCompletion()
	if f.StartReadAt(buf, 0, c) {
		if n, err := c.wait(); n != 4096 || err != nil {
			t.Fatalf("StartReadAt: %d, %v", n, err)
		}
	}
}
