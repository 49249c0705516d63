package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// parseBlockFlag parses NAME[:DEVICE][@SECTOR].
func parseBlockFlag(s string) (*daemonv1.BlockAttachment, error) {
	b := &daemonv1.BlockAttachment{}
	rest := s
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		n, err := strconv.ParseUint(rest[i+1:], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--block %q: sector size %q is not a number", s, rest[i+1:])
		}
		b.SectorSize = uint32(n)
		rest = rest[:i]
	}
	name, dev, _ := strings.Cut(rest, ":")
	if name == "" {
		return nil, fmt.Errorf("--block %q: expected NAME[:DEVICE][@SECTOR]", s)
	}
	b.Name, b.Device = name, dev
	return b, nil
}

func (a *app) blockCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "block [PATH]",
		Short: "List block devices (with subcommands to create, upload, download and destroy them)",
		Long: `Block devices are sparse files kept by petreld, named like VMs
(team:web:disk). A VM uses them with
  petrel create NAME IMAGE --block MANIFEST-NAME[:DEVICE][@SECTOR]
where DEVICE is a device label in the VM's path (default: the manifest
name) and SECTOR a sector size (a power of two, at least 512, dividing
the device size). A device serves one running VM at a time; uploads,
downloads and destroy are refused while it is in use.`,
		Example: "  petrel block\n  petrel block create team:disk 64\n  petrel block upload team:disk ./disk.img --gzip",
		Args:    args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			req := &daemonv1.BlockListRequest{}
			if len(pos) == 1 {
				req.Path = pos[0]
			}
			res, err := c.API.BlockList(ctx, req)
			if err != nil {
				return err
			}
			devices := listing[*daemonv1.BlockInfo]{
				columns: []string{"NAME", "SIZE", "IN USE BY"},
				row: func(d *daemonv1.BlockInfo) []string {
					user := d.GetInUseBy()
					if user == "" {
						user = "-"
					}
					return []string{d.GetName(), fmt.Sprintf("%dM", d.GetSizeMb()), user}
				},
				json: func(d *daemonv1.BlockInfo) (any, error) {
					return map[string]any{"name": d.GetName(), "size_mb": d.GetSizeMb(), "in_use_by": d.GetInUseBy()}, nil
				},
			}
			if err := devices.print(a.out, jsonOut, res.GetDevices()); err != nil || jsonOut {
				return err
			}
			for _, o := range res.GetOrphans() {
				fmt.Fprintf(a.errw, "petrel: %s in the block directory is not a block device (left alone)\n", o)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.AddCommand(a.blockCreateCmd(), a.blockUploadCmd(), a.blockDownloadCmd(), a.blockDestroyCmd())
	return cmd
}

func (a *app) blockCreateCmd() *cobra.Command {
	var data string
	var gz bool
	cmd := &cobra.Command{
		Use:   "create NAME SIZE",
		Short: "Create a block device of SIZE, empty or from a file",
		Long: `Create block device NAME of SIZE (` + sizeHelp + `), empty, or with
the content of the --data file, which must fit.`,
		Example: "  petrel block create team:disk 64\n  petrel block create team:disk 1G --data ./disk.img --gzip",
		Args:    args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			sz := sizeFlag{Max: math.MaxInt64, Positive: true, ZeroHint: "a block device needs at least 1 MB"}
			if err := sz.Set(pos[1]); err != nil {
				return usageError{valueError("SIZE", pos[1], err)}
			}
			size := sz.MB
			if data != "" {
				if err := inputFile("--data", data); err != nil {
					return err
				}
				fi, err := os.Stat(data)
				if err != nil {
					return err
				}
				if size <= math.MaxInt64>>20 && fi.Size() > size<<20 {
					return invalidInput{fmt.Errorf("--data %s (%d bytes) does not fit in %d MB", data, fi.Size(), size)}
				}
			}
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			info, err := c.API.BlockCreate(ctx, &daemonv1.BlockCreateRequest{Name: pos[0], SizeMb: size})
			if err != nil {
				return err
			}
			if data != "" {
				if _, err := c.UploadBlockFile(ctx, info.GetName(), data, gz, a.progressBar("uploading "+filepath.Base(data))); err != nil {
					c.API.BlockDestroy(cmd.Context(), &daemonv1.BlockDestroyRequest{Name: info.GetName()})
					return err
				}
			}
			fmt.Fprintf(a.out, "created block device %s (%d MB)\n", info.GetName(), info.GetSizeMb())
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "initial content")
	cmd.Flags().BoolVar(&gz, "gzip", false, "compress the transfer through petrel-endpoint (a local petreld moves the file itself)")
	return cmd
}

func (a *app) blockUploadCmd() *cobra.Command {
	var gz, digest bool
	cmd := &cobra.Command{
		Use:   "upload NAME FILE",
		Short: "Replace a block device's content with FILE (atomically, checksum verified)",
		Long: `Replace block device NAME's content with FILE. The daemon writes a new
copy and switches to it only once it is complete and durable, so an
interrupted upload leaves the old content.

On petreld's own host the CLI hands petreld the open file, which petreld
reads itself, at the speed of a file copy (--gzip does not apply).
Through petrel-endpoint the content goes on a second TLS connection to
the endpoint, beside the call, and the daemon switches only when the
CRC-32C of what it received matches FILE's (the SHA-256, with an endpoint
that streams the content in the call).

With --sha256 the daemon also computes the SHA-256 of what it stored,
which is printed. Hashing is most of the daemon's CPU in an upload
(more than the copy itself on its own host), so it is left out unless
asked for; an upload checked by its SHA-256 (streamed in the call)
prints it anyway.`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			if err := inputFile("file", pos[1]); err != nil {
				return err
			}
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			var opts []client.BlockUploadOption
			if digest {
				opts = append(opts, client.WithSHA256())
			}
			info, err := c.UploadBlockFile(ctx, pos[0], pos[1], gz, a.progressBar("uploading "+filepath.Base(pos[1])), opts...)
			if err != nil {
				return err
			}
			if sum := info.GetSha256(); sum != "" {
				fmt.Fprintf(a.out, "uploaded %s to %s (sha256 %s)\n", pos[1], info.GetName(), sum)
			} else {
				fmt.Fprintf(a.out, "uploaded %s to %s\n", pos[1], info.GetName())
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&gz, "gzip", false, "compress the transfer through petrel-endpoint (a local petreld moves the file itself)")
	cmd.Flags().BoolVar(&digest, "sha256", false, "have the daemon compute and print the SHA-256 of what it stored")
	return cmd
}

func (a *app) blockDownloadCmd() *cobra.Command {
	var gz bool
	cmd := &cobra.Command{
		Use:   "download NAME FILE",
		Short: "Write a block device's content to FILE (checksum verified)",
		Long: `Write block device NAME's content to FILE, which appears only once the
content is complete and on disk.

On petreld's own host the CLI hands petreld a new file, which petreld
writes itself, at the speed of a file copy (--gzip does not apply).
Through petrel-endpoint the content comes on a second TLS connection to
the endpoint, beside the call, and is checked against the daemon's
CRC-32C (its SHA-256, with an endpoint that streams the content in the
call) before FILE appears.`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			if err := outputFile("file", pos[1]); err != nil {
				return err
			}
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			n, err := c.DownloadBlockFile(ctx, pos[0], pos[1], gz, a.progressBar("downloading "+pos[0]))
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "downloaded %s to %s (%d bytes)\n", pos[0], pos[1], n)
			return nil
		},
	}
	cmd.Flags().BoolVar(&gz, "gzip", false, "compress the transfer through petrel-endpoint (a local petreld moves the file itself)")
	return cmd
}

func (a *app) blockDestroyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "destroy NAME",
		Short: "Remove a block device no VM uses",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			if _, err := c.API.BlockDestroy(ctx, &daemonv1.BlockDestroyRequest{Name: pos[0]}); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "destroyed block device %s\n", pos[0])
			return nil
		},
	}
}
