package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// genDocsCmd writes man pages and shell completions generated from the
// command tree, so they never disagree with `petrel --help`. It is hidden:
// packagers run it (`make docs`), users read its output.
func (a *app) genDocsCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "gen-docs DIR",
		Short:  "Write man pages (DIR/man) and shell completions (DIR/completions)",
		Hidden: true,
		Args:   args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			root := cmd.Root()
			root.InitDefaultCompletionCmd()
			n, err := writeManPages(root, filepath.Join(pos[0], "man"), version)
			if err != nil {
				return err
			}
			if err := writeCompletions(root, filepath.Join(pos[0], "completions")); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "wrote %d man pages to %s and completions to %s\n", n,
				filepath.Join(pos[0], "man"), filepath.Join(pos[0], "completions"))
			return nil
		},
	}
}

// writeCompletions writes bash, zsh and fish completions under the names
// their packaging directories expect.
func writeCompletions(root *cobra.Command, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("completions: %w", err)
	}
	name := root.Name()
	for _, c := range []struct {
		file string
		gen  func(io.Writer) error
	}{
		{name + ".bash", func(w io.Writer) error { return root.GenBashCompletionV2(w, true) }},
		{"_" + name, root.GenZshCompletion},
		{name + ".fish", func(w io.Writer) error { return root.GenFishCompletion(w, true) }},
	} {
		var buf bytes.Buffer
		if err := c.gen(&buf); err != nil {
			return fmt.Errorf("completions %s: %w", c.file, err)
		}
		if err := os.WriteFile(filepath.Join(dir, c.file), buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("completions: %w", err)
		}
	}
	return nil
}

// manCommands lists root and every command below it that a user can run,
// parents before children.
func manCommands(root *cobra.Command) []*cobra.Command {
	list := []*cobra.Command{root}
	children := root.Commands()
	sort.Slice(children, func(i, j int) bool { return children[i].Name() < children[j].Name() })
	for _, c := range children {
		if !c.IsAvailableCommand() || c.IsAdditionalHelpTopicCommand() || c.Name() == "help" {
			continue
		}
		list = append(list, manCommands(c)...)
	}
	return list
}

// manName is a command's page name: its path joined by dashes.
func manName(c *cobra.Command) string {
	return strings.ReplaceAll(c.CommandPath(), " ", "-")
}

// writeManPages writes one section 1 page per command into dir and
// returns how many it wrote.
func writeManPages(root *cobra.Command, dir, version string) (int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("man pages: %w", err)
	}
	cmds := manCommands(root)
	for _, c := range cmds {
		var buf bytes.Buffer
		writeManPage(&buf, c, version)
		if err := os.WriteFile(filepath.Join(dir, manName(c)+".1"), buf.Bytes(), 0o644); err != nil {
			return 0, fmt.Errorf("man pages: %w", err)
		}
	}
	return len(cmds), nil
}

// roffEscape makes text safe in a roff line: backslashes escaped, and a
// leading dot or quote (which would start a request) neutralized.
func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// roffBlock writes text verbatim (no filling), line by line: the help
// texts are laid out by hand, with indented examples.
func roffBlock(w io.Writer, text string) {
	fmt.Fprintln(w, ".nf")
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if strings.TrimSpace(line) == "" {
			fmt.Fprintln(w, ".sp")
			continue
		}
		fmt.Fprintln(w, roffEscape(line))
	}
	fmt.Fprintln(w, ".fi")
}

// writeManPage renders one command as a man page.
func writeManPage(w io.Writer, c *cobra.Command, version string) {
	title := strings.ToUpper(manName(c))
	fmt.Fprintf(w, ".TH \"%s\" \"1\" \"\" \"%s\" \"Petrel Manual\"\n", roffEscape(title), roffEscape("petrel "+version))
	fmt.Fprintln(w, ".SH NAME")
	fmt.Fprintf(w, "%s \\- %s\n", roffEscape(manName(c)), roffEscape(c.Short))

	fmt.Fprintln(w, ".SH SYNOPSIS")
	use := c.UseLine()
	if isGroup(c) {
		use = c.CommandPath() + " COMMAND"
	}
	fmt.Fprintf(w, ".B %s\n", roffEscape(c.CommandPath()))
	if rest := strings.TrimSpace(strings.TrimPrefix(use, c.CommandPath())); rest != "" {
		fmt.Fprintln(w, roffEscape(rest))
	}

	fmt.Fprintln(w, ".SH DESCRIPTION")
	desc := c.Long
	if desc == "" {
		desc = c.Short
	}
	roffBlock(w, desc)

	if subs := availableChildren(c); len(subs) > 0 {
		fmt.Fprintln(w, ".SH COMMANDS")
		for _, s := range subs {
			fmt.Fprintln(w, ".TP")
			fmt.Fprintf(w, ".BR %s (1)\n", roffEscape(manName(s)))
			fmt.Fprintln(w, roffEscape(s.Short))
		}
	}
	local, localRemote := splitRemote(c, c.NonInheritedFlags())
	inherited, inheritedRemote := splitRemote(c, c.InheritedFlags())
	writeFlags(w, "OPTIONS", local)
	writeFlags(w, "REMOTE MODE OPTIONS", localRemote)
	writeFlags(w, "OPTIONS INHERITED FROM PARENT COMMANDS", inherited)
	if hasVisible(inheritedRemote) {
		fmt.Fprintln(w, ".SH REMOTE MODE")
		fmt.Fprintf(w, "%s run this command on another host; see\n.BR %s (1).\n",
			roffEscape(remoteNames(inheritedRemote)), roffEscape(manName(c.Root())))
	}
	if c.Example != "" {
		fmt.Fprintln(w, ".SH EXAMPLES")
		roffBlock(w, c.Example)
	}

	var see []string
	if c.HasParent() {
		see = append(see, manName(c.Parent()))
	}
	for _, s := range availableChildren(c) {
		see = append(see, manName(s))
	}
	if len(see) > 0 {
		fmt.Fprintln(w, ".SH SEE ALSO")
		for i, s := range see {
			sep := ","
			if i == len(see)-1 {
				sep = ""
			}
			fmt.Fprintf(w, ".BR %s (1)%s\n", roffEscape(s), sep)
		}
	}
}

func availableChildren(c *cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	for _, s := range c.Commands() {
		if s.IsAvailableCommand() && !s.IsAdditionalHelpTopicCommand() && s.Name() != "help" {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// writeFlags writes a flag set as a tagged list under heading.
func writeFlags(w io.Writer, heading string, fs *pflag.FlagSet) {
	var flags []*pflag.Flag
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden && f.Name != "help" {
			flags = append(flags, f)
		}
	})
	if len(flags) == 0 {
		return
	}
	fmt.Fprintf(w, ".SH %s\n", heading)
	for _, f := range flags {
		varname, usage := pflag.UnquoteUsage(f)
		tag := `\fB\-\-` + roffEscape(f.Name) + `\fR`
		if f.Shorthand != "" {
			tag = `\fB\-` + roffEscape(f.Shorthand) + `\fR, ` + tag
		}
		if varname != "" {
			tag += ` \fI` + roffEscape(varname) + `\fR`
		}
		fmt.Fprintln(w, ".TP")
		fmt.Fprintln(w, tag)
		if def := f.DefValue; def != "" && def != "false" && def != "0" && def != "[]" {
			usage += fmt.Sprintf(" (default %s)", def)
		}
		fmt.Fprintln(w, roffEscape(usage))
	}
}
