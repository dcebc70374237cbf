package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func newVersionCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version of kcopyd and of Go it was built with",
		Args:    cobra.NoArgs,
		Example: "  kcopyd version",
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprint(e.stdout, versionText())
			return nil
		},
	}
}

// versionText returns "kcopyd VERSION" (the module version, plus the VCS
// revision when the build recorded one) and the Go version.
func versionText() string {
	version, rev, dirty := "(unknown)", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	s := "kcopyd " + version
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		s += " (" + rev
		if dirty {
			s += ", modified"
		}
		s += ")"
	}
	return fmt.Sprintf("%s\n%s %s/%s\n", s, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
