package daemon

import (
	"context"
	"fmt"

	"github.com/petrel-vmm/petrel/sdk/network"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// netAdapter gives the supervisor taps through the network plugin, with
// the naming rules of sdk/network for the instance's taps.
type netAdapter struct {
	n network.Network
	// instance is petreld's instance id, part of every tap name and MAC
	// it derives.
	instance string
}

func (a netAdapter) TapName(vm, netName string) string {
	return network.TapNameFor(a.instance, vm, netName)
}

func (a netAdapter) DeriveMAC(vm, netName string) string {
	return network.DeriveMACFor(a.instance, vm, netName)
}

func (a netAdapter) ParseMAC(mac string) (string, error) { return network.ParseMAC(mac) }

func (a netAdapter) BridgeExists(ctx context.Context, bridge string) (bool, error) {
	bridges, err := a.n.Bridges(ctx)
	if err != nil {
		return false, err
	}
	for _, b := range bridges {
		if b.GetName() == bridge {
			return true, nil
		}
	}
	return false, nil
}

func (a netAdapter) Attach(ctx context.Context, vm, netName, bridge, mac, hostIf string) error {
	res, err := a.n.Attach(ctx, &pluginv1.AttachRequest{Vm: vm, NetName: netName, Bridge: bridge, Mac: mac, HostIf: hostIf})
	if err != nil {
		return err
	}
	if res.GetHostIf() != hostIf {
		a.n.Detach(ctx, res.GetHostIf())
		return fmt.Errorf("network plugin created %s instead of %s", res.GetHostIf(), hostIf)
	}
	return nil
}

func (a netAdapter) Detach(ctx context.Context, hostIf string) error { return a.n.Detach(ctx, hostIf) }

func (a netAdapter) Reconcile(ctx context.Context, keep []string) ([]string, error) {
	return a.n.Reconcile(ctx, keep)
}
