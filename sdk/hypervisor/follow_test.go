package hypervisor_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
)

// consoleOnly is a backend with consoles only: VM "a" printed two lines
// and exited, "b" prints one and runs until its follower goes; any other
// id is unknown.
type consoleOnly struct {
	hypervisor.Hypervisor
}

func (consoleOnly) Capabilities(context.Context) (*pluginv1.HypervisorCapabilities, error) {
	return &pluginv1.HypervisorCapabilities{Targets: []string{"hvt"}}, nil
}

func (consoleOnly) Console(ctx context.Context, req *pluginv1.ConsoleRequest, fn func(*pluginv1.ConsoleLine) error) error {
	switch req.GetId() {
	case "a":
		return fn(&pluginv1.ConsoleLine{TimeNs: 1, Text: "a1", More: []*pluginv1.ConsoleLine{{TimeNs: 2, Text: "a2"}}})
	case "b":
		if err := fn(&pluginv1.ConsoleLine{TimeNs: 1, Text: "b1"}); err != nil {
			return err
		}
		<-ctx.Done()
		return ctx.Err()
	}
	return hypervisor.ErrUnknownVM
}

// recvUntil receives messages until pred holds for one, and returns them
// all.
func recvUntil(t *testing.T, st hypervisor.ConsoleStream, pred func(*pluginv1.FollowConsolesMessage) bool) []*pluginv1.FollowConsolesMessage {
	t.Helper()
	var out []*pluginv1.FollowConsolesMessage
	for {
		m, err := st.Recv()
		if err != nil {
			t.Fatalf("Recv after %v: %v", out, err)
		}
		out = append(out, m)
		if pred(m) {
			return out
		}
	}
}

// TestFollowConsolesOverGRPC follows three VMs on one stream through the
// real plugin connection: the lines of each come tagged with its id, an
// exited VM's console ends, an unknown VM's ends with ErrUnknownVM, and
// a stopped VM's ends without a word.
func TestFollowConsolesOverGRPC(t *testing.T) {
	hv := sdktest.ServeHypervisor(t, consoleOnly{})
	caps, err := hv.Capabilities(context.Background())
	if err != nil || !caps.GetFollowsConsoles() || len(caps.GetTargets()) != 1 {
		t.Fatalf("Capabilities = %v, %v; want the backend's own and follows_consoles", caps, err)
	}
	f, ok := hv.(hypervisor.ConsoleFollower)
	if !ok {
		t.Fatalf("petreld's side of the connection (%T) does not follow consoles", hv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := f.FollowConsoles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "zz"} {
		if err := st.Send(&pluginv1.FollowConsolesRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
	}
	lines := map[string][]string{}
	ends := map[string]error{}
	for len(ends) < 2 || len(lines["b"]) < 1 {
		m, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range m.GetLines() {
			if len(l.GetMore()) != 0 {
				t.Errorf("line %q carries more", l.GetText())
			}
			lines[m.GetId()] = append(lines[m.GetId()], l.GetText())
		}
		if m.GetEnd() {
			ends[m.GetId()] = hypervisor.FollowEndError(m)
		}
	}
	if got := lines["a"]; len(got) != 2 || got[0] != "a1" || got[1] != "a2" {
		t.Errorf("lines of a: %q", got)
	}
	if err, ok := ends["a"]; !ok || err != nil {
		t.Errorf("end of a: %v (%v)", err, ok)
	}
	if err := ends["zz"]; !errors.Is(err, hypervisor.ErrUnknownVM) {
		t.Errorf("end of an unknown VM: %v, want ErrUnknownVM", err)
	}
	if err := st.Send(&pluginv1.FollowConsolesRequest{Id: "b", Stop: true}); err != nil {
		t.Fatal(err)
	}
	// A VM followed after the stop proves the stream went on, and that
	// nothing came for b in between.
	if err := st.Send(&pluginv1.FollowConsolesRequest{Id: "a"}); err != nil {
		t.Fatal(err)
	}
	for _, m := range recvUntil(t, st, func(m *pluginv1.FollowConsolesMessage) bool { return m.GetId() == "a" && m.GetEnd() }) {
		if m.GetId() == "b" {
			t.Errorf("message for b after its stop: %v", m)
		}
	}
}

// TestFollowConsolesOldPlugin asks a plugin that predates FollowConsoles:
// the stream fails with errors.ErrUnsupported, which sends petreld to
// Console.
func TestFollowConsolesOldPlugin(t *testing.T) {
	conn := oldPluginConn(t)
	f := hypervisor.NewClient(conn).(hypervisor.ConsoleFollower)
	st, err := f.FollowConsoles(context.Background())
	if err == nil {
		_, err = st.Recv()
	}
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("FollowConsoles on an old plugin: %v, want errors.ErrUnsupported", err)
	}
}
