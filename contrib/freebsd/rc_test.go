// Package freebsd_test checks Petrel's FreeBSD rc.d scripts as far as a
// non-FreeBSD host can: shell syntax and the rc.subr conventions that a
// typo would silently break.
package freebsd_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestScripts(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("sh not found: cannot check the rc.d scripts' syntax")
	}
	for _, c := range []struct{ file, name string }{
		{"petreld", "petreld"},
		{"petrel_endpoint", "petrel_endpoint"},
	} {
		if out, err := exec.Command(sh, "-n", c.file).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", c.file, err, out)
		}
		src, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		s := string(src)
		for _, want := range []string{
			"# PROVIDE: " + c.name + "\n",
			`name="` + c.name + `"`,
			`rcvar="` + c.name + `_enable"`,
			"load_rc_config \"$name\"",
			"run_rc_command \"$1\"",
		} {
			if !strings.Contains(s, want) {
				t.Errorf("%s lacks %q", c.file, want)
			}
		}
		// rc.subr puts ${name}_flags right after $command, which is
		// daemon(8) here: extra petrel flags must use another variable.
		if strings.Contains(s, c.name+"_flags") {
			t.Errorf("%s uses %s_flags, which rc.subr passes to daemon(8)", c.file, c.name)
		}
		if fi, err := os.Stat(c.file); err != nil || fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s is not executable", c.file)
		}
	}
}
