package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// parseNetFlag parses NAME:BRIDGE[@MAC].
func parseNetFlag(s string) (*daemonv1.NetAttachment, error) {
	rest, mac, _ := strings.Cut(s, "@")
	name, bridge, ok := strings.Cut(rest, ":")
	if !ok || name == "" || bridge == "" {
		return nil, fmt.Errorf("--net %q: expected NAME:BRIDGE[@MAC]", s)
	}
	return &daemonv1.NetAttachment{Name: name, Bridge: bridge, Mac: mac}, nil
}

func (a *app) bridgesCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "bridges",
		Short: "List the host's bridges, which VMs attach to with --net NAME:BRIDGE",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.API.Bridges(ctx, &daemonv1.BridgesRequest{})
			if err != nil {
				return err
			}
			bridges := listing[*daemonv1.HostBridge]{
				columns: []string{"NAME", "MTU", "STATE", "MAC", "MEMBERS"},
				row: func(b *daemonv1.HostBridge) []string {
					state := "down"
					if b.GetUp() {
						state = "up"
					}
					return []string{b.GetName(), fmt.Sprint(b.GetMtu()), state, b.GetMac(), strings.Join(b.GetMembers(), ",")}
				},
				json: func(b *daemonv1.HostBridge) (any, error) {
					members := b.GetMembers()
					if members == nil {
						members = []string{}
					}
					return map[string]any{"name": b.GetName(), "mtu": b.GetMtu(), "mac": b.GetMac(), "up": b.GetUp(), "members": members}, nil
				},
			}
			return bridges.print(a.out, jsonOut, res.GetBridges())
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}
