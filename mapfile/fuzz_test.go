package mapfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds Parse arbitrary files, seeded from testdata/*.map and
// testdata/fuzz/FuzzParse, each as it is and with its checksum line made
// right (so that mutations reach the grammar, not only the checksum).
// Parse must refuse with ErrCorrupt or return a map that keeps its
// invariants, belongs to its own job, and encodes to a file that parses
// back to the same map and the same bytes.
func FuzzParse(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "*.map"))
	if err != nil || len(seeds) == 0 {
		f.Fatalf("no seed maps in testdata (%v)", err)
	}
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParse(t, data)
		checkParse(t, withSum(string(resumBody(data))))
	})
}

// resumBody returns data without a last line starting with "crc32 ", with
// a final newline.
func resumBody(data []byte) []byte {
	data = bytes.TrimSuffix(data, []byte("\n"))
	i := bytes.LastIndexByte(data, '\n') + 1
	if bytes.HasPrefix(data[i:], []byte("crc32 ")) {
		data = data[:i]
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		data = append(bytes.Clone(data), '\n')
	}
	return data
}

// checkParse is the check of FuzzParse for one input.
func checkParse(t *testing.T, data []byte) {
	m, err := Parse(data)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Parse error %v does not wrap ErrCorrupt", err)
		}
		return
	}
	checkInvariants(t, m)
	if err := m.Check(m.Job()); err != nil {
		t.Fatalf("a parsed map does not match its own job: %v", err)
	}
	checkRoundTrip(t, m)
	m.RetryFailed()
	checkInvariants(t, m)
}
