package petrelplugin

import (
	"github.com/hashicorp/go-plugin"

	"github.com/petrel-vmm/petrel/sdk/network"
)

// NetworkService is the dispense name of the network service.
const NetworkService = "network"

// NetworkPluginSets maps each supported protocol version to the plugins a
// network plugin binary serves under it. impl is nil on petreld's side.
func NetworkPluginSets(impl network.Network) map[int]plugin.PluginSet {
	return pluginSets(NetworkService, network.NewGRPCPlugin(impl))
}

// ServeNetwork serves a network plugin and never returns normally. It is
// the whole body of a network plugin's main function. When the parent
// (petreld) dies the plugin exits too, so no orphaned plugin lingers; the
// interfaces it created stay, tagged, for the next petreld to reconcile.
func ServeNetwork(impl network.Network) {
	printVersion(impl)
	serve(NetworkPluginSets(impl))
}
