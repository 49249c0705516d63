package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// groupAnnotation marks commands that only group subcommands ("petrel
// ca", "petrel state"), for the README test and the man pages, which
// treat them as groups although they run (to refuse unknown
// subcommands).
const groupAnnotation = "petrel/group"

// isGroup reports whether c only groups subcommands.
func isGroup(c *cobra.Command) bool {
	return c.Annotations[groupAnnotation] != ""
}

// strict makes every command below root answer a mistake in its command
// line as a usage error (exit 2), as `petrel --help` documents, instead
// of cobra's defaults: a group given an unknown subcommand ("petrel ca
// nope") prints its help and succeeds, an unknown command of the root
// exits 1, and cobra's own commands (completion) check their arguments
// with plain errors. It runs once the tree is complete, help and
// completion commands included.
func strict(c *cobra.Command) {
	switch {
	case c.HasSubCommands() && !c.Runnable():
		if c.Annotations == nil {
			c.Annotations = map[string]string{}
		}
		c.Annotations[groupAnnotation] = "true"
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, pos []string) error {
			if len(pos) > 0 {
				return usageError{unknownCommand(cmd, pos[0])}
			}
			return cmd.Help()
		}
	case c.HasSubCommands() && c.Args != nil:
		c.Args = args(subcommandTypos(c.Args))
	case c.Args != nil:
		c.Args = args(c.Args)
	}
	for _, sub := range c.Commands() {
		strict(sub)
	}
}

// unknownCommand is the error for an unknown subcommand of cmd, with the
// subcommands it may have meant.
func unknownCommand(cmd *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, cmd.CommandPath())
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %s?", strings.Join(s, " or "))
	}
	return fmt.Errorf("%s (see '%s --help')", msg, cmd.CommandPath())
}

// subcommandTypos wraps the argument check of a command that both runs
// and has subcommands ("petrel block [PATH]", "petrel policy [PATH]"),
// refusing a lone argument one edit away from a subcommand's name
// ("petrel policy ad", "petrel block craete"), which would otherwise
// list an empty path and succeed. A path of that name stays reachable as ":NAME".
func subcommandTypos(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, pos []string) error {
		if len(pos) == 1 && len(pos[0]) >= 2 && !strings.Contains(pos[0], ":") {
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() && editDistance(pos[0], sub.Name()) == 1 {
					return fmt.Errorf("unknown command %q for %q; did you mean %s? (a path of that name is written :%s)",
						pos[0], cmd.CommandPath(), sub.Name(), pos[0])
				}
			}
		}
		return check(cmd, pos)
	}
}

// editDistance is the edit distance of a and b, counting an insertion,
// a deletion, a substitution or a swap of two neighbours as one edit
// (optimal string alignment), so that "craete" is one edit from "create".
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// helpCmd replaces cobra's help command, which answers an unknown topic
// ("petrel help nope", "petrel help block nope") with the root's usage
// and success; here it is a usage error, like an unknown command.
func (a *app) helpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [COMMAND]...",
		Short: "Help about any command",
		Long:  "Show the help of a command: 'petrel help block create' is 'petrel block create --help'.",
		ValidArgsFunction: func(c *cobra.Command, pos []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			cmd, _, err := c.Root().Find(pos)
			if err != nil || cmd == nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []cobra.Completion
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					out = append(out, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, pos []string) error {
			cmd, rest, err := c.Root().Find(pos)
			if err != nil || cmd == nil || len(rest) > 0 {
				return usageError{fmt.Errorf("unknown help topic %q (see 'petrel help' for the commands)", strings.Join(pos, " "))}
			}
			cmd.InitDefaultHelpFlag()
			return cmd.Help()
		},
	}
}
