package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/sdk/client"
	"github.com/petrel-vmm/petrel/sdk/oci"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// imageSource tells what a command line's IMAGE names: an existing file
// wins (ref is empty); otherwise something that parses as a registry
// reference naming its registry host is a reference. Anything else is
// refused, saying both readings, rather than guessed at.
func imageSource(arg string) (ref string, err error) {
	_, statErr := os.Stat(arg)
	if statErr == nil || !errors.Is(statErr, fs.ErrNotExist) {
		return "", regularFile("image", arg)
	}
	if _, err := oci.ParseReference(arg); err == nil {
		return arg, nil
	}
	if !strings.Contains(arg, "/") || strings.HasPrefix(arg, "/") || strings.HasPrefix(arg, "./") || strings.HasPrefix(arg, "../") {
		return "", regularFile("image", arg) // a path: no such file
	}
	return "", invalidInput{fmt.Errorf("image %s is neither an existing file nor a registry reference: a reference names its registry host first (registry.example.org/%s); a file path must exist", arg, arg)}
}

// pull has petreld pull the registry reference ref into its store,
// showing the transfer's progress on a terminal, and returns what it
// pulled, whose digest a create then names beside the reference so that
// a tag moved in between is refused rather than run.
// nameFree refuses, as petreld's create would, a VM name that is taken.
// A caller who may not ask (a certificate for create alone) or an answer
// that does not come leaves the question to petreld's create.
func nameFree(ctx context.Context, c *client.Client, vm string) error {
	res, err := c.API.Info(ctx, &daemonv1.InfoRequest{Name: vm})
	if err != nil {
		return nil
	}
	for _, v := range res.GetVms() {
		if v.GetName() == vm {
			return status.Errorf(codes.AlreadyExists, "VM already exists: %s (use --force to replace it)", vm)
		}
	}
	return nil
}

func (a *app) pull(ctx context.Context, c *client.Client, ref string) (*daemonv1.PulledImage, error) {
	return c.PullImage(ctx, ref, a.progressBar("pulling "+ref))
}

// registryFlags are the CLI's own ways to reach a registry (pushes go from
// the CLI; pulls are petreld's, with petreld's settings).
type registryFlags struct {
	insecure []string
	config   string
}

func (r *registryFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&r.insecure, "insecure-registry", nil, "reach this registry `HOST[:PORT]` over plain HTTP (loopback registries always are; repeatable)")
	cmd.Flags().StringVar(&r.config, "registry-config", "", "docker config `FILE` with registry credentials (default $DOCKER_CONFIG/config.json or ~/.docker/config.json)")
}

func (r *registryFlags) options() oci.Options {
	return oci.Options{InsecureRegistries: r.insecure, ConfigFile: r.config}
}

func (a *app) imageCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Store unikernels in OCI registries",
		Long: `Unikernels can live in an OCI registry as artifacts of type
` + oci.ArtifactType + `, one layer holding the ELF file, with the
Solo5 target and ABI in annotations. petreld pulls them by reference:
petrel create web registry.example.org/team/web:1.4 resolves the tag to
a digest, fetches the image unless the host has that digest, verifies it
and records the reference on the VM; petrel update replaces the image.`,
		Args: args(cobra.NoArgs),
	}
	cmd.AddCommand(a.imagePushCmd())
	return cmd
}

func (a *app) imagePushCmd() *cobra.Command {
	var (
		reg     registryFlags
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "push FILE REF",
		Short: "Push a unikernel file to an OCI registry",
		Long: `Push the Solo5 unikernel FILE to the registry under REF
(registry/repository:tag; the tag defaults to latest), as an artifact
petreld can pull: petrel create NAME REF.

The push goes from this machine, with this user's registry credentials:
the docker config file (--registry-config, else $DOCKER_CONFIG/config.json
or ~/.docker/config.json, as docker login writes it). Registries are
reached over HTTPS, except loopback ones (localhost, 127.0.0.1, ::1) and
those given with --insecure-registry. An image the registry has already is
not sent again. FILE must be a Solo5 unikernel: its ABI note gives the
target and ABI annotations.`,
		Example: `  petrel image push ./web.hvt registry.example.org/team/web:1.4
  petrel image push ./web.spt localhost:5000/web:dev
  petrel image push ./web.hvt registry.lan:5000/web:1.4 --insecure-registry registry.lan:5000`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			if err := regularFile("image", pos[0]); err != nil {
				return err
			}
			if _, err := oci.ParseReference(pos[1]); err != nil {
				return usageError{err}
			}
			ctx, cancel := signalContext()
			defer cancel()
			p, err := oci.Push(ctx, pos[0], pos[1], reg.options(), a.progressBar("pushing "+pos[0]))
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(a.out, map[string]any{"ref": pos[1], "pinned": p.Pinned, "manifest_digest": p.Manifest.String(),
					"image_sha256": p.SHA256(), "size": p.Image.Size, "target": p.Target, "abi": p.ABI, "uploaded": p.Uploaded})
			}
			sent := ""
			if !p.Uploaded {
				sent = "; the registry had the image already"
			}
			fmt.Fprintf(a.out, "pushed %s to %s (%s, image sha256:%s, %s ABI %s%s)\n", pos[0], pos[1], p.Pinned, p.SHA256(), p.Target, p.ABI, sent)
			return nil
		},
	}
	reg.add(cmd)
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print what was pushed as JSON")
	return cmd
}

func (a *app) updateCmd() *cobra.Command {
	var (
		grace   time.Duration
		marker  string
		probe   string
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "update NAME [REF]",
		Short: "Replace a VM's image with one from a registry, rolling back on failure",
		Long: `Replace the image of VM NAME with the one REF names, keeping its name,
memory, CPUs, arguments, devices and restart policy. Without REF, the
reference the VM was created from is pulled again: its tag's current
digest. petreld pulls (only a digest it does not have), checks the image
against the VM's devices, and replaces the run.

The new image must then hold for the grace period (--grace): if it exits
with a non-zero code or a signal, or a health check given does not
succeed within it, petreld restores the previous image and the update is
reported as rolled back (exit code 11). Health checks: --healthy-marker
TEXT (the console must print TEXT) and --probe tcp://HOST:PORT or
--probe http://HOST[:PORT]/PATH (a connection, or an answer below 400).
An image that exits 0 within the grace period is not a failure.

A VM that runs the image REF names already is left alone (exit 0).
Should petreld be killed during an update, it comes back with the VM
running the image its record names: the old one, or the new one.`,
		Example: `  petrel update web
  petrel update web registry.example.org/team/web:1.5 --grace 30s --healthy-marker "listening on"
  petrel update web registry.example.org/team/web:1.5 --probe http://10.0.0.2/health`,
		Args: args(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			if grace < 0 {
				return usageError{fmt.Errorf("--grace %s: must not be negative", grace)}
			}
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			ref := ""
			if len(pos) == 2 {
				if _, err := oci.ParseReference(pos[1]); err != nil {
					return usageError{err}
				}
				ref = pos[1]
			} else {
				res, err := c.API.Info(ctx, &daemonv1.InfoRequest{Name: pos[0]})
				if err != nil {
					return err
				}
				for _, vm := range res.GetVms() {
					if vm.GetName() == pos[0] {
						ref = vm.GetImageRef()
					}
				}
			}
			if ref != "" {
				// Pulled first to show progress; the update finds it.
				if _, err := a.pull(ctx, c, ref); err != nil {
					return err
				}
			}
			res, err := c.API.Update(ctx, &daemonv1.UpdateRequest{Name: pos[0], ImageRef: ref, GraceMs: grace.Milliseconds(),
				HealthyMarker: marker, Probe: probe})
			if err != nil {
				return err
			}
			if jsonOut {
				if err := writeJSON(a.out, map[string]any{"vm": vmJSON(res.GetVm()), "rolled_back": res.GetRolledBack(),
					"unchanged": res.GetUnchanged(), "message": res.GetMessage()}); err != nil {
					return err
				}
			} else if !res.GetRolledBack() {
				fmt.Fprintln(a.out, res.GetMessage())
			}
			if res.GetRolledBack() {
				return rolledBack{errors.New(res.GetMessage())}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&grace, "grace", 5*time.Second, "how long the new image must hold before the update is kept")
	f.StringVar(&marker, "healthy-marker", "", "the new image's console must print this `TEXT` within the grace period")
	f.StringVar(&probe, "probe", "", "this `URL` (tcp://HOST:PORT or http://HOST[:PORT]/PATH) must answer within the grace period")
	f.BoolVar(&jsonOut, "json", false, "print the VM and the outcome as JSON")
	return cmd
}

// rolledBack is an update that failed and was undone: exit code 11.
type rolledBack struct{ error }
