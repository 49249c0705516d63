package oci

import "testing"

func TestParseReference(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"registry.example.org/team/web:1.4", "registry.example.org/team/web:1.4", true},
		{"localhost:5000/web", "localhost:5000/web:latest", true},
		{"localhost/web:dev", "localhost/web:dev", true},
		{"127.0.0.1:5000/web@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			"127.0.0.1:5000/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", true},
		{"team/web:1.4", "", false},    // no registry host: Petrel has no default
		{"web.hvt", "", false},         // a file name
		{"./web.hvt", "", false},       // a path
		{"/srv/images/web", "", false}, // an absolute path
		{"registry.example.org/", "", false},
		{"registry.example.org/Team/web", "", false}, // upper case repository
		{"registry.example.org/web@sha256:xyz", "", false},
	} {
		r, err := ParseReference(c.in)
		if (err == nil) != c.ok {
			t.Errorf("ParseReference(%q): %v, want ok=%v", c.in, err, c.ok)
			continue
		}
		if c.ok && r.String() != c.want {
			t.Errorf("ParseReference(%q) = %s, want %s", c.in, r, c.want)
		}
	}
}

func TestPlainHTTPOnlyForLoopbackOrListed(t *testing.T) {
	o := Options{InsecureRegistries: []string{"registry.lan:5000"}}
	for host, want := range map[string]bool{
		"localhost:5000": true, "localhost": true, "127.0.0.1:5000": true, "127.1.2.3": true, "[::1]:5000": true,
		"registry.lan:5000": true, "registry.lan": false, "registry.example.org": false, "10.0.0.1:5000": false,
		"localhost.example.org:5000": false,
	} {
		if got := o.plainHTTP(host); got != want {
			t.Errorf("plainHTTP(%q) = %v, want %v", host, got, want)
		}
	}
}
