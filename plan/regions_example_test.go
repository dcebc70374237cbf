package plan_test

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kcopyd/kcopyd/plan"
	"github.com/kcopyd/kcopyd/units"
)

// Read a regions file as kcopyd copy --regions does.
func ExampleParseRegions() {
	regions, err := plan.ParseRegions(strings.NewReader(`# SRC_OFFSET LENGTH DEST_OFFSET
0    1M  4M
2048s 8s 0   # sectors of 512 bytes
`), plan.CopyRegions)
	if err != nil {
		panic(err)
	}
	for _, r := range regions {
		fmt.Printf("line %d: %d bytes from %d to %d\n", r.Line, r.Len, r.Src, r.Dest)
	}
	_, err = plan.ParseRegions(strings.NewReader("0 4K 0\n0 4X 0\n"), plan.CopyRegions)
	var le *plan.RegionsLineError
	fmt.Println(errors.As(err, &le), le.Line, errors.Is(err, units.ErrBadSize))
	// Output:
	// line 2: 1048576 bytes from 0 to 4194304
	// line 3: 4096 bytes from 1048576 to 0
	// true 2 true
}
