package mapfile

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strconv"
	"strings"
	"time"
)

// header is the first line of every map file: the tool and format version.
const (
	headerPrefix = "kcopyd map "
	header       = headerPrefix + "v1"
)

// maxLoadRanges bounds the ranges Parse accepts, so that a damaged or
// hostile file cannot make it allocate without bound; Save never writes
// more than the map's bound.
const maxLoadRanges = 1 << 22

// Status words of the status line.
const (
	statusRunning  = "running"  // untried ranges remain
	statusFailed   = "failed"   // nothing untried, but failed ranges remain
	statusComplete = "complete" // every byte done
)

// encode returns the map file's text, its status line stamped now.
func (m *Map) encode(now time.Time) []byte {
	m.mu.Lock()
	rs := slices.Clone(m.mu.ranges) // format without holding up marks
	m.mu.Unlock()
	done, failed, untried := counts(rs)
	var b bytes.Buffer
	b.Grow(512 + 40*len(rs))
	j := m.job
	fmt.Fprintf(&b, "%s\n", header)
	b.WriteString("# The progress of one kcopyd job; format: go doc github.com/kcopyd/kcopyd/mapfile\n")
	fmt.Fprintf(&b, "kind %s\n", j.Kind)
	if j.Kind == KindCopy {
		fmt.Fprintf(&b, "source %s\n", locationString(j.Source))
	}
	for i, d := range j.Dests {
		fmt.Fprintf(&b, "dest %d %s\n", i, locationString(d))
	}
	fmt.Fprintf(&b, "chunk %d\n", j.ChunkSize)
	b.WriteString("# region SOURCE_OFFSET LENGTH DEST_OFFSET (bytes)\n")
	for _, r := range j.Regions {
		fmt.Fprintf(&b, "region %s\n", regionString(j.Kind, r))
	}
	fmt.Fprintf(&b, "status %s %s done %d failed %d untried %d\n",
		statusWord(failed, untried), now.UTC().Format(time.RFC3339), done, failed, untried)
	b.WriteString("# OFFSET LENGTH STATE (job-relative bytes: the regions laid end to end)\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "%d %d %s\n", r.Off, r.Len, stateString(r))
	}
	fmt.Fprintf(&b, "crc32 %08x\n", crc32.ChecksumIEEE(b.Bytes()))
	return b.Bytes()
}

func statusWord(failed, untried int64) string {
	switch {
	case untried > 0:
		return statusRunning
	case failed > 0:
		return statusFailed
	}
	return statusComplete
}

func locationString(l Location) string {
	return fmt.Sprintf("%s id %s size %d", strconv.Quote(l.Name), strconv.Quote(l.ID), l.Size)
}

// stateString returns a range's STATE column.
func stateString(r Range) string {
	switch {
	case r.State != Failed:
		return r.State.String()
	case r.Dests == 0:
		return "failed read"
	}
	return "failed write=" + r.Dests.String()
}

// Parse returns the map in data, the contents of a map file. It returns an
// error wrapping ErrCorrupt, with the line number, when data is not a
// whole, well-formed map (see the package documentation for the format).
func Parse(data []byte) (*Map, error) {
	body, err := checkSum(data)
	if err != nil {
		return nil, err
	}
	p := &parser{lines: strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")}
	if p.lines[0] != header {
		if strings.HasPrefix(p.lines[0], headerPrefix) {
			return nil, fmt.Errorf("%w: format %q is not supported (this kcopyd reads %q)", ErrCorrupt, p.lines[0], header)
		}
		return nil, fmt.Errorf("%w: line 1 is not %q: not a kcopyd map", ErrCorrupt, header)
	}
	p.n = 1
	m := &Map{}
	if err := p.parseJob(&m.job); err != nil {
		return nil, err
	}
	status, err := p.parseStatus()
	if err != nil {
		return nil, err
	}
	rs, err := p.parseRanges(m.job)
	if err != nil {
		return nil, err
	}
	done, failed, untried := counts(rs)
	if want := fmt.Sprintf("%s done %d failed %d untried %d", statusWord(failed, untried), done, failed, untried); status.counts != want {
		return nil, p.errorf(status.line, "status %q disagrees with the ranges (%q)", status.counts, want)
	}
	m.mu.ranges, m.mu.maxRanges, m.mu.saved = rs, max(DefaultMaxRanges, len(rs)), status.time
	return m, nil
}

// checkSum returns data without its last line, the checksum line, when
// that line is present and right.
func checkSum(data []byte) ([]byte, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: the file is empty", ErrCorrupt)
	}
	if data[len(data)-1] != '\n' {
		return nil, fmt.Errorf("%w: the file is truncated (no newline at the end)", ErrCorrupt)
	}
	i := bytes.LastIndexByte(data[:len(data)-1], '\n') + 1
	body, last := data[:i], string(data[i:len(data)-1])
	sum, ok := strings.CutPrefix(last, "crc32 ")
	if !ok || len(sum) != 8 || i == 0 {
		return nil, fmt.Errorf("%w: the file is truncated (its last line is not the crc32 checksum)", ErrCorrupt)
	}
	want, err := strconv.ParseUint(sum, 16, 32)
	if err != nil || fmt.Sprintf("%08x", want) != sum {
		return nil, fmt.Errorf("%w: checksum %q is not 8 lower-case hex digits", ErrCorrupt, sum)
	}
	if got := crc32.ChecksumIEEE(body); got != uint32(want) {
		return nil, fmt.Errorf("%w: checksum mismatch (file says %08x, contents give %08x): the map was damaged or edited", ErrCorrupt, want, got)
	}
	return body, nil
}

// parser reads the body's lines in order, skipping comments.
type parser struct {
	lines []string
	n     int // index of the next line; line numbers are n+1
}

func (p *parser) errorf(line int, format string, args ...any) error {
	return fmt.Errorf("%w: line %d: %s", ErrCorrupt, line, fmt.Sprintf(format, args...))
}

// next returns the fields of the next line that is not a comment and its
// line number; ok is false at the end.
func (p *parser) next() (f []string, line int, ok bool, err error) {
	for p.n < len(p.lines) {
		s := p.lines[p.n]
		p.n++
		if strings.HasPrefix(s, "#") {
			continue
		}
		f, err := splitFields(s)
		if err != nil {
			return nil, p.n, false, p.errorf(p.n, "%v", err)
		}
		return f, p.n, true, nil
	}
	return nil, p.n + 1, false, nil
}

// peek reports whether the next line that is not a comment starts with
// the keyword kw.
func (p *parser) peek(kw string) bool {
	for i := p.n; i < len(p.lines); i++ {
		if !strings.HasPrefix(p.lines[i], "#") {
			return strings.HasPrefix(p.lines[i], kw+" ")
		}
	}
	return false
}

// expect returns the fields after keyword kw of the next line, which must
// have n fields after it.
func (p *parser) expect(kw string, n int) ([]string, int, error) {
	f, line, ok, err := p.next()
	switch {
	case err != nil:
		return nil, line, err
	case !ok:
		return nil, line, p.errorf(line, "the file ends before the %q line", kw)
	case f[0] != kw || len(f) != n+1:
		return nil, line, p.errorf(line, "want a %q line with %d fields, got %q", kw, n, strings.Join(f, " "))
	}
	return f[1:], line, nil
}

// splitFields splits a line at single spaces; a field starting with a
// double quote is a Go-quoted string and is returned unquoted.
func splitFields(s string) ([]string, error) {
	var f []string
	for {
		var tok string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, fmt.Errorf("bad quoted string %.40q", s)
			}
			tok, _ = strconv.Unquote(q)
			s = s[len(q):]
		} else {
			i := strings.IndexByte(s, ' ')
			if i < 0 {
				i = len(s)
			}
			tok, s = s[:i], s[i:]
			if tok == "" {
				return nil, errors.New("empty field (fields are separated by one space)")
			}
		}
		f = append(f, tok)
		if s == "" {
			return f, nil
		}
		if s[0] != ' ' || len(s) == 1 {
			return nil, fmt.Errorf("fields must be separated by one space, at %.20q", s)
		}
		s = s[1:]
	}
}

// parseNum parses a non-negative decimal int64 without sign.
func parseNum(s string) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a number of bytes", s)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number of bytes: %w", s, errors.Unwrap(err))
	}
	return n, nil
}
