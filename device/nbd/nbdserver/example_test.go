package nbdserver_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"

	"github.com/kcopyd/kcopyd/device"
	"github.com/kcopyd/kcopyd/device/nbd"
	"github.com/kcopyd/kcopyd/device/nbd/nbdserver"
)

// Serve a memory device on a Unix socket and use it through the NBD
// client.
func Example() {
	dev := device.NewMem(1 << 20)
	defer dev.Close()
	srv, err := nbdserver.New(dev, &nbdserver.Options{Name: "mem"})
	if err != nil {
		panic(err)
	}
	dir, err := os.MkdirTemp("", "nbdex")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		panic(err)
	}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())

	c, err := nbd.Open(context.Background(), "nbd+unix:///mem?socket="+url.QueryEscape(sock), nil)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	if _, err := c.WriteAt([]byte("hello, nbd"), 4096); err != nil {
		panic(err)
	}
	p := make([]byte, 10)
	if _, err := dev.ReadAt(p, 4096); err != nil {
		panic(err)
	}
	fmt.Printf("%d bytes, multi-conn %v: %s\n", c.Size(), c.Info().CanMultiConn, p)
	// Output: 1048576 bytes, multi-conn true: hello, nbd
}
