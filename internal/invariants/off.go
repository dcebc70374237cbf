//go:build !invariants

package invariants

// Enabled is true when the build has the "invariants" tag.
const Enabled = false
