package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// docsRoot is the real command tree with gen-docs in it.
func docsRoot(a *app) *cobra.Command {
	root := a.rootCmd()
	if c, _, err := root.Find([]string{"gen-docs"}); err != nil || c == root {
		root.AddCommand(a.genDocsCmd())
	}
	return root
}

func TestGenDocs(t *testing.T) {
	dir := t.TempDir()
	var out, errw bytes.Buffer
	a := &app{out: &out, errw: &errw}
	root := docsRoot(a)
	root.SetArgs([]string{"gen-docs", dir})
	root.SetOut(&out)
	root.SetErr(&errw)
	if err := root.Execute(); err != nil {
		t.Fatalf("gen-docs: %v (%s)", err, errw.String())
	}
	if !strings.Contains(out.String(), "man pages") {
		t.Errorf("output %q", out.String())
	}
	for _, f := range []string{"petrel.1", "petrel-create.1", "petrel-policy-add.1", "petrel-completion-bash.1"} {
		if _, err := os.Stat(filepath.Join(dir, "man", f)); err != nil {
			t.Errorf("no %s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "man", "petrel-gen-docs.1")); err == nil {
		t.Error("the hidden gen-docs command got a man page")
	}
	page, err := os.ReadFile(filepath.Join(dir, "man", "petrel-create.1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`.TH "PETREL\-CREATE" "1"`,
		`petrel\-create \- Deploy a unikernel image as a VM`,
		".SH SYNOPSIS\n.B petrel create\nNAME IMAGE [flags]\n",
		`\fB\-\-mem\fR \fIsize\fR`,
		".SH OPTIONS INHERITED FROM PARENT COMMANDS",
		`\fB\-\-socket\fR`,
		".SH EXAMPLES",
		".BR petrel (1)",
	} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("petrel-create.1 lacks %q", want)
		}
	}
	rootPage, err := os.ReadFile(filepath.Join(dir, "man", "petrel.1"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(rootPage, []byte(".BR petrel\\-create (1)")) {
		t.Error("petrel.1 does not list petrel-create")
	}
	// Remote mode's flags are described once, on petrel(1); the other
	// pages point there.
	if !bytes.Contains(rootPage, []byte(".SH REMOTE MODE OPTIONS")) || !bytes.Contains(rootPage, []byte(`\fB\-\-destination\fR \fIHOST[:PORT]\fR`)) {
		t.Error("petrel.1 does not describe the remote mode flags")
	}
	if bytes.Contains(page, []byte(`\fB\-\-destination\fR`)) || !bytes.Contains(page, []byte(".SH REMOTE MODE\n")) {
		t.Error("petrel-create.1 describes the remote mode flags instead of pointing to petrel(1)")
	}
	for _, f := range []string{"petrel.bash", "_petrel", "petrel.fish"} {
		b, err := os.ReadFile(filepath.Join(dir, "completions", f))
		if err != nil || !bytes.Contains(b, []byte("petrel")) {
			t.Errorf("completion %s: %v", f, err)
		}
	}

	// groff renders every page without a warning.
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Skip("groff not found: pages not rendered")
	}
	pages, _ := filepath.Glob(filepath.Join(dir, "man", "*.1"))
	for _, p := range pages {
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z", p)
		outb, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(outb)) > 0 {
			t.Errorf("groff %s: %v\n%s", filepath.Base(p), err, outb)
		}
	}
}

func TestRoffEscape(t *testing.T) {
	for in, want := range map[string]string{
		".hidden":      `\&.hidden`,
		"'quote":       `\&'quote`,
		`a\b`:          `a\eb`,
		"--mem":        `\-\-mem`,
		"plain words.": "plain words.",
	} {
		if got := roffEscape(in); got != want {
			t.Errorf("roffEscape(%q) = %q, want %q", in, got, want)
		}
	}
	var buf bytes.Buffer
	roffBlock(&buf, "first\n\n  .indented\n")
	if want := ".nf\nfirst\n.sp\n  .indented\n.fi\n"; buf.String() != want {
		t.Errorf("roffBlock = %q, want %q", buf.String(), want)
	}
}
