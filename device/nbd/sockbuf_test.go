package nbd_test

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/kcopyd/kcopyd/device/nbd"
)

// TestSocketBuffer checks that a Unix-socket connection gets the send
// buffer Config.SocketBuffer asks for (the kernel reports twice the size
// set; as root even above net.core.wmem_max), and the kernel's default
// when it is negative.
func TestSocketBuffer(t *testing.T) {
	srv := nbdkit(t, "memory", "1M")
	sndbuf := func(cfg *nbd.Config) int {
		n, err := nbd.SendBuffer(open(t, srv.ExportURI(""), cfg))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	def := sndbuf(&nbd.Config{SocketBuffer: -1})
	want := nbd.DefaultSocketBuffer
	if os.Geteuid() != 0 {
		// Without CAP_NET_ADMIN the kernel caps it at wmem_max.
		b, err := os.ReadFile("/proc/sys/net/core/wmem_max")
		if err != nil {
			t.Skipf("not root, and cannot read net.core.wmem_max: %v", err)
		}
		wmemMax, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		want = min(wmemMax, want)
	}
	if want <= def/2 {
		t.Skipf("not root, and net.core.wmem_max is not above the default send buffer (%d): nothing to see", def/2)
	}
	if got := sndbuf(nil); got < want {
		t.Errorf("SO_SNDBUF with the default SocketBuffer = %d; want at least %d (the kernel's default: %d)", got, want, def)
	}
}
