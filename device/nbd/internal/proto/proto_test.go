package proto

import (
	"errors"
	"slices"
	"testing"
)

// TestRoundTrip checks that what the client encodes the server decodes.
func TestRoundTrip(t *testing.T) {
	name, infos, err := ParseGoData(GoData("disk", InfoExport, InfoBlockSize))
	if err != nil || name != "disk" || !slices.Equal(infos, []uint16{InfoExport, InfoBlockSize}) {
		t.Errorf("ParseGoData(GoData(disk, 0, 3)) = %q, %v, %v", name, infos, err)
	}
	name, qs, err := ParseMetaContextData(MetaContextData("", "base:allocation", "x:"))
	if err != nil || name != "" || !slices.Equal(qs, []string{"base:allocation", "x:"}) {
		t.Errorf("ParseMetaContextData(MetaContextData) = %q, %q, %v", name, qs, err)
	}
	req := Request{Flags: CmdFlagFUA, Type: CmdWrite, Cookie: 7, Offset: 1 << 40, Length: 4096}
	var b [RequestSize]byte
	req.Put(&b)
	if got, err := ParseRequest(b[:]); err != nil || got != req {
		t.Errorf("ParseRequest(Put(%+v)) = %+v, %v", req, got, err)
	}
	h, err := ParseOptHeader(AppendOption(nil, OptGo, make([]byte, 9))[:OptHeaderSize])
	if err != nil || h != (OptHeader{Option: OptGo, Length: 9}) {
		t.Errorf("ParseOptHeader = %+v, %v", h, err)
	}
	if in, err := ParseInfo(AppendInfoBlockSize(nil, BlockSize{1, 4096, 1 << 25})); err != nil || in.BlockSize != (BlockSize{1, 4096, 1 << 25}) {
		t.Errorf("ParseInfo(AppendInfoBlockSize) = %+v, %v", in, err)
	}
	ec := AppendErrorChunk(nil, 3, EIO, "boom")
	c, err := ParseChunk(ec[:StructuredHeaderSize])
	if err != nil || c.Cookie != 3 || !c.Done() {
		t.Fatalf("ParseChunk(AppendErrorChunk) = %+v, %v", c, err)
	}
	if e, err := ParseErrorChunk(c.Type, ec[StructuredHeaderSize:]); err != nil || e.Error != EIO || e.Message != "boom" {
		t.Errorf("ParseErrorChunk = %+v, %v", e, err)
	}
}

// TestParseMalformed checks that client data that lies about its lengths
// is refused with ErrMalformed.
func TestParseMalformed(t *testing.T) {
	for _, b := range [][]byte{
		nil,
		{0, 0, 0, 5, 'a', 0, 0},        // name longer than the data
		{0, 0, 0, 1, 'a', 0, 2, 0, 0},  // two infos announced, one sent
		append(GoData("x"), 0),         // trailing byte
		{0xff, 0xff, 0xff, 0xff, 0, 0}, // huge name length
		append([]byte{0, 0, 0, 0}, 0xff, 0xff, 0, 0), // meta: 4 billion queries
	} {
		if _, _, err := ParseGoData(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseGoData(%x) = %v; want ErrMalformed", b, err)
		}
		if _, _, err := ParseMetaContextData(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseMetaContextData(%x) = %v; want ErrMalformed", b, err)
		}
	}
	if _, err := ParseRequest(make([]byte, RequestSize)); !errors.Is(err, ErrMalformed) {
		t.Errorf("ParseRequest(zeroes) = %v; want ErrMalformed", err)
	}
	if _, err := ParseOptHeader(make([]byte, OptHeaderSize)); !errors.Is(err, ErrMalformed) {
		t.Errorf("ParseOptHeader(zeroes) = %v; want ErrMalformed", err)
	}
}
