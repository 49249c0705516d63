package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/petrel-vmm/petrel/core/policy"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

func (a *app) policyCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "policy [PATH]",
		Short: "Show resource policies (with subcommands to add and remove them)",
		Long: `A policy bounds what every VM below a path may take together: number of
VMs, memory, the CPUs they run on (pinned or not), block storage, image
storage and bridges. Image storage (--images) bounds the images the VMs
use and those the path's callers upload for VMs to come, in petreld's
image store; a policy that states none allows as much as its memory. A
policy is never larger than any ancestor's, and every deploy is checked
against the policy of every ancestor, so delegated sub-policies can never
together exceed their parent. The root policy (":") is what the host has.

A path may have two policies: one set here (locally, or remotely by an
ancestor) and one carried by a certificate of a caller's chain, recorded
when that caller deploys. The policy in force is their meet, field by
field the smaller (and the CPUs and bridges both allow), so neither can
loosen the other: a re-signed certificate cannot undo a limit its owner
set, and a policy set here cannot exceed what the certificate's issuer
delegated. FROM says which records a path has; --json shows them as
"local" and "certificate".`,
		Example: "  petrel policy\n  petrel policy add team --vms 4 --mem 512 --cpu 0 --cpu 1 --block 1024 --bridge br0\n  petrel policy remove team",
		Args:    args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			req := &daemonv1.PolicyListRequest{}
			if len(pos) == 1 {
				req.Path = pos[0]
			}
			res, err := c.API.PolicyList(ctx, req)
			if err != nil {
				return err
			}
			policies := listing[*daemonv1.PolicyEntry]{
				columns: []string{"PATH", "VMS", "MEMORY", "CPUS", "BLOCK", "IMAGES", "BRIDGES", "FROM"},
				row: func(e *daemonv1.PolicyEntry) []string {
					p := policy.FromProto(e.GetPolicy())
					block := "none"
					if p.BlockMB != nil {
						block = fmt.Sprintf("%d/%dM", e.GetUsedBlockMb(), *p.BlockMB)
					}
					return []string{e.GetPath(), fmt.Sprintf("%d/%d", e.GetUsedVms(), p.VMs), fmt.Sprintf("%d/%dM", e.GetUsedMemoryMb(), p.MemoryMB),
						strings.Trim(strings.ReplaceAll(fmt.Sprint(p.CPUs), " ", ","), "[]"), block, fmt.Sprintf("%d/%dM", e.GetUsedImagesMb(), p.Images()),
						strings.Join(p.Bridges, ","), policySources(e)}
				},
				json: func(e *daemonv1.PolicyEntry) (any, error) {
					m, err := policyJSON(e.GetPolicy())
					if err != nil {
						return nil, err
					}
					m["path"], m["used_vms"], m["used_memory_mb"], m["used_block_mb"] = e.GetPath(), e.GetUsedVms(), e.GetUsedMemoryMb(), e.GetUsedBlockMb()
					m["used_images_mb"], m["images_limit_mb"] = e.GetUsedImagesMb(), policy.FromProto(e.GetPolicy()).Images()
					for key, rec := range map[string]*daemonv1.Policy{"local": e.GetLocal(), "certificate": e.GetCertificate()} {
						if rec == nil {
							continue
						}
						if m[key], err = policyJSON(rec); err != nil {
							return nil, err
						}
					}
					return m, nil
				},
			}
			return policies.print(a.out, jsonOut, res.GetPolicies())
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.AddCommand(a.policyAddCmd(), a.policyRemoveCmd())
	return cmd
}

// policyJSON is the JSON form of a policy in `petrel policy --json`:
// policy.Policy's own JSON, which petreld also stores, as a map so that
// the listing can add the path and usage beside the fields. Numbers stay
// json.Number, so that sizes print as integers.
func policyJSON(p *daemonv1.Policy) (map[string]any, error) {
	b, err := json.Marshal(policy.FromProto(p))
	if err != nil {
		return nil, fmt.Errorf("policy as JSON: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	m := map[string]any{}
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("policy as JSON: %w", err)
	}
	return m, nil
}

// policySources says which records a listed policy is the meet of: the
// host for the root, else local, certificate or both.
func policySources(e *daemonv1.PolicyEntry) string {
	var from []string
	if e.Local != nil {
		from = append(from, "local")
	}
	if e.Certificate != nil {
		from = append(from, "certificate")
	}
	if len(from) == 0 {
		return "host"
	}
	return strings.Join(from, "+")
}

func (a *app) policyAddCmd() *cobra.Command {
	var flags *policyFlags
	cmd := &cobra.Command{
		Use:   "add PATH --vms N --mem SIZE [--cpu N]... [--block SIZE] [--images SIZE] [--bridge B]...",
		Short: "Set the resource policy of a path",
		Long: `Set the resource policy of PATH: at most --vms VMs below it with --mem of
memory, --block of block storage and --images of image storage in total,
on the --bridge bridges. Sizes are MB (512), or carry a unit (512M, 2G,
1Gi; units are binary, 1G = 1024M); 0 allows nothing.

With --cpu, VMs below PATH run only on those CPUs: a VM created with --cpu
must name some of them, and one created without is confined to them (with
its tender's every thread and child), from its next start for VMs that
already run. A policy without --cpu lets its VMs be pinned to no CPU, and
confines them only as far as the policies above it do.`,
		Example: "  petrel policy add team --vms 4 --mem 512 --cpu 0 --block 1024 --images 128 --bridge br0\n  petrel policy add team:ci --vms 8 --mem 4G --block 20G",
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			if !cmd.Flags().Changed("vms") || !cmd.Flags().Changed("mem") {
				return usageError{fmt.Errorf("--vms and --mem are required")}
			}
			p, err := flags.policy()
			if err != nil {
				return err
			}
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			e, err := c.API.PolicyAdd(ctx, &daemonv1.PolicyAddRequest{Path: pos[0], Policy: policy.ToProto(p)})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "policy of %s set\n", e.GetPath())
			return nil
		},
	}
	flags = bindPolicyFlags(cmd.Flags())
	return cmd
}

func (a *app) policyRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove PATH",
		Short: "Remove the resource policy of a path",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			if _, err := c.API.PolicyRemove(ctx, &daemonv1.PolicyRemoveRequest{Path: pos[0]}); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "policy of %s removed\n", pos[0])
			return nil
		},
	}
}
