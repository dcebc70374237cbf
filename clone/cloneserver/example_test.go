package cloneserver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/kcopyd/kcopyd/clone/cloneserver"
	"github.com/kcopyd/kcopyd/device/nbd"
	"github.com/kcopyd/kcopyd/device/nbd/nbdserver"
)

// Hydrate a new DEST file from SOURCE while serving it over NBD: a client
// writes through the export at once, and the program stops serving once
// Clone.Hydrated says every region is copied (kcopyd clone --create; with
// Config.UntilHydrated, Serve itself returns once the clone is hydrated
// and no client is connected).
func Example() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	dir, err := os.MkdirTemp("", "clone")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	src, dst := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	if err := os.WriteFile(src, bytes.Repeat([]byte("SOURCE.."), 1<<17), 0o644); err != nil { // 1 MiB
		panic(err)
	}

	s, err := cloneserver.Open(ctx, &cloneserver.Config{
		Source: src, Dest: dst, CreateDest: true,
		Metadata: filepath.Join(dir, "dst.clone"),
	})
	if err != nil {
		panic(err) // nothing was written
	}
	sock := filepath.Join(dir, "s")
	l, err := nbdserver.ListenUnix(sock)
	if err != nil {
		panic(errors.Join(err, s.Close()))
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, l) }()

	c, err := nbd.Open(ctx, "nbd+unix:///?socket="+url.QueryEscape(sock), nil)
	if err != nil {
		panic(err)
	}
	if _, err := c.WriteAt([]byte("CLIENT"), 0); err != nil {
		panic(err)
	}
	c.Close()

	<-s.Clone.Hydrated()              // every region copied
	stop()                            // stop serving
	err = <-served                    // requests in flight answered
	err = errors.Join(err, s.Close()) // DEST flushed, metadata committed
	b, _ := os.ReadFile(dst)
	fmt.Printf("%s, %d bytes, %v, %v\n", b[:16], len(b), s.Clone.Status(), err)
	// Output: CLIENT..SOURCE.., 1048576 bytes, 1.0 MiB of 1.0 MiB hydrated (100.0%), complete, <nil>
}
