package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/petrel-vmm/petrel/cmd/internal/cmdline"
)

// readmeLines returns the command lines of the README's code blocks
// (indented by four spaces) as fields, with continuation lines joined,
// trailing comments, a leading sudo and a trailing & removed.
func readmeLines(t *testing.T) [][]string {
	t.Helper()
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines [][]string
	sc := bufio.NewScanner(f)
	pending := ""
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "    ") {
			pending = ""
			continue
		}
		line = strings.TrimSpace(line)
		if pending != "" {
			line = pending + " " + line
			pending = ""
		}
		if strings.HasSuffix(line, `\`) {
			pending = strings.TrimSuffix(line, `\`)
			continue
		}
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) > 0 && fields[0] == "sudo" {
			fields = fields[1:]
		}
		if len(fields) > 0 && fields[len(fields)-1] == "&" {
			fields = fields[:len(fields)-1]
		}
		if len(fields) == 0 || strings.Contains(line, "──") {
			continue // the architecture diagram
		}
		lines = append(lines, fields)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// readmeCommands returns the README's command lines of program (run
// from PATH or from a clone's bin/), without the program name.
func readmeCommands(t *testing.T, program string) [][]string {
	t.Helper()
	var cmds [][]string
	for _, fields := range readmeLines(t) {
		if fields[0] == program || fields[0] == "bin/"+program {
			cmds = append(cmds, fields[1:])
		}
	}
	return cmds
}

// TestReadmeCommands checks every petrel command the README shows
// against the real command tree: the subcommand exists, every flag is
// defined and takes a value where one is given, and the positional
// arguments are what the command accepts. The README cannot drift from
// the CLI unnoticed.
func TestReadmeCommands(t *testing.T) {
	cmds := readmeCommands(t, "petrel")
	if len(cmds) < 20 {
		t.Fatalf("found only %d petrel commands in README.md", len(cmds))
	}
	for _, args := range cmds {
		a := &app{out: io.Discard, errw: io.Discard}
		root := a.rootCmd()
		cmd, rest, err := root.Find(args)
		if err != nil {
			t.Errorf("petrel %s: %v", strings.Join(args, " "), err)
			continue
		}
		if cmd == root {
			t.Errorf("petrel %s: no such command", strings.Join(args, " "))
			continue
		}
		if err := cmd.ParseFlags(rest); err != nil {
			t.Errorf("petrel %s: %v", strings.Join(args, " "), err)
			continue
		}
		if cmd.Args != nil {
			if err := cmd.Args(cmd, cmd.Flags().Args()); err != nil {
				t.Errorf("petrel %s: %v", strings.Join(args, " "), err)
			}
		}
		if !cmd.Runnable() || isGroup(cmd) {
			t.Errorf("petrel %s: %s is a command group, not a command", strings.Join(args, " "), cmd.CommandPath())
		}
	}
}

// TestReadmeDaemonCommands checks the README's petreld and
// petrel-endpoint command lines against their real flags, as
// TestReadmeCommands does for petrel's: a clone's user copies them.
func TestReadmeDaemonCommands(t *testing.T) {
	for program, mk := range map[string]func() *cobra.Command{
		"petreld":         func() *cobra.Command { return cmdline.Petreld(func(cmdline.PetreldOptions) error { return nil }) },
		"petrel-endpoint": func() *cobra.Command { return cmdline.Endpoint(func(cmdline.EndpointOptions) error { return nil }) },
	} {
		cmds := readmeCommands(t, program)
		if len(cmds) == 0 {
			t.Errorf("README.md shows no %s command line", program)
		}
		for _, args := range cmds {
			var out, errw bytes.Buffer
			if code := cmdline.Execute(mk(), args, &out, &errw); code != cmdline.ExitOK {
				t.Errorf("%s %s: exit %d: %s", program, strings.Join(args, " "), code, errw.String())
			}
		}
	}
}

// TestReadmeMakeTargets checks that every make target the README names,
// in a code block or in running text, is one the Makefile has.
func TestReadmeMakeTargets(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([A-Za-z0-9_. $()-]+):([^=]|$)`).FindAllStringSubmatch(string(mk), -1) {
		for _, name := range strings.Fields(m[1]) {
			targets[name] = true
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	for _, m := range regexp.MustCompile("`make ([a-z][a-z0-9-]*)").FindAllStringSubmatch(string(readme), -1) {
		named[m[1]] = true
	}
	for _, fields := range readmeLines(t) {
		for i, f := range fields {
			if f == "make" {
				for _, target := range fields[i+1:] {
					if !strings.Contains(target, "=") {
						named[target] = true
					}
				}
				break
			}
		}
	}
	if len(named) < 5 {
		t.Fatalf("found only %d make targets in README.md", len(named))
	}
	for target := range named {
		if !targets[target] {
			t.Errorf("README.md names make %s, which the Makefile does not have", target)
		}
	}
}

// TestCIRunsReadmeTestCommand checks that .ci/run ends with exactly the
// command the README calls the test command, so that what CI runs and
// what a newcomer is told to run cannot drift apart.
func TestCIRunsReadmeTestCommand(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var want string
	_, after, found := strings.Cut(string(readme), "the test command")
	if found {
		for _, line := range strings.Split(after, "\n") {
			if strings.HasPrefix(line, "    ") {
				want = strings.TrimSpace(line)
				break
			}
		}
	}
	if want == "" {
		t.Fatal(`README.md names no test command (an indented line after "the test command")`)
	}
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for _, line := range strings.Split(string(ci), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			last = l
		}
	}
	if last != want {
		t.Fatalf(".ci/run ends with %q, but the README's test command is %q", last, want)
	}
}
