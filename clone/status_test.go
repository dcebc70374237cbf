package clone_test

import (
	"testing"

	"github.com/kcopyd/kcopyd/clone"
)

func TestStatusString(t *testing.T) {
	const M = 1 << 20
	for _, tt := range []struct {
		st   clone.Status
		want string
	}{
		{clone.Status{Size: 4 * M, HydratedBytes: M}, "1.0 MiB of 4.0 MiB hydrated (25.0%)"},
		{clone.Status{Size: 4 * M, HydratedBytes: M, Rate: M}, "1.0 MiB of 4.0 MiB hydrated (25.0%), 1.0 MiB/s, ETA 3s"},
		{clone.Status{Size: 4 * M, HydratedBytes: 2 * M, Rate: M, FailedRegions: 2, LastError: "read: EIO"},
			"2.0 MiB of 4.0 MiB hydrated (50.0%), 1.0 MiB/s, ETA 2s, 2 regions failed to copy (retrying): read: EIO"},
		{clone.Status{Size: 4 * M, HydratedBytes: 4 * M, Rate: M, Done: true}, "4.0 MiB of 4.0 MiB hydrated (100.0%), complete"},
	} {
		if got := tt.st.String(); got != tt.want {
			t.Errorf("%+v.String() = %q; want %q", tt.st, got, tt.want)
		}
	}
}

func TestValidRegionSize(t *testing.T) {
	for rs, want := range map[int64]bool{
		0: false, 2048: false, 4096: true, 12 << 10: false, 64 << 10: true, 1 << 30: true, 2 << 30: false, -4096: false,
	} {
		if got := clone.ValidRegionSize(rs); got != want {
			t.Errorf("ValidRegionSize(%d) = %v; want %v", rs, got, want)
		}
	}
}
