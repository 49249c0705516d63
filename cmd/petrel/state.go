package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/petrel-vmm/petrel/core/policy"
	"github.com/petrel-vmm/petrel/core/statedump"
	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// defaultDataDir is petreld's default state directory, for the commands
// that read it directly.
const defaultDataDir = "/var/lib/petrel"

// dataDirHelp describes --data-dir of the commands that read a data
// directory, which follow the running petreld's.
const dataDirHelp = "petreld's state directory (default: the running petreld's, else " + defaultDataDir + ")"

// dataDir is the data directory a state command reads: --data-dir when
// given, else the one the petreld at --socket says it uses, so that a
// daemon configured with another directory is inspected where it keeps
// its state, else the default. Where the answer came from is said on
// standard error.
func (a *app) dataDir(cmd *cobra.Command, flagValue string) string {
	if cmd.Flags().Changed("data-dir") {
		return flagValue
	}
	if dir := a.daemonDataDir(); dir != "" {
		if dir != defaultDataDir {
			fmt.Fprintf(a.errw, "petrel: reading %s, the data directory of the petreld at %s (--data-dir to choose another)\n", dir, a.socketPath())
		}
		return dir
	}
	return defaultDataDir
}

// daemonDataDir asks the petreld at --socket for its data directory,
// returning "" when none answers within two seconds (not running, or
// too old to say).
func (a *app) daemonDataDir() string {
	c, err := client.Dial(a.socketPath())
	if err != nil {
		return ""
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := c.API.Host(ctx, &daemonv1.HostRequest{})
	if err != nil {
		return ""
	}
	return res.GetDataDir()
}

func (a *app) stateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "state",
		Short: "Inspect, export and import petreld's state directory",
		Long: `Work on petreld's data directory directly, on the host, without petreld:
the VM records, delegated policies, unikernel images and block devices.

  petrel state inspect                         what petreld's data directory holds, and what is wrong with it
  petrel state export -o host1.tar.gz          stop petreld first (or add --live)
  petrel state import host1.tar.gz --data-dir /var/lib/petrel
                                               into a new or empty directory, then start petreld

An export keeps the schema it was written with; import (like petreld
itself) migrates state from every earlier schema version. Block device
contents are exported only with --blocks. VMs recorded as running are
started again when petreld next starts, in --startup order, as after a
host reboot; on the host and boot that exported them, petreld reattaches
to those still running instead.

These commands work on this host's files only: they take no --destination.`,
		Args: args(cobra.NoArgs),
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if a.remote.destination != "" || a.remote.csrFile != "" {
				return usageError{fmt.Errorf("%s works on this host's data directory and cannot run remotely (no --destination or --csr)", cmd.CommandPath())}
			}
			return nil
		},
	}
	cmd.AddCommand(a.stateInspectCmd(), a.stateExportCmd(), a.stateImportCmd())
	return cmd
}

func (a *app) stateInspectCmd() *cobra.Command {
	var dataDir string
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "inspect [DIR | EXPORT]",
		Short: "Show what a data directory or an export holds",
		Long: `Show the schema version, VMs, policies, images, block devices and
quarantined records of a data directory (--data-dir; by default the
running petreld's, wherever its configuration puts it, else
/var/lib/petrel) or of an archive written by "petrel state export", and
list problems: damaged records or images, VMs whose image or block device
is missing.

It reads without locking or changing anything, so it is safe while
petreld runs. Exits 1 when it finds problems.`,
		Example: `  petrel state inspect
  petrel state inspect --json /srv/backup/host1.tar.gz`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			src := a.dataDir(cmd, dataDir)
			if len(pos) == 1 {
				src = pos[0]
			}
			rep, err := inspectSource(src)
			if err != nil {
				return err
			}
			if jsonOut {
				enc := json.NewEncoder(a.out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printReport(a.out, rep)
			}
			if len(rep.Problems) > 0 {
				return fmt.Errorf("%s: %d problem(s) found", src, len(rep.Problems))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", dataDirHelp)
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON (every record in full)")
	return cmd
}

// inspectSource inspects a directory, or an archive file ("-" is
// standard input).
func inspectSource(src string) (*statedump.Report, error) {
	if src == "-" {
		return statedump.InspectArchive(os.Stdin, "standard input")
	}
	fi, err := os.Stat(src)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return statedump.InspectDir(src, true)
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return statedump.InspectArchive(f, src)
}

func printReport(w io.Writer, r *statedump.Report) {
	kind := "data directory"
	if r.Export != nil {
		kind = "export"
	}
	fmt.Fprintf(w, "%s %s: schema %d, created %s\n", kind, r.Source, r.Schema, r.CreatedAt.Format(time.RFC3339))
	if r.InstanceID != "" {
		fmt.Fprintf(w, "  instance %s\n", r.InstanceID)
	}
	if r.Export != nil {
		fmt.Fprintf(w, "  exported %s from %s:%s", r.Export.ExportedAt.Format(time.RFC3339), r.Export.Hostname, r.Export.Source)
		if r.Export.Live {
			fmt.Fprint(w, " (live)")
		}
		if !r.Export.Blocks {
			fmt.Fprint(w, "; block device contents not included")
		}
		fmt.Fprintln(w)
	}
	if r.Schema < r.CurrentSchema {
		fmt.Fprintf(w, "  older schema: petreld (or petrel state import) migrates it to schema %d\n", r.CurrentSchema)
	}
	if r.InUse {
		fmt.Fprintf(w, "  in use by petreld (pid %d)\n", r.HolderPID)
	}

	fmt.Fprintf(w, "\nVMs (%d):\n", len(r.VMs))
	if len(r.VMs) > 0 {
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tSTATE\tBACKEND\tMEM\tIMAGE\tRESTART\tBLOCKS\tNETS")
		for _, v := range r.VMs {
			img := v.ImageName
			if img == "" {
				img = short(v.ImageSHA256)
			}
			if !v.ImagePresent {
				img += " (missing)"
			}
			restart := "no"
			if v.Restart.OnFailure {
				restart = "on failure"
				if len(v.Restart.ExitCodes) > 0 {
					restart += fmt.Sprintf(" %v", v.Restart.ExitCodes)
				}
			}
			var blocks, nets []string
			for _, b := range v.Blocks {
				blocks = append(blocks, b.Name+"="+b.Device)
			}
			for _, n := range v.Nets {
				nets = append(nets, n.Name+"="+n.Bridge)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%dM\t%s\t%s\t%s\t%s\n", v.Name, v.State, v.Backend, v.MemoryMB, img, restart, dash(blocks), dash(nets))
		}
		tw.Flush()
	}

	for _, ps := range []struct {
		title   string
		entries []policy.Entry
	}{{"Policies", r.Policies}, {"Policies from certificates", r.CertificatePolicies}} {
		fmt.Fprintf(w, "\n%s (%d):\n", ps.title, len(ps.entries))
		if len(ps.entries) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  PATH\tVMS\tMEM\tCPUS\tBLOCK\tBRIDGES")
		for _, e := range ps.entries {
			p := e.Policy
			fmt.Fprintf(tw, "  %s\t%d\t%dM\t%v\t%dM\t%s\n", e.Path, p.VMs, p.MemoryMB, p.CPUs, p.Block(), dash(p.Bridges))
		}
		tw.Flush()
	}

	var total int64
	for _, img := range r.Images {
		total += img.Size
	}
	fmt.Fprintf(w, "\nImages (%d, %s):\n", len(r.Images), humanBytes(total))
	for _, img := range r.Images {
		used := "unused (petreld removes it)"
		if len(img.UsedBy) > 0 {
			used = "used by " + strings.Join(img.UsedBy, ", ")
		}
		fmt.Fprintf(w, "  %s  %8s  %s\n", short(img.SHA256), humanBytes(img.Size), used)
	}

	fmt.Fprintf(w, "\nBlock devices (%d):\n", len(r.Blocks))
	for _, b := range r.Blocks {
		fmt.Fprintf(w, "  %s  %s (%s on disk)  %s\n", b.Name, humanBytes(b.SizeBytes), humanBytes(b.AllocatedBytes), dash(b.UsedBy))
	}
	if len(r.Quarantined) > 0 {
		fmt.Fprintf(w, "\nQuarantined records (%d): %s\n", len(r.Quarantined), strings.Join(r.Quarantined, ", "))
	}
	for c, n := range r.OtherCollections {
		fmt.Fprintf(w, "\nCollection %s: %d records this petrel does not know\n", c, n)
	}
	if len(r.Problems) > 0 {
		fmt.Fprintf(w, "\nProblems (%d):\n", len(r.Problems))
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	} else {
		fmt.Fprintln(w, "\nNo problems found.")
	}
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func dash(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func (a *app) stateExportCmd() *cobra.Command {
	var dataDir, out string
	var blocks, live bool
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write the state directory to an archive",
		Long: `Write petreld's data directory (VM records, policies, images, and with
--blocks the block devices' contents) to a gzip-compressed tar archive
that "petrel state import" restores, on this host or another.

The export takes the directory's lock, so petreld must be stopped
(systemctl stop petreld); VMs keep running meanwhile. With --live it reads
a running petreld's directory instead: every record is read whole, but a
change made during the export may be missing. The archive is written to a
temporary file and renamed when complete.`,
		Example: `  systemctl stop petreld && petrel state export -o /srv/backup/host1.tar.gz && systemctl start petreld
  petrel state export --live --blocks -o - | ssh backup 'cat > host1.tar.gz'`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageError{errors.New("give the archive's path with -o FILE (or -o - for standard output)")}
			}
			ctx, stop := signalContext()
			defer stop()
			dataDir := a.dataDir(cmd, dataDir)
			opts := statedump.ExportOptions{Blocks: blocks, Live: live}
			if out == "-" {
				if isTerminal(a.out) {
					return usageError{errors.New("refusing to write an archive to a terminal; redirect standard output")}
				}
				sum, err := statedump.Export(dataDir, interruptibleWriter{ctx, a.out}, opts)
				a.reportExport(sum, "standard output")
				return err
			}
			opts.Progress = a.progressBar("exporting")
			sum, err := writeAtomic(out, func(w io.Writer) (statedump.Summary, error) {
				return statedump.Export(dataDir, interruptibleWriter{ctx, w}, opts)
			})
			if err != nil {
				return err
			}
			a.reportExport(sum, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", dataDirHelp)
	f.StringVarP(&out, "output", "o", "", "archive to write (- for standard output)")
	f.BoolVar(&blocks, "blocks", false, "include the block devices' contents")
	f.BoolVar(&live, "live", false, "export while petreld runs (not one instant's state)")
	return cmd
}

func (a *app) reportExport(sum statedump.Summary, where string) {
	if sum.Files == 0 && sum.Bytes == 0 {
		return
	}
	fmt.Fprintf(a.errw, "exported %d files (%s, schema %d) to %s\n", sum.Files, humanBytes(sum.Bytes), sum.Schema, where)
	for _, s := range sum.Skipped {
		fmt.Fprintf(a.errw, "  skipped %s\n", s)
	}
}

// writeAtomic writes a file through fn into a temporary file beside
// path and renames it into place only when fn succeeds, so a failed or
// interrupted export never leaves a truncated archive under its name.
func writeAtomic(path string, fn func(io.Writer) (statedump.Summary, error)) (statedump.Summary, error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return statedump.Summary{}, err
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	sum, err := fn(f)
	if err != nil {
		return sum, err
	}
	if err := f.Chmod(0o600); err != nil {
		return sum, err
	}
	if err := f.Sync(); err != nil {
		return sum, fmt.Errorf("fsync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return sum, err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return sum, err
	}
	done = true
	return sum, nil
}

func (a *app) stateImportCmd() *cobra.Command {
	var (
		dataDir     string
		newIdentity bool
	)
	cmd := &cobra.Command{
		Use:   "import ARCHIVE",
		Short: "Restore a state directory from an export",
		Long: `Restore an archive written by "petrel state export" into --data-dir, which
must not exist, be empty, or hold no state yet (petreld stopped). The
archive is unpacked, checked (image digests, record formats) and migrated
to the current schema beside the directory, then moved into place, so a
failed import changes nothing. Start petreld afterwards: it starts the
VMs recorded as running as after a host reboot. ARCHIVE "-" reads
standard input.

The imported directory keeps the exported one's instance id: it is the
same petreld instance, restored or moved, and owns the taps and runtime
directory of its VMs. To run the copy beside its original on the same
host, give it an identity of its own with --new-identity.`,
		Example: `  systemctl stop petreld
  petrel state import /srv/backup/host1.tar.gz --data-dir /var/lib/petrel
  systemctl start petreld`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			var in io.Reader = os.Stdin
			var size int64
			if pos[0] != "-" {
				if err := inputFile("archive", pos[0]); err != nil {
					return err
				}
				f, err := os.Open(pos[0])
				if err != nil {
					return err
				}
				defer f.Close()
				if fi, err := f.Stat(); err == nil {
					size = fi.Size()
				}
				in = f
			}
			opts := statedump.ImportOptions{NewIdentity: newIdentity}
			p := a.progressBar("importing")
			if p != nil && size > 0 {
				opts.Progress = func(done int64) { p(done, size) }
			}
			ctx, stop := signalContext()
			defer stop()
			sum, err := statedump.Import(interruptibleReader{ctx, in}, dataDir, opts)
			if opts.Progress != nil {
				p(size, size)
			}
			if err != nil {
				return err
			}
			from := ""
			if sum.From != sum.Schema {
				from = fmt.Sprintf(", migrated from schema %d", sum.From)
			}
			fmt.Fprintf(a.out, "imported %d files (%s) into %s (schema %d%s)\n", sum.Files, humanBytes(sum.Bytes), dataDir, sum.Schema, from)
			for _, p := range sum.Problems {
				fmt.Fprintf(a.out, "  warning: %s\n", p)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", defaultDataDir, "petreld's state directory to create")
	cmd.Flags().BoolVar(&newIdentity, "new-identity", false, "give the imported state an instance id of its own (to run it beside its original)")
	return cmd
}

// interruptibleWriter and interruptibleReader fail once ctx (cancelled
// by SIGINT or SIGTERM) is done, so that an interrupted export or import
// stops through its ordinary error path, which removes its temporary
// files, instead of the signal killing the process in the middle.
type interruptibleWriter struct {
	ctx context.Context
	w   io.Writer
}

func (w interruptibleWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, fmt.Errorf("interrupted: %w", err)
	}
	return w.w.Write(p)
}

type interruptibleReader struct {
	ctx context.Context
	r   io.Reader
}

func (r interruptibleReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, fmt.Errorf("interrupted: %w", err)
	}
	return r.r.Read(p)
}
