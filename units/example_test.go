package units_test

import (
	"fmt"

	"github.com/kcopyd/kcopyd/units"
)

// Sizes and rates as the kcopyd command reads and prints them.
func Example() {
	n, _ := units.ParseSize("64K")
	sectors, _ := units.ParseSize("8s")
	rate, _ := units.ParseRate("50M/s\n")
	_, err := units.ParseSize("1.5G")
	fmt.Println(n, sectors, units.FormatSize(n), units.FormatRate(rate), units.HumanSize(1.5*(1<<30)))
	fmt.Println(err)
	// Output:
	// 65536 4096 64KiB 50MiB/s 1.5 GiB
	// bad size "1.5G": want a whole number of bytes with an optional suffix k/K/KiB, M/MiB, G/GiB, T/TiB (powers of 1024) or s (512-byte sectors)
}
