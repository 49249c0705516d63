package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

func (a *app) statsCmd() *cobra.Command {
	var follow, jsonOut bool
	cmd := &cobra.Command{
		Use:   "stats [NAME|PATH]",
		Short: "Show resource usage of VMs: CPU, memory, faults, context switches, network",
		Long: `Show the newest statistics petreld collected (every stats_interval,
default 10 s): CPU time, resident and virtual memory, page faults, context
switches, uptime and restarts of each VM's tender, and traffic of each
network interface as the guest sees it. With --follow, print each new
collection until Ctrl-C. --json prints the batch metrics sinks receive.`,
		Example: "  petrel stats\n  petrel stats team:web --follow",
		Args:    args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			req := &daemonv1.StatsRequest{Follow: follow}
			if len(pos) == 1 {
				req.Path = pos[0]
			}
			stream, err := c.API.Stats(ctx, req)
			if err != nil {
				return err
			}
			for {
				b, err := stream.Recv()
				if errors.Is(err, io.EOF) || (err != nil && ctx.Err() != nil) {
					return nil
				}
				if err != nil {
					return err
				}
				if jsonOut {
					out, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(b)
					if err != nil {
						return err
					}
					fmt.Fprintln(a.out, string(out))
					continue
				}
				if err := a.printStats(b); err != nil {
					return err
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "print each new collection")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON, one batch per line")
	return cmd
}

func mb(b int64) string { return fmt.Sprintf("%.1fM", float64(b)/(1<<20)) }

func (a *app) printStats(b *pluginv1.Batch) error {
	fmt.Fprintf(a.out, "%s\n", time.Unix(0, b.GetTimeNs()).UTC().Format(time.RFC3339))
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tCPU USER\tCPU SYS\tRSS\tVSZ\tFAULTS\tCTXSW\tUPTIME\tRESTARTS")
	for _, vm := range b.GetVms() {
		up := "-"
		if vm.GetUptimeSeconds() > 0 {
			up = (time.Duration(vm.GetUptimeSeconds()) * time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2fs\t%.2fs\t%s\t%s\t%d\t%d\t%s\t%d\n", vm.GetName(), vm.GetState(),
			float64(vm.GetCpuUserNs())/1e9, float64(vm.GetCpuSystemNs())/1e9, mb(vm.GetRssBytes()), mb(vm.GetVsizeBytes()),
			vm.GetMinflt()+vm.GetMajflt(), vm.GetNvcsw()+vm.GetNivcsw(), up, vm.GetRestarts())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, vm := range b.GetVms() {
		for _, i := range vm.GetInterfaces() {
			fmt.Fprintf(a.out, "  %s %s (%s): rx %d bytes %d packets %d errors %d dropped, tx %d bytes %d packets %d errors %d dropped\n",
				vm.GetName(), i.GetName(), i.GetHostIf(), i.GetRxBytes(), i.GetRxPackets(), i.GetRxErrors(), i.GetRxDropped(),
				i.GetTxBytes(), i.GetTxPackets(), i.GetTxErrors(), i.GetTxDropped())
		}
	}
	return nil
}
