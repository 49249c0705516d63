package main

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// completionTimeout bounds how long a completion waits for petreld: the
// shell waits with it, and no answer is better than a late one.
const completionTimeout = 2 * time.Second

// noFiles is the directive of completions that are never file names.
const noFiles = cobra.ShellCompDirectiveNoFileComp

// ask runs fn with a client of the local daemon (--socket) and returns
// what fn found: nothing when no daemon answers in time, which a shell
// shows as no completions rather than an error. Remote mode completes
// nothing: a completion would need a certificate per keystroke, and the
// names it gets back are absolute where the command line's are relative
// to the caller's domain.
func (a *app) ask(fn func(context.Context, *client.Client) ([]cobra.Completion, error)) []cobra.Completion {
	if a.remote.destination != "" {
		return nil
	}
	c, err := client.Dial(a.socketPath())
	if err != nil {
		return nil
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	out, err := fn(ctx, c)
	if err != nil {
		return nil
	}
	return out
}

// withPrefix keeps the completions that start with prefix, sorted.
func withPrefix(all []cobra.Completion, prefix string) []cobra.Completion {
	var out []cobra.Completion
	for _, c := range all {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}

// vmNames are the daemon's VMs, described by their state.
func (a *app) vmNames() []cobra.Completion {
	return a.ask(func(ctx context.Context, c *client.Client) ([]cobra.Completion, error) {
		res, err := c.API.Info(ctx, &daemonv1.InfoRequest{})
		var out []cobra.Completion
		for _, vm := range res.GetVms() {
			out = append(out, cobra.CompletionWithDesc(vm.GetName(), vm.GetState()))
		}
		return out, err
	})
}

// blockNames are the daemon's block devices, described by their size.
func (a *app) blockNames() []cobra.Completion {
	return a.ask(func(ctx context.Context, c *client.Client) ([]cobra.Completion, error) {
		res, err := c.API.BlockList(ctx, &daemonv1.BlockListRequest{})
		var out []cobra.Completion
		for _, d := range res.GetDevices() {
			desc := mb(d.GetSizeMb() << 20)
			if d.GetInUseBy() != "" {
				desc += ", used by " + d.GetInUseBy()
			}
			out = append(out, cobra.CompletionWithDesc(d.GetName(), desc))
		}
		return out, err
	})
}

// bridgeNames are the host's bridges.
func (a *app) bridgeNames() []cobra.Completion {
	return a.ask(func(ctx context.Context, c *client.Client) ([]cobra.Completion, error) {
		res, err := c.API.Bridges(ctx, &daemonv1.BridgesRequest{})
		var out []cobra.Completion
		for _, b := range res.GetBridges() {
			out = append(out, b.GetName())
		}
		return out, err
	})
}

// backendNames are the daemon's hypervisor backends, described by their
// health.
func (a *app) backendNames() []cobra.Completion {
	return a.ask(func(ctx context.Context, c *client.Client) ([]cobra.Completion, error) {
		res, err := c.API.Plugins(ctx, &daemonv1.PluginsRequest{})
		var out []cobra.Completion
		for _, p := range res.GetPlugins() {
			if p.GetKind() == "hypervisor" {
				out = append(out, cobra.CompletionWithDesc(p.GetName(), p.GetHealth()))
			}
		}
		return out, err
	})
}

// policyPaths are the paths that have a policy.
func (a *app) policyPaths() []cobra.Completion {
	return a.ask(func(ctx context.Context, c *client.Client) ([]cobra.Completion, error) {
		res, err := c.API.PolicyList(ctx, &daemonv1.PolicyListRequest{})
		var out []cobra.Completion
		for _, e := range res.GetPolicies() {
			if e.GetPath() != ":" {
				out = append(out, e.GetPath())
			}
		}
		return out, err
	})
}

// firstArg completes a command's first argument from list, and then
// files (the IMAGE or FILE that follows) when files is set.
func firstArg(list func() []cobra.Completion, files bool) cobra.CompletionFunc {
	return func(_ *cobra.Command, pos []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		switch {
		case len(pos) == 0:
			return withPrefix(list(), toComplete), noFiles
		case files:
			return nil, cobra.ShellCompDirectiveDefault
		}
		return nil, noFiles
	}
}

// flagValues completes a flag's value from list.
func flagValues(list func() []cobra.Completion) cobra.CompletionFunc {
	return func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return withPrefix(list(), toComplete), noFiles
	}
}

// afterColon completes the part of a NAME:VALUE flag value after its
// colon from list (--net NAME:BRIDGE, --block NAME:DEVICE); before the
// colon, the name comes from the image's manifest, which the daemon
// cannot know.
func afterColon(list func() []cobra.Completion) cobra.CompletionFunc {
	return func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		name, rest, ok := strings.Cut(toComplete, ":")
		if !ok {
			return nil, noFiles | cobra.ShellCompDirectiveNoSpace
		}
		var out []cobra.Completion
		for _, v := range withPrefix(list(), rest) {
			out = append(out, name+":"+v)
		}
		return out, noFiles
	}
}

// completeBlockFlag completes --block NAME:DEVICE of create: DEVICE is
// a label looked up in the path of the VM (the command's first
// argument), so it offers the labels of the devices there.
func (a *app) completeBlockFlag(_ *cobra.Command, pos []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	parent := ""
	if len(pos) > 0 {
		if i := strings.LastIndexByte(pos[0], ':'); i >= 0 {
			parent = pos[0][:i]
		}
	}
	return afterColon(func() []cobra.Completion {
		var labels []cobra.Completion
		for _, d := range a.blockNames() {
			name, desc, _ := strings.Cut(d, "\t")
			dir, label := "", name
			if i := strings.LastIndexByte(name, ':'); i >= 0 {
				dir, label = name[:i], name[i+1:]
			}
			if dir == parent {
				labels = append(labels, cobra.CompletionWithDesc(label, desc))
			}
		}
		return labels
	})(nil, pos, toComplete)
}

// completions registers what each command and flag completes from the
// daemon: VM names, block devices, bridges, backends and policy paths.
func (a *app) completions(root *cobra.Command) {
	find := func(path ...string) *cobra.Command {
		c, _, err := root.Find(path)
		if err != nil || c == root {
			panic("completions: no command " + strings.Join(path, " "))
		}
		return c
	}
	for _, name := range []string{"destroy", "restart", "console", "info", "stats", "events"} {
		find(name).ValidArgsFunction = firstArg(a.vmNames, false)
	}
	find("block").ValidArgsFunction = firstArg(a.blockNames, false)
	find("block", "destroy").ValidArgsFunction = firstArg(a.blockNames, false)
	find("block", "upload").ValidArgsFunction = firstArg(a.blockNames, true)
	find("block", "download").ValidArgsFunction = firstArg(a.blockNames, true)
	find("policy").ValidArgsFunction = firstArg(a.policyPaths, false)
	find("policy", "remove").ValidArgsFunction = firstArg(a.policyPaths, false)
	find("policy", "add").ValidArgsFunction = firstArg(a.policyPaths, false)
	create := find("create")
	create.ValidArgsFunction = func(_ *cobra.Command, pos []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(pos) == 1 {
			return nil, cobra.ShellCompDirectiveDefault // the image
		}
		return nil, noFiles // a new name
	}
	for _, r := range []struct {
		cmd  *cobra.Command
		flag string
		fn   cobra.CompletionFunc
	}{
		{create, "backend", flagValues(a.backendNames)},
		{create, "net", afterColon(a.bridgeNames)},
		{create, "block", a.completeBlockFlag},
		{find("policy", "add"), "bridge", flagValues(a.bridgeNames)},
		{find("ca", "sign-policy"), "bridge", flagValues(a.bridgeNames)},
	} {
		if err := r.cmd.RegisterFlagCompletionFunc(r.flag, r.fn); err != nil {
			panic(err)
		}
	}
}
