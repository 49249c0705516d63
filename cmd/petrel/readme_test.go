package main

import (
	"bufio"
	"io"
	"os"
	"strings"
	"testing"
)

// readmeCommands returns the petrel command lines of the README's code
// blocks (indented by four spaces), with continuation lines joined,
// trailing comments removed and the program name dropped.
func readmeCommands(t *testing.T) [][]string {
	t.Helper()
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds [][]string
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
		if len(fields) == 0 || (fields[0] != "petrel" && fields[0] != "bin/petrel") || strings.Contains(line, "──") {
			continue // not a command, or the architecture diagram
		}
		cmds = append(cmds, fields[1:])
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cmds
}

// TestReadmeCommands checks every petrel command the README shows
// against the real command tree: the subcommand exists, every flag is
// defined and takes a value where one is given, and the positional
// arguments are what the command accepts. The README cannot drift from
// the CLI unnoticed.
func TestReadmeCommands(t *testing.T) {
	cmds := readmeCommands(t)
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
