package main

import (
	"math"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"64", 64}, {"512M", 512}, {"512m", 512}, {"512MB", 512}, {"512Mi", 512}, {"512MiB", 512},
		{"1G", 1024}, {"1g", 1024}, {"1Gi", 1024}, {"1GB", 1024}, {"1GiB", 1024}, {"64G", 65536},
		{"1.5G", 1536}, {".5G", 512}, {"1T", 1 << 20}, {"2048K", 2}, {"1048576b", 1}, {"0", 0}, {" 8M ", 8},
		{"4 G", 4096},
	} {
		got, err := parseSize(c.in, math.MaxInt64)
		if err != nil || got != c.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"64X", "unknown unit \"X\""},
		{"G", "not a size"},
		{"-1", "not a size"},
		{"1,5G", "not a size"},
		{"", "not a size"},
		{"1e3", "not a size"},
		{"1e", `unknown unit "e"`},
		{"512K", "not a whole number of megabytes"},
		{"1.3M", "not a whole number of megabytes"},
		{"4096T", "more than the largest size here, 4294967295 MB"},
		{"99999999999999999999999", "more than the largest size"},
	} {
		_, err := parseSize(c.in, math.MaxUint32)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseSize(%q): error %v, want one saying %q", c.in, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "strconv") {
			t.Errorf("parseSize(%q): error %q shows Go's parser", c.in, err)
		}
	}
}

// TestSizeFlags checks that every flag and argument that takes a size
// parses it with the one parser, refusing bad ones as usage errors (exit
// 2) with a sentence naming the flag, before petreld is asked anything.
func TestSizeFlags(t *testing.T) {
	sock := "/nonexistent/petreld.sock"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "vm", "x.hvt", "--mem", "64X"}, `--mem 64X: unknown unit "X"`},
		{[]string{"create", "vm", "x.hvt", "--mem", "0"}, "--mem 0: a VM needs memory; leave --mem out for petreld's default (32 MB)"},
		{[]string{"create", "vm", "x.hvt", "--mem", "0G"}, "--mem 0G: a VM needs memory"},
		{[]string{"create", "vm", "x.hvt", "--mem", "4096T"}, "--mem 4096T: more than the largest size here"},
		{[]string{"create", "vm", "x.hvt", "--mem=1.5M"}, "--mem 1.5M: not a whole number of megabytes"},
		{[]string{"policy", "add", "team", "--vms", "2", "--mem", "lots"}, "--mem lots: not a size"},
		{[]string{"policy", "add", "team", "--vms", "2", "--mem", "1G", "--block", "1Q"}, `--block 1Q: unknown unit "Q"`},
		{[]string{"policy", "add", "team", "--vms", "2", "--mem", "1G", "--images", "x"}, "--images x: not a size"},
		{[]string{"policy", "add", "team", "--vms", "two", "--mem", "1G"}, "--vms two: not a number"},
		{[]string{"--ca", "c.pem", "--ca-key", "c.key", "ca", "sign-policy", "x.csr", "--vms", "1", "--mem", "1GG", "--out", "x.pem"}, `--mem 1GG: unknown unit "GG"`},
		{[]string{"--ca", "c.pem", "--ca-key", "c.key", "ca", "sign-policy", "x.csr", "--vms", "1", "--mem", "1G", "--block", "-5", "--out", "x.pem"}, "--block -5: not a size"},
		{[]string{"block", "create", "disk", "64X"}, `SIZE 64X: unknown unit "X"`},
		{[]string{"block", "create", "disk", "0"}, "SIZE 0: a block device needs at least 1 MB"},
		{[]string{"create", "vm", "x.hvt", "--cpu", "x"}, "--cpu x: not a number"},
	} {
		code, _, errText := runPetrel(append([]string{"--socket", sock}, c.args...)...)
		if code != exitUsage {
			t.Errorf("petrel %v: exit %d, want %d (%s)", c.args, code, exitUsage, errText)
		}
		if !strings.Contains(errText, c.want) {
			t.Errorf("petrel %v: error %q does not say %q", c.args, errText, c.want)
		}
		if strings.Contains(errText, "strconv") || strings.Contains(errText, "invalid argument") {
			t.Errorf("petrel %v: error %q shows Go's parser", c.args, errText)
		}
	}
	// Good sizes get past the command line: the daemon, absent here, is
	// the next thing they meet.
	for _, args := range [][]string{
		{"policy", "add", "team", "--vms", "2", "--mem", "64G", "--block", "512Mi", "--images", "1Gi"},
		{"policy", "add", "team", "--vms", "0", "--mem", "0"},
		{"block", "create", "disk", "1G"},
	} {
		if code, _, errText := runPetrel(append([]string{"--socket", sock}, args...)...); code != exitUnreachable {
			t.Errorf("petrel %v: exit %d, want %d (%s)", args, code, exitUnreachable, errText)
		}
	}
}
