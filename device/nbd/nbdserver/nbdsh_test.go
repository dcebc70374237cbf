package nbdserver_test

import (
	"strings"
	"testing"

	"github.com/kcopyd/kcopyd/device/nbd/nbdserver"
	"github.com/kcopyd/kcopyd/internal/testutil"
)

// nbdshScript runs in nbdsh once h asked for base:allocation and is
// connected. It checks the negotiated capabilities, then turns libnbd's
// client-side checks off and sends what a careless client would, checking
// the server's error values.
const nbdshScript = `
import errno
size = h.get_size()
assert size == 1048576, size
assert h.can_multi_conn() and h.can_fast_zero() and h.can_df() and h.can_fua()
assert h.can_meta_context("base:allocation")
assert h.get_block_size(nbd.SIZE_MAXIMUM) == 32 << 20
h.pwrite(b"\x11" * 65536, 0, nbd.CMD_FLAG_FUA)
assert h.pread(65536, 0) == b"\x11" * 65536

def expect(f, name):
    try:
        f()
    except nbd.Error as e:
        assert e.errno == name, "%s: want %s" % (e, name)
    else:
        raise AssertionError("no error; want " + name)

h.set_strict_mode(0)
expect(lambda: h.pread(512, size), "EINVAL")
expect(lambda: h.pwrite(b"x" * 512, size - 256), "ENOSPC")
expect(lambda: h.trim(512, size), "EINVAL")
expect(lambda: h.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO), "ENOTSUP")
expect(lambda: h.pread(512, 0, nbd.CMD_FLAG_REQ_ONE), "EINVAL")
h.zero(4096, 0)
assert h.pread(4096, 0) == bytes(4096)

seen = []
def extent(meta, off, entries, err):
    seen.append((meta, off, list(entries)))
h.block_status(size, 0, extent)
# noZero hides Extents too: a device that cannot tell is all data.
assert seen == [("base:allocation", 0, [size, 0])], seen
h.flush()
print("ok")
`

func TestNbdsh(t *testing.T) {
	m := memDev(t, 1<<20)
	s := serve(t, noZero{m}, &nbdserver.Options{})
	out := run(t, "nbdsh", "-c", `h.add_meta_context("base:allocation")`, "-c", "h.connect_uri(\""+s.uri+"\")", "-c", nbdshScript)
	if strings.TrimSpace(out) != "ok" {
		t.Fatalf("nbdsh: %s", out)
	}
	if !testutil.CheckZero(t, m, 0, 4096) {
		t.Error("h.zero did not zero")
	}
}
