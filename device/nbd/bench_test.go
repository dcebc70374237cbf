package nbd_test

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/kcopyd/kcopyd/device/nbd"
)

// envInt returns the integer in the environment variable name, or def.
func envInt(tb testing.TB, name string, def int64) int64 {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		tb.Fatalf("%s=%q: %v", name, s, err)
	}
	return n
}

// BenchmarkCopyToNBD copies a file to an NBD export through a Device, with
// NBD_BENCH_WORKERS goroutines (default 16) issuing 1 MiB writes over
// NBD_BENCH_CONNS connections (default 4). It copies NBD_BENCH_SRC to
// NBD_BENCH_URI when both are set, else a
// generated file of NBD_BENCH_SIZE MiB (default 256) to an nbdkit memory
// export.
func BenchmarkCopyToNBD(b *testing.B) {
	src, uri := os.Getenv("NBD_BENCH_SRC"), os.Getenv("NBD_BENCH_URI")
	if src == "" || uri == "" {
		size := envInt(b, "NBD_BENCH_SIZE", 256) << 20
		src = filepath.Join(b.TempDir(), "src")
		writeBenchFile(b, src, size)
		uri = nbdkit(b, "memory", strconv.FormatInt(size, 10)).URI
	}
	f, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	d := open(b, uri, &nbd.Config{Connections: int(envInt(b, "NBD_BENCH_CONNS", 4))})
	if d.Size() < st.Size() {
		b.Fatalf("export of %d bytes is smaller than %s (%d bytes)", d.Size(), src, st.Size())
	}
	workers := int(envInt(b, "NBD_BENCH_WORKERS", 16))
	b.SetBytes(st.Size())
	for b.Loop() {
		copyFile(b, d, f, st.Size(), 1<<20, workers)
		if err := d.Flush(); err != nil {
			b.Fatal(err)
		}
	}
}

// writeBenchFile writes size bytes of a cheap pseudo-random pattern.
func writeBenchFile(tb testing.TB, path string, size int64) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		pattern(buf, off, 77)
		if _, err := f.Write(buf[:min(int64(len(buf)), size-off)]); err != nil {
			tb.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

// copyFile copies size bytes of f to d with workers goroutines and chunk-
// byte requests.
func copyFile(tb testing.TB, d *nbd.Device, f *os.File, size, chunk int64, workers int) {
	var next sync.Mutex
	pos := int64(0)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			buf := make([]byte, chunk)
			for {
				next.Lock()
				off := pos
				pos += chunk
				next.Unlock()
				if off >= size {
					return
				}
				p := buf[:min(chunk, size-off)]
				if _, err := f.ReadAt(p, off); err != nil && err != io.EOF {
					errs <- err
					return
				}
				if _, err := d.WriteAt(p, off); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

// BenchmarkThroughput reads and writes a 256 MiB nbdkit memory export with
// 16 goroutines issuing 1 MiB requests, over 1, 2 and 4 connections.
func BenchmarkThroughput(b *testing.B) {
	const size = 256 << 20
	const chunk = 1 << 20
	for _, op := range []string{"write", "read"} {
		for _, conns := range []int{1, 2, 4} {
			b.Run(op+"/conns="+strconv.Itoa(conns), func(b *testing.B) {
				s := nbdkit(b, "memory", strconv.Itoa(size))
				d := open(b, s.URI, &nbd.Config{Connections: conns})
				b.SetBytes(size)
				for b.Loop() {
					var wg sync.WaitGroup
					for w := range 16 {
						wg.Go(func() {
							buf := make([]byte, chunk)
							for off := int64(w) * chunk; off < size; off += 16 * chunk {
								var err error
								if op == "write" {
									_, err = d.WriteAt(buf, off)
								} else {
									_, err = d.ReadAt(buf, off)
								}
								if err != nil {
									b.Error(err)
									return
								}
							}
						})
					}
					wg.Wait()
				}
			})
		}
	}
}

// BenchmarkLatency measures pipelining against a server with 2 ms of
// delay per read: with many requests in flight the delay overlaps.
func BenchmarkLatency(b *testing.B) {
	for _, inFlight := range []int{1, 16, 64} {
		b.Run("inflight="+strconv.Itoa(inFlight), func(b *testing.B) {
			s := nbdkit(b, "--filter=delay", "memory", "64M", "delay-read=2ms")
			d := open(b, s.URI, &nbd.Config{MaxInFlight: inFlight})
			const n = 64
			b.SetBytes(n * 64 << 10)
			for b.Loop() {
				var wg sync.WaitGroup
				for i := range n {
					wg.Go(func() {
						buf := make([]byte, 64<<10)
						if _, err := d.ReadAt(buf, int64(i)*(64<<10)); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
			}
		})
	}
}
