package main

import (
	"io"
	"sync"
)

// env holds the standard streams of one run, so that tests can drive the
// command in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// lockedWriter serializes writes from the progress display, the rate file
// watcher and the command.
type lockedWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
