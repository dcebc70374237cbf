package clone

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/kcopyd/kcopyd/device"
)

// OpenMetadataFile opens the metadata file at path for a clone of a SOURCE
// of sourceSize bytes with regions of regionSize bytes (0: the file's own,
// or DefaultRegionSize for a new file). A missing file is created blank,
// MetadataSize bytes, atomically: it is written under a temporary name,
// synced, renamed into place and the directory synced, so a crash leaves
// either no file or a whole blank one. It returns the device and whether
// the file was created. Open then formats or loads it.
func OpenMetadataFile(path string, sourceSize, regionSize int64) (_ *device.File, created bool, err error) {
	f, err := device.OpenFile(path, device.FileOptions{})
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return f, false, err
	}
	if regionSize == 0 {
		regionSize = DefaultRegionSize
	}
	if !ValidRegionSize(regionSize) {
		return nil, false, fmt.Errorf("%w: %d", ErrRegionSize, regionSize)
	}
	tmp := path + ".new"
	os.Remove(tmp) // a leftover of a crash during an earlier creation
	t, err := device.CreateFile(tmp, MetadataSize(sourceSize, regionSize), device.FileOptions{})
	if err != nil {
		return nil, false, err
	}
	err = errors.Join(t.Flush(), t.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
		return nil, false, fmt.Errorf("clone: creating metadata %s: %w", path, err)
	}
	f, err = device.OpenFile(path, device.FileOptions{})
	return f, err == nil, err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
