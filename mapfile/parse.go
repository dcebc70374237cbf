package mapfile

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// parseJob reads the kind, source, dest, chunk and region lines into j and
// validates the job.
func (p *parser) parseJob(j *Job) error {
	f, line, err := p.expect("kind", 1)
	if err != nil {
		return err
	}
	j.Kind = Kind(f[0])
	if j.Kind != KindCopy && j.Kind != KindZero {
		return p.errorf(line, "kind %q is neither %q nor %q", j.Kind, KindCopy, KindZero)
	}
	if j.Kind == KindCopy {
		if j.Source, err = p.parseLocation("source", ""); err != nil {
			return err
		}
	}
	for p.peek("dest") {
		l, err := p.parseLocation("dest", strconv.Itoa(len(j.Dests)))
		if err != nil {
			return err
		}
		j.Dests = append(j.Dests, l)
	}
	if f, line, err = p.expect("chunk", 1); err != nil {
		return err
	}
	if j.ChunkSize, err = parseNum(f[0]); err != nil {
		return p.errorf(line, "chunk: %v", err)
	}
	for p.peek("region") {
		r, err := p.parseRegion(j.Kind)
		if err != nil {
			return err
		}
		j.Regions = append(j.Regions, r)
	}
	if err := j.validate(); err != nil {
		return fmt.Errorf("%w: lines 2 to %d: %v", ErrCorrupt, line, err)
	}
	return nil
}

// parseLocation reads `KW [INDEX] "NAME" id "ID" size N`; index is the
// index the line must have, or "" for none.
func (p *parser) parseLocation(kw, index string) (Location, error) {
	n := 5
	if index != "" {
		n = 6
	}
	f, line, err := p.expect(kw, n)
	if err != nil {
		return Location{}, err
	}
	if index != "" {
		if f[0] != index {
			return Location{}, p.errorf(line, "%s %s where %s %s was due", kw, f[0], kw, index)
		}
		f = f[1:]
	}
	if f[1] != "id" || f[3] != "size" {
		return Location{}, p.errorf(line, `want %s "NAME" id "ID" size BYTES`, kw)
	}
	size, err := parseNum(f[4])
	if err != nil {
		return Location{}, p.errorf(line, "%s size: %v", kw, err)
	}
	return Location{Name: f[0], ID: f[2], Size: size}, nil
}

// parseRegion reads `region SRC LENGTH DEST`, SRC "-" for a zero job.
func (p *parser) parseRegion(k Kind) (Region, error) {
	f, line, err := p.expect("region", 3)
	if err != nil {
		return Region{}, err
	}
	var r Region
	if k == KindZero && f[0] == "-" {
		f[0] = "0"
	} else if k == KindZero {
		return Region{}, p.errorf(line, "a zero job's region has - for its source offset")
	}
	for i, v := range []*int64{&r.SrcOffset, &r.Length, &r.DestOffset} {
		if *v, err = parseNum(f[i]); err != nil {
			return Region{}, p.errorf(line, "region: %v", err)
		}
	}
	return r, nil
}

// status is the parsed status line.
type status struct {
	line   int
	time   string
	counts string // "WORD done N failed N untried N", compared with the ranges
}

// parseStatus reads `status WORD TIME done N failed N untried N`.
func (p *parser) parseStatus() (status, error) {
	f, line, err := p.expect("status", 8)
	if err != nil {
		return status{}, err
	}
	if _, err := time.Parse(time.RFC3339, f[1]); err != nil {
		return status{}, p.errorf(line, "status time %q is not RFC 3339", f[1])
	}
	return status{line: line, time: f[1], counts: strings.Join(append([]string{f[0]}, f[2:]...), " ")}, nil
}

// parseRanges reads the range lines to the end of the body and checks
// that they cover the job exactly, in order, merged.
func (p *parser) parseRanges(j Job) ([]Range, error) {
	var rs []Range
	var next int64 // where the next range must start
	total := j.Length()
	for {
		f, line, ok, err := p.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			if next != total {
				return nil, p.errorf(line, "the ranges end at %d but the job is %d bytes", next, total)
			}
			return rs, nil
		}
		r, err := parseRange(f, j)
		if err != nil {
			return nil, p.errorf(line, "%v", err)
		}
		switch {
		case r.Off != next:
			return nil, p.errorf(line, "range starts at %d; the previous one ended at %d", r.Off, next)
		case r.Len > total-next:
			return nil, p.errorf(line, "range [%d, +%d) runs past the job's end %d", r.Off, r.Len, total)
		case len(rs) > 0 && rs[len(rs)-1].same(r):
			return nil, p.errorf(line, "range has the state of the one before; they must be one line")
		case len(rs) == maxLoadRanges:
			return nil, p.errorf(line, "more than %d ranges", maxLoadRanges)
		}
		rs = append(rs, r)
		next = r.End()
	}
}

// parseRange parses `OFFSET LENGTH STATE` of job j.
func parseRange(f []string, j Job) (Range, error) {
	if len(f) < 3 || len(f) > 4 {
		return Range{}, fmt.Errorf("want OFFSET LENGTH STATE, got %q", strings.Join(f, " "))
	}
	var r Range
	var err error
	if r.Off, err = parseNum(f[0]); err != nil {
		return Range{}, err
	}
	if r.Len, err = parseNum(f[1]); err != nil || r.Len == 0 {
		return Range{}, fmt.Errorf("length %q: want a number of bytes above 0", f[1])
	}
	switch state := strings.Join(f[2:], " "); {
	case state == "done":
		r.State = Done
	case state == "untried":
		r.State = Untried
	case state == "failed read" && j.Kind == KindCopy:
		r.State = Failed
	case strings.HasPrefix(state, "failed write="):
		r.State = Failed
		if r.Dests, err = parseDests(strings.TrimPrefix(state, "failed write="), len(j.Dests)); err != nil {
			return Range{}, err
		}
	default:
		return Range{}, fmt.Errorf("state %q: want done, untried, failed read (copy only) or failed write=LIST", state)
	}
	return r, nil
}

// parseDests parses "0,2,5": ascending destination indexes below n.
func parseDests(s string, n int) (DestSet, error) {
	var set DestSet
	last := -1
	for _, d := range strings.Split(s, ",") {
		i, err := strconv.Atoi(d)
		if err != nil || i <= last || i >= n || strconv.Itoa(i) != d {
			return 0, fmt.Errorf("failed write=%s: want ascending destination indexes below %d", s, n)
		}
		set |= 1 << i
		last = i
	}
	return set, nil
}
