package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/kcopyd/kcopyd"
	"github.com/kcopyd/kcopyd/clone"
	"github.com/kcopyd/kcopyd/clone/cloneserver"
	"github.com/kcopyd/kcopyd/device/nbd/nbdserver"
	"github.com/kcopyd/kcopyd/ratefile"
)

const cloneLong = `Serve SOURCE over NBD at once while copying it to DEST in the background
(dm-clone in user space): the export has SOURCE's size; reads of regions not
copied yet go to SOURCE, writes go to DEST, and the rest of SOURCE is
copied in ascending order, throttled, yielding to clients. Progress is kept
in the --metadata FILE, so that after a crash (kill -9, power loss) the same
command resumes where it stopped, losing no write a client saw flushed.

SOURCE is a file, a block device or an NBD URL; it must not change while
the clone runs. DEST is a file or block device at least as large as SOURCE
(--create makes a missing file). The metadata file is created on the first
run and must belong to the same SOURCE, DEST and region size afterwards.

Regions (--region-size, 4KiB to 1GiB, a power of two; default: the
metadata's, else 64KiB): a write covering whole regions not copied yet is
written without copying them; a partial write copies its region first
(expecting many small random writes early, from a slow SOURCE? --region-size
4K makes them cheapest, at 16 times the metadata). A
trim of whole regions marks them copied without copying (their contents are
then unspecified) and is passed to DEST when it can discard. The metadata is
committed on every NBD flush and FUA write and at least once a second.

Exactly one of --socket or --listen is required; the export's NBD URL is
printed on standard output (on standard error with --json). SIGINT or
SIGTERM stop the clone cleanly at any time: requests in flight are
answered, DEST is flushed and the metadata committed. With --until-hydrated
kcopyd exits once every region is copied, the metadata committed and every
client disconnected.

TLS for the export: --tls-certificates DIR and --tls-verify-peer, as for
kcopyd serve. The NBD client options apply to an NBD SOURCE.

Exit status:
  0    stopped (by a signal, or --until-hydrated once hydrated)
  1    bad usage or input; nothing was written
  3    the final commit (DEST flush, metadata write) or the listener failed
  130  interrupted with --until-hydrated before every region was copied;
       the next run resumes`

const cloneExample = `  # restore a backup from a slow NBD store; use it at once on /run/vm.sock
  kcopyd clone nbd://backup/vm1 /dev/vg/vm1 --metadata vm1.clone --socket /run/vm.sock

  # clone an image into a new file, 50 MB/s at most, until it is complete
  kcopyd clone --create --rate 50M --until-hydrated disk.img copy.img \
      --metadata copy.clone --listen 127.0.0.1:10809`

// cloneOptions are the flags of kcopyd clone. The throttle, progress and
// NBD client flags live in the shared options.
type cloneOptions struct {
	options
	serve         serveOptions
	metadata      string
	regionSize    sizeFlag
	batchSize     int
	untilHydrated bool
}

func newCloneCmd(e *env) *cobra.Command {
	o := &cloneOptions{}
	cmd := &cobra.Command{
		Use:     "clone [options] SOURCE DEST --metadata FILE (--socket PATH | --listen HOST:PORT)",
		Short:   "Serve SOURCE over NBD at once while copying it to DEST (dm-clone)",
		Long:    cloneLong + "\n\n" + nbdHelp,
		Example: cloneExample,
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClone(cmd.Context(), e, o, cmd, args)
		},
	}
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&o.metadata, "metadata", "", "keep the clone's progress in `FILE` (created on the first run)")
	f.StringVar(&o.serve.socket, "socket", "", "serve on the Unix socket `PATH`")
	f.StringVar(&o.serve.listen, "listen", "", "serve on TCP `HOST:PORT`")
	f.StringVar(&o.serve.export, "export", "", "export `NAME` (default: the empty name)")
	f.Var(&o.regionSize, "region-size", "region `SIZE`, a power of two from 4KiB to 1GiB (default: the metadata's, else 64KiB)")
	f.IntVar(&o.batchSize, "batch-size", 0, "copy at most `N` contiguous regions per background job (default: 4MiB worth)")
	f.IntVar(&o.throttle, "throttle", 100, "let background copying use the disks at most `PERCENT` of the time (1..100)")
	f.Var(&o.rate, "rate", "limit background copying to `SIZE` bytes per second (0 = unlimited)")
	f.StringVar(&o.rateFile, "rate-file", "", "poll `FILE` once a second for a new rate (a SIZE per second, 0 = unlimited)")
	f.BoolVar(&o.create, "create", false, "create DEST as a file of SOURCE's size when it does not exist")
	f.BoolVar(&o.untilHydrated, "until-hydrated", false, "exit once every region is copied and every client disconnected")
	f.StringVar(&o.serve.tlsDir, "tls-certificates", "", "require TLS on the export with the server certificate and key in `DIR`")
	f.BoolVar(&o.serve.tlsVerifyPeer, "tls-verify-peer", false, "require client certificates signed by DIR/ca-cert.pem")
	o.registerCommon(cmd, "print one JSON object with the clone's status on stdout at exit")
	return cmd
}

// check validates the command line before anything is opened.
func (o *cloneOptions) check(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) != 2:
		return usageErrorf("clone needs SOURCE and DEST, got %d arguments", len(args))
	case o.metadata == "":
		return usageErrorf("clone needs --metadata FILE")
	case o.throttle < 1 || o.throttle > 100:
		return usageErrorf("--throttle must be a percentage between 1 and 100, got %d", o.throttle)
	case o.batchSize < 0:
		return usageErrorf("--batch-size must be positive")
	case o.progressInterval <= 0:
		return usageErrorf("--progress-interval must be positive")
	}
	if o.regionSize.set && !clone.ValidRegionSize(o.regionSize.n) {
		return usageErrorf("--region-size must be a power of two from 4KiB to 1GiB, got %d", o.regionSize.n)
	}
	if err := o.serve.check(args[:1]); err != nil {
		return err
	}
	return o.nbd.check(cmd, args[:1])
}

// cloneRun is one run of kcopyd clone.
type cloneRun struct {
	e     *env
	o     *cloneOptions
	s     *cloneserver.Server
	url   string
	start time.Time
}

func runClone(ctx context.Context, e *env, o *cloneOptions, cmd *cobra.Command, args []string) error {
	if err := o.check(cmd, args); err != nil {
		return err
	}
	tc, err := o.serve.tlsConfig()
	if err != nil {
		return inputError(err)
	}
	th, rateContent, err := o.newThrottle()
	if err != nil {
		return err
	}
	ln, err := o.serve.listenOn()
	if err != nil {
		return inputError(err)
	}
	if o.serve.socket != "" {
		defer os.Remove(o.serve.socket)
	}
	r := &cloneRun{e: e, o: o, start: time.Now()}
	if r.s, err = cloneserver.Open(ctx, r.config(args, th, tc)); err != nil {
		ln.Close()
		return inputError(err)
	}
	r.url = nbdserver.ExportURL(ln.Addr(), o.serve.export, tc != nil)
	if o.json {
		fmt.Fprintf(e.stderr, "kcopyd: clone: serving %s\n", r.url)
	} else {
		fmt.Fprintln(e.stdout, r.url)
	}
	defer ratefile.Watch(ctx, o.rateFile, rateContent, r.s.Clone.Throttle(), rateReport(e.stderr, o.rateFile))()
	serveErr := r.s.Serve(ctx, ln)
	if !o.quiet && isTerminal(e.stderr) {
		fmt.Fprint(e.stderr, "\r\033[K") // the last progress line
	}
	return r.finish(ctx.Err() != nil, serveErr)
}

// config maps the flags to the clone's configuration.
func (r *cloneRun) config(args []string, th *kcopyd.Throttle, tc *tls.Config) *cloneserver.Config {
	o := r.o
	c := &cloneserver.Config{
		Source: args[0], Dest: args[1], CreateDest: o.create, Metadata: o.metadata,
		Clone: clone.Options{RegionSize: o.regionSize.n, BatchSize: o.batchSize, Throttle: th},
		// buffered: the clone serves NBD requests of any alignment.
		Location:      *openMode{buffered: true, keepCache: true, nbd: &o.nbd}.options(),
		NBD:           *o.serve.serverOptions(r.e, "clone", tc),
		UntilHydrated: o.untilHydrated,
		Names:         cloneserver.Names{CreateDest: "--create", Metadata: "--metadata"},
	}
	if !o.quiet {
		c.Progress, c.ProgressInterval = r.progress(), o.progressInterval
		if isTerminal(r.e.stderr) {
			c.ProgressInterval = time.Second
		}
	}
	return c
}

// progress returns the progress display: a line rewritten in place on a
// terminal, a line every --progress-interval otherwise.
func (r *cloneRun) progress() func(clone.Status) {
	tty := isTerminal(r.e.stderr)
	return func(st clone.Status) {
		if line := "kcopyd: clone: " + st.String(); tty {
			fmt.Fprint(r.e.stderr, "\r\033[K"+line)
		} else {
			fmt.Fprintln(r.e.stderr, line)
		}
	}
}

// finish closes the clone and the devices, reports, and returns the exit
// status.
func (r *cloneRun) finish(interrupted bool, serveErr error) error {
	closeErr := r.s.Close()
	st := r.s.Clone.Status()
	if !r.o.quiet {
		fmt.Fprintln(r.e.stderr, "kcopyd: clone: "+st.String())
	}
	var err error
	switch {
	case closeErr != nil:
		err = &exitError{code: exitWriteError, err: fmt.Errorf("clone: closing: %w", closeErr)}
	case serveErr != nil:
		err = &exitError{code: exitWriteError, err: serveErr}
	case interrupted && r.o.untilHydrated && !st.Done:
		err = &exitError{code: exitInterrupted, err: errors.New("interrupted before every region was copied; run the same command again to resume")}
	}
	if r.o.json {
		if jerr := r.report(st, err); jerr != nil && err == nil {
			err = &exitError{code: exitWriteError, err: jerr}
		}
	}
	return err
}

// cloneReport is the --json output.
type cloneReport struct {
	Source   string  `json:"source"`
	Dest     string  `json:"dest"`
	Metadata string  `json:"metadata"`
	URL      string  `json:"url"`
	Seconds  float64 `json:"seconds"`
	clone.Status
	Error *string `json:"error"`
}

func (r *cloneRun) report(st clone.Status, err error) error {
	rep := cloneReport{
		Source: r.s.Source.Spec, Dest: r.s.Dest.Spec, Metadata: r.o.metadata, URL: r.url,
		Seconds: time.Since(r.start).Seconds(), Status: st, Error: errPtr(err),
	}
	enc := json.NewEncoder(r.e.stdout)
	return enc.Encode(rep)
}
