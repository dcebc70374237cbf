package mapfile

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestCheckMismatch(t *testing.T) {
	base := copyJob(1<<20, 2)
	tests := []struct {
		name   string
		change func(j *Job)
		what   string // MismatchError.What; "" for a match
	}{
		{"same", func(j *Job) {}, ""},
		{"renamed source", func(j *Job) { j.Source.Name = "/abs/disk.img" }, ""},
		{"renamed dest", func(j *Job) { j.Dests[1].Name = "./copy1.img" }, ""},
		{"other chunk size", func(j *Job) { j.ChunkSize = 512 << 10 }, ""},
		{"kind", func(j *Job) { j.Kind = KindZero; j.Source = Location{} }, "kind"},
		{"other source", func(j *Job) { j.Source.ID = "file:2049:7" }, "source identity"},
		{"source size", func(j *Job) { j.Source.Size++ }, "source size"},
		{"other dest", func(j *Job) { j.Dests[1].ID = "nbd://host/x" }, "destination 1 identity"},
		{"dest size", func(j *Job) { j.Dests[0].Size = 1 << 30 }, "destination 0 size"},
		{"dests swapped", func(j *Job) { j.Dests[0], j.Dests[1] = j.Dests[1], j.Dests[0] }, "destination 0 identity"},
		{"fewer dests", func(j *Job) { j.Dests = j.Dests[:1] }, "number of destinations"},
		{"more regions", func(j *Job) { j.Regions = append(j.Regions, Region{Length: 1}) }, "number of regions"},
		{"region offset", func(j *Job) { j.Regions[0].SrcOffset = 4096 }, "region 0 (source offset, length, destination offset)"},
		{"region length", func(j *Job) { j.Regions[0].Length = 4096 }, "region 0 (source offset, length, destination offset)"},
		{"dest offset", func(j *Job) { j.Regions[0].DestOffset = 1 }, "region 0 (source offset, length, destination offset)"},
	}
	m := mustNew(t, base)
	for _, tt := range tests {
		j := base.clone()
		tt.change(&j)
		err := m.Check(j)
		var me *MismatchError
		switch {
		case tt.what == "" && err != nil:
			t.Errorf("%s: Check = %v; want nil", tt.name, err)
		case tt.what == "":
		case !errors.As(err, &me) || !errors.Is(err, ErrMismatch) || me.What != tt.what:
			t.Errorf("%s: Check = %v; want a *MismatchError about %q", tt.name, err, tt.what)
		case !strings.Contains(err.Error(), "in the map but"):
			t.Errorf("%s: message %q does not give both values", tt.name, err)
		}
	}
	if err := m.Check(base); err != nil {
		t.Errorf("the map's job changed with the caller's slices: %v", err)
	}
}

func TestNewRefusesBadJobs(t *testing.T) {
	tests := []struct {
		name   string
		change func(j *Job)
	}{
		{"kind", func(j *Job) { j.Kind = "move" }},
		{"no dests", func(j *Job) { j.Dests = nil }},
		{"nine dests", func(j *Job) { j.Dests = append(j.Dests, make([]Location, 8)...) }},
		{"empty source id", func(j *Job) { j.Source.ID = "" }},
		{"empty dest id", func(j *Job) { j.Dests[0].ID = "" }},
		{"negative size", func(j *Job) { j.Dests[0].Size = -1 }},
		{"NUL in name", func(j *Job) { j.Dests[0].Name = "a\x00b" }},
		{"zero with source", func(j *Job) { j.Kind = KindZero }},
		{"zero source offset", func(j *Job) { j.Kind = KindZero; j.Source = Location{}; j.Regions[0].SrcOffset = 1 }},
		{"empty region", func(j *Job) { j.Regions[0].Length = 0 }},
		{"negative offset", func(j *Job) { j.Regions[0].DestOffset = -1 }},
		{"negative chunk", func(j *Job) { j.ChunkSize = -1 }},
		{"total overflow", func(j *Job) {
			j.Regions = []Region{{Length: math.MaxInt64}, {Length: 1}}
		}},
		{"offset overflow", func(j *Job) { j.Regions[0].SrcOffset = math.MaxInt64 }},
	}
	for _, tt := range tests {
		j := copyJob(100, 1)
		tt.change(&j)
		if m, err := New(j); !errors.Is(err, ErrBadJob) {
			t.Errorf("%s: New = %v, %v; want ErrBadJob", tt.name, m, err)
		}
	}
}

func TestJobSplit(t *testing.T) {
	j := copyJob(0, 1)
	j.Regions = []Region{{SrcOffset: 1000, Length: 10, DestOffset: 0}, {SrcOffset: 0, Length: 5, DestOffset: 100}, {SrcOffset: 50, Length: 20, DestOffset: 200}}
	var got []string
	for i, r := range j.Split(8, 20) {
		got = append(got, strings.TrimSpace(strings.Join([]string{string(rune('0' + i)), regionString(KindCopy, r)}, ":")))
	}
	want := "0:1008 2 8 1:0 5 100 2:50 13 200"
	if s := strings.Join(got, " "); s != want {
		t.Errorf("Split(8, 20) = %s; want %s", s, want)
	}
	if j.Length() != 35 {
		t.Errorf("Length() = %d; want 35", j.Length())
	}
	for range j.Split(40, 10) {
		t.Errorf("Split past the end yielded a piece")
	}
}
