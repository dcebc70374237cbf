package mapfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// maxFileSize bounds the file Load reads: more than any map Save writes.
const maxFileSize = 256 << 20

// testHookBeforeRename, when set by a test, runs in Save after the
// temporary file is written and synced and before it is renamed; an error
// stops Save there, as a crash would.
var testHookBeforeRename func() error

// Load reads the map file at path. It returns an error wrapping
// ErrCorrupt when the file is not a whole, well-formed map (truncated,
// damaged, edited, of another format version), and the *fs.PathError of
// the failed call when it cannot be read. Check the map against the job
// before using it.
func Load(path string) (*Map, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, &os.PathError{Op: "read", Path: path, Err: err}
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", path, ErrCorrupt, maxFileSize)
	}
	m, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// Save writes the map to path, replacing the file atomically: it writes
// path+".tmp", syncs it, renames it over path, and syncs the directory. A
// crash at any moment leaves path holding either the old map or the new
// one, never a mix (a stale path+".tmp" may remain; the next Save
// removes it). A symbolic link at path is replaced, not followed. When
// Save returns nil the new map is durable. On error,
// path is unchanged or already the new map, the temporary file is
// removed when possible, and the error says which step failed. Saves of
// one Map are serialized; two Maps or processes must not save to the same
// path.
func (m *Map) Save(path string) error {
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	now := time.Now()
	data := m.encode(now)
	tmp := path + ".tmp"
	if err := removeIfExists(tmp); err != nil { // a stale one from a crash
		return err
	}
	if err := writeSynced(tmp, data); err != nil {
		return errors.Join(err, removeIfExists(tmp))
	}
	if testHookBeforeRename != nil {
		if err := testHookBeforeRename(); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(err, removeIfExists(tmp))
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return err
	}
	m.mu.Lock()
	m.mu.saved = now.UTC().Format(time.RFC3339)
	m.mu.Unlock()
	return nil
}

// Saved returns the time stamp of the last successful Save, or of the
// loaded file's status line, in RFC 3339; "" for a new map never saved.
func (m *Map) Saved() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mu.saved
}

// writeSynced writes data to a new file at path and syncs it before
// closing it. The file must not exist, so that a symbolic link planted
// at path is not followed.
func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// syncDir syncs the directory dir so that a rename in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Checkpointer applies the crash-safety rule of the package for a caller
// that completes ranges faster than it wants to flush and save: Add
// collects ranges whose writes have completed, and Checkpoint makes them
// durable, then marks them done and saves the map. Its methods are safe
// for concurrent use.
type Checkpointer struct {
	m    *Map
	path string

	// ckMu serializes Checkpoint calls.
	ckMu sync.Mutex
	mu   struct {
		sync.Mutex
		pending []Range // completed, not yet flushed; adjacent ones merged
	}
}

// NewCheckpointer returns a Checkpointer that saves m to path.
func NewCheckpointer(m *Map, path string) *Checkpointer {
	return &Checkpointer{m: m, path: path}
}

// Add records that the writes of job bytes [off, off+n) completed on every
// destination, not yet flushed. It does not mark them done: the next
// Checkpoint does, after its flush. A range outside the job panics.
func (c *Checkpointer) Add(off, n int64) {
	if n == 0 {
		return
	}
	if total := c.m.job.Length(); off < 0 || n < 0 || off > total || n > total-off {
		panic(fmt.Sprintf("mapfile: Checkpointer.Add: range [%d, +%d) outside the job [0, %d)", off, n, total))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if k := len(c.mu.pending) - 1; k >= 0 && c.mu.pending[k].End() == off {
		c.mu.pending[k].Len += n
		return
	}
	c.mu.pending = append(c.mu.pending, Range{Off: off, Len: n, State: Done})
}

// Pending returns the number of bytes added and not yet checkpointed.
func (c *Checkpointer) Pending() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for _, r := range c.mu.pending {
		n += r.Len
	}
	return n
}

// Checkpoint takes the ranges added so far, calls flush, which must make
// every destination durable (fsync, NBD_CMD_FLUSH), then marks those
// ranges done and saves the map atomically. Only bytes still untried are
// marked: a byte marked failed (or done) since its Add keeps that state.
// Ranges added while it runs wait for the next Checkpoint. It blocks for
// the flush and the save.
//
// When flush fails, the ranges are dropped, not kept for a later
// Checkpoint: after a failed fsync the kernel may have discarded the dirty
// pages, and a later fsync can succeed without writing them, so they stay
// untried and are copied again on the next run. The map is then still
// saved (it may hold failures marked since the last save) and the flush
// error is returned. When Save fails, the ranges are done in memory but
// the file keeps its previous, more pessimistic contents.
func (c *Checkpointer) Checkpoint(flush func() error) error {
	c.ckMu.Lock()
	defer c.ckMu.Unlock()
	c.mu.Lock()
	batch := c.mu.pending
	c.mu.pending = nil
	c.mu.Unlock()
	// The ordering rule: flush first, then mark done, then save.
	if err := flush(); err != nil {
		err = fmt.Errorf("mapfile: flush before checkpoint: %w (%d ranges stay untried)", err, len(batch))
		return errors.Join(err, c.m.Save(c.path))
	}
	for _, r := range batch {
		c.m.markUntriedDone(r)
	}
	return c.m.Save(c.path)
}
