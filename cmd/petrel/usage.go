package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// remoteAnnotation marks the global flags of remote mode (--destination,
// --ca...), which help shows once, on the root, instead of under every
// command.
const remoteAnnotation = "petrel/remote"

// signingFlags are the remote flags that also name the signing CA of
// 'petrel ca', whose commands show them among their global flags.
var signingFlags = map[string]bool{"ca": true, "ca-key": true}

// isRemoteFlag reports whether f is a remote-mode flag that help shows
// apart: always on the root, and below it except for the signing flags
// under 'petrel ca'.
func isRemoteFlag(c *cobra.Command, f *pflag.Flag) bool {
	if _, ok := f.Annotations[remoteAnnotation]; !ok {
		return false
	}
	under := strings.Fields(c.CommandPath())
	return !(len(under) > 1 && under[1] == "ca" && signingFlags[f.Name])
}

// splitRemote splits a command's flags into those help lists in place
// and the remote-mode ones.
func splitRemote(c *cobra.Command, fs *pflag.FlagSet) (plain, remote *pflag.FlagSet) {
	plain = pflag.NewFlagSet(c.Name(), pflag.ContinueOnError)
	remote = pflag.NewFlagSet(c.Name(), pflag.ContinueOnError)
	fs.VisitAll(func(f *pflag.Flag) {
		if isRemoteFlag(c, f) {
			remote.AddFlag(f)
		} else {
			plain.AddFlag(f)
		}
	})
	return plain, remote
}

// hasVisible reports whether fs has a flag help shows.
func hasVisible(fs *pflag.FlagSet) bool {
	found := false
	fs.VisitAll(func(f *pflag.Flag) { found = found || !f.Hidden })
	return found
}

// remoteNames lists the remote flags of fs as "--destination, --ca...".
func remoteNames(fs *pflag.FlagSet) string {
	var names []string
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden {
			names = append(names, "--"+f.Name)
		}
	})
	return strings.Join(names, ", ")
}

// usage writes a command's usage like cobra's, except that groups show
// "petrel ca COMMAND" (they take no flags of their own), and that the
// remote-mode flags are listed once, in the root's help, below which a
// line points to them.
func usage(c *cobra.Command) error {
	w := c.OutOrStderr()
	fmt.Fprint(w, "Usage:")
	if c.Runnable() && !isGroup(c) {
		fmt.Fprintf(w, "\n  %s", c.UseLine())
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(w, "\n  %s COMMAND", c.CommandPath())
	}
	if c.HasExample() {
		fmt.Fprintf(w, "\n\nExamples:\n%s", c.Example)
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprint(w, "\n\nCommands:")
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() || sub.Name() == "help" {
				fmt.Fprintf(w, "\n  %-*s %s", sub.NamePadding(), sub.Name(), sub.Short)
			}
		}
	}
	local, localRemote := splitRemote(c, c.LocalFlags())
	inherited, inheritedRemote := splitRemote(c, c.InheritedFlags())
	flagSection(w, "Flags", local)
	flagSection(w, "Remote mode flags (see \"Remote management\" above)", localRemote)
	flagSection(w, "Global Flags", inherited)
	if hasVisible(inheritedRemote) {
		fmt.Fprintf(w, "\n\nRemote mode: %s (see '%s --help')", remoteNames(inheritedRemote), c.Root().Name())
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(w, "\n\nUse \"%s COMMAND --help\" for more information about a command.", c.CommandPath())
	}
	fmt.Fprintln(w)
	return nil
}

// flagSection writes fs's visible flags under title, if it has any.
func flagSection(w io.Writer, title string, fs *pflag.FlagSet) {
	if hasVisible(fs) {
		fmt.Fprintf(w, "\n\n%s:\n%s", title, strings.TrimRight(fs.FlagUsages(), " \t\n"))
	}
}
