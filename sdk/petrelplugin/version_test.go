package petrelplugin

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// infoOnly is a backend that only says who it is: VersionFlag needs no
// more.
type infoOnly struct{ hypervisor.Hypervisor }

func (infoOnly) Info(context.Context) (*pluginv1.PluginInfo, error) {
	return &pluginv1.PluginInfo{Kind: pluginv1.Kind_KIND_HYPERVISOR, Name: "fake", Version: "1.2.3"}, nil
}

// TestVersionFlag: a plugin binary run with --version prints its name and
// the version its Info reports, and exits 0 without serving.
func TestVersionFlag(t *testing.T) {
	if os.Getenv("PETREL_TEST_VERSION_FLAG") == "1" {
		os.Args = []string{"/usr/libexec/petrel/petrel-plugin-fake", VersionFlag}
		ServeHypervisor(infoOnly{})
		t.Fatal("ServeHypervisor returned")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestVersionFlag$")
	cmd.Env = append(os.Environ(), "PETREL_TEST_VERSION_FLAG=1")
	out, err := cmd.Output()
	if err != nil || string(out) != "petrel-plugin-fake 1.2.3\n" {
		t.Fatalf("--version printed %q, %v", out, err)
	}
}
