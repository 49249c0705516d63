package main

import (
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// commandPaths lists the argument paths of every command below root
// (hidden ones included), such as ["block", "create"].
func commandPaths(c *cobra.Command, prefix []string) [][]string {
	var out [][]string
	for _, sub := range c.Commands() {
		p := append(append([]string(nil), prefix...), sub.Name())
		out = append(out, p)
		out = append(out, commandPaths(sub, p)...)
	}
	return out
}

// TestUnknownCommandsAndFlags walks the whole command tree: an unknown
// flag, an unknown subcommand of a group, extra arguments and an unknown
// help topic are usage errors (exit 2) everywhere, and help is on
// standard output with exit 0.
func TestUnknownCommandsAndFlags(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "petreld.sock")
	root := (&app{out: io.Discard, errw: io.Discard}).rootCmd()
	paths := commandPaths(root, nil)
	if len(paths) < 30 {
		t.Fatalf("found only %d commands", len(paths))
	}
	expect := func(want int, args ...string) (string, string) {
		t.Helper()
		code, out, errText := runPetrel(append([]string{"--socket", sock}, args...)...)
		if code != want {
			t.Errorf("petrel %s: exit %d, want %d (%s)", strings.Join(args, " "), code, want, errText)
		}
		return out, errText
	}
	for _, p := range paths {
		cmd, _, err := root.Find(p)
		if err != nil {
			t.Fatal(err)
		}
		if p[0] == "__complete" || p[0] == "__completeNoDesc" {
			continue
		}
		_, errText := expect(exitUsage, append(p, "--no-such-flag")...)
		if !strings.Contains(errText, "unknown flag: --no-such-flag") {
			t.Errorf("petrel %s --no-such-flag: %q", strings.Join(p, " "), errText)
		}
		if out, _ := expect(exitOK, append(p, "--help")...); !strings.Contains(out, "Usage:") {
			t.Errorf("petrel %s --help: no usage on standard output", strings.Join(p, " "))
		}
		if p[0] != "help" {
			if out, _ := expect(exitOK, append([]string{"help"}, p...)...); !strings.Contains(out, "Usage:") {
				t.Errorf("petrel help %s: no usage on standard output", strings.Join(p, " "))
			}
			expect(exitUsage, append(append([]string{"help"}, p...), "no-such-topic")...)
		}
		switch {
		case isGroup(cmd):
			_, errText := expect(exitUsage, append(p, "no-such-command")...)
			if !strings.Contains(errText, `unknown command "no-such-command"`) {
				t.Errorf("petrel %s no-such-command: %q", strings.Join(p, " "), errText)
			}
		case cmd.Args != nil && cmd.Args(cmd, make([]string, 9)) != nil:
			expect(exitUsage, append(p, "a", "b", "c", "d", "e", "f", "g", "h", "i")...)
		}
	}
	expect(exitUsage, "no-such-command")
	expect(exitUsage, "help", "no-such-topic")
	expect(exitUsage, "--no-such-flag")
	if out, _ := expect(exitOK); !strings.Contains(out, "Usage:") {
		t.Error("petrel without arguments does not show its help")
	}
	// Typos of a subcommand are not taken for a path to list.
	_, errText := expect(exitUsage, "policy", "ad")
	if !strings.Contains(errText, "did you mean add?") {
		t.Errorf("petrel policy ad: %q", errText)
	}
	expect(exitUsage, "block", "craete")
	expect(exitUnreachable, "block", "team")
	expect(exitUnreachable, "policy", ":ad")
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{{"add", "add", 0}, {"ad", "add", 1}, {"craete", "create", 1}, {"cretae", "create", 1}, {"", "abc", 3}, {"team", "add", 4}} {
		if got := editDistance(c.a, c.b); got != c.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

// flagLine matches help's line for a remote flag.
var flagLine = regexp.MustCompile(`(?m)^\s+--(destination|server-ca|server-name|cert|key|csr) [A-Z]`)

// TestRemoteFlagsGroupedOnce: the root's help lists the remote-mode
// flags in a group of their own; every other command's help points there
// in one line instead of listing them again (keeping --ca and --ca-key,
// which sign, under 'petrel ca'), and groups show no flags line of their
// own in their usage.
func TestRemoteFlagsGroupedOnce(t *testing.T) {
	root := (&app{out: io.Discard, errw: io.Discard}).rootCmd()
	_, out, _ := runPetrel("--help")
	flags := out[strings.Index(out, "\nFlags:"):]
	group := out[strings.Index(out, "Remote mode flags"):]
	for _, f := range []string{"--destination HOST[:PORT]", "--ca FILE", "--ca-key FILE", "--server-ca FILE", "--server-name NAME", "--cert FILE", "--key FILE", "--csr FILE"} {
		if strings.Count(flags, f) != 1 || !strings.Contains(group, f) {
			t.Errorf("petrel --help: %s is not listed once, among the remote mode flags", f)
		}
	}
	if !strings.Contains(out, "Usage:\n  petrel COMMAND\n") {
		t.Errorf("petrel --help: usage line is not 'petrel COMMAND':\n%s", out)
	}
	for _, p := range commandPaths(root, nil) {
		if p[0] == "gen-docs" {
			continue
		}
		_, out, _ := runPetrel(append(p, "--help")...)
		path := "petrel " + strings.Join(p, " ")
		if flagLine.MatchString(out) {
			t.Errorf("%s --help lists the remote mode flags again", path)
		}
		if !strings.Contains(out, "Remote mode: ") || !strings.Contains(out, "--destination") {
			t.Errorf("%s --help does not point to the remote mode flags", path)
		}
		if signing := strings.Contains(out, "--ca-key FILE"); signing != (p[0] == "ca") {
			t.Errorf("%s --help: signing flags listed: %t", path, signing)
		}
		if cmd, _, _ := root.Find(p); isGroup(cmd) && strings.Contains(out, "[flags]") {
			t.Errorf("%s --help: a group's usage shows [flags]", path)
		}
	}
}
