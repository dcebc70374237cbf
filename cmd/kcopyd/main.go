// Command kcopyd copies, zeroes and compares byte ranges of files, block
// devices and NBD exports with the kcopyd engine: each chunk of the source
// is read once and written to up to 8 destinations in parallel.
//
// Run "kcopyd help" for usage, options and exit statuses.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes the command line args with the given standard streams and
// returns the process exit status. The first SIGINT or SIGTERM cancels the
// running command, which finishes the I/O in flight and reports; a second
// one ends the process at once with exitInterrupted, even when kcopyd was
// started with SIGINT ignored ("cmd &" in a non-interactive shell). SIGPIPE
// is ignored: a reader of stdout or stderr that went away (kcopyd ... 2>&1
// | head) must not kill a copy half-way; its writes fail, the run goes on,
// and the exit status still tells the outcome.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	signal.Ignore(syscall.SIGPIPE)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	finished := make(chan struct{})
	defer close(finished)
	go handleSignals(sigs, cancel, finished, stderr)
	return runContext(ctx, args, stdin, stdout, stderr)
}

// handleSignals cancels the command at the first signal on sigs and
// exits the process at the second, until finished is closed.
func handleSignals(sigs <-chan os.Signal, cancel context.CancelFunc, finished <-chan struct{}, stderr io.Writer) {
	select {
	case s := <-sigs:
		fmt.Fprintf(stderr, "kcopyd: interrupted (%v): finishing the I/O in flight; interrupt again to quit at once\n", s)
		cancel()
	case <-finished:
		return
	}
	select {
	case s := <-sigs:
		fmt.Fprintf(stderr, "kcopyd: interrupted again (%v): quitting at once; the I/O in flight may or may not have reached the destinations, which were not flushed\n", s)
		os.Exit(exitInterrupted)
	case <-finished:
	}
}

// runContext is run with the cancellation context supplied by the caller.
func runContext(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	// The progress display and the rate file watcher write to stderr from
	// their own goroutines.
	stderr = &lockedWriter{w: stderr}
	env := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRootCmd(env)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		ee = &exitError{code: exitUsage, err: err}
	}
	if ee.err != nil && !ee.reported {
		fmt.Fprintf(stderr, "kcopyd: %v\n", ee.err)
		if ee.code == exitUsage && !ee.noHint {
			fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", commandPath(root, args))
		}
	}
	return ee.code
}

// commandPath returns "kcopyd SUB" for the subcommand args name, or
// "kcopyd".
func commandPath(root *cobra.Command, args []string) string {
	if c, _, err := root.Find(args); err == nil && c != nil {
		return c.CommandPath()
	}
	return root.CommandPath()
}

// newRootCmd builds the kcopyd command tree.
func newRootCmd(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "kcopyd",
		Short: "Copy, zero and verify byte ranges of files, block devices and NBD exports",
		Long: `kcopyd copies a region of a SOURCE to up to 8 destinations at once, reading
each chunk once (the Linux dm-kcopyd engine, in user space). It also zeroes
regions and compares them.

Locations are paths of regular files or block devices, or NBD URLs
(nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH, nbds://, nbds+unix://).

` + exitStatusHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SetOut(e.stderr)
			_ = cmd.Help()
			return &exitError{code: exitUsage, err: errors.New("no command given"), noHint: true}
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &exitError{code: exitUsage, err: err}
	})
	root.AddCommand(newCopyCmd(e), newZeroCmd(e), newVerifyCmd(e), newVersionCmd(e))
	root.AddCommand(newServeCmd(e))
	root.AddCommand(newCloneCmd(e))
	return root
}
