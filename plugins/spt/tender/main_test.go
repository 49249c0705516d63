package tender

import (
	"bytes"
	"strings"
	"testing"
)

func TestMainUsageAndVersion(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"--version"}, 0, []string{"petrel built-in spt tender: ABI version 2\n"}},
		{[]string{"--help"}, 0, []string{"usage: solo5-spt", "--mem=512", "lowest mapping", "--block-sector-size:NAME=512"}},
		{[]string{"--mem=x", "img"}, 1, []string{"solo5-spt: tender option \"--mem=x\"", "usage:"}},
		{[]string{"--frobnicate=1", "img"}, 1, []string{"unknown option"}},
		{nil, 1, []string{"solo5-spt: tender command line: missing"}},
	} {
		var stderr bytes.Buffer
		code := mainWith(c.args, &stderr)
		for _, w := range c.want {
			if code != c.code || !strings.Contains(stderr.String(), w) {
				t.Errorf("%q: exit %d, stderr %q; want exit %d and %q", c.args, code, stderr.String(), c.code, w)
			}
		}
	}
}
