package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
)

// processRunner runs a plugin binary for go-plugin, as go-plugin's own
// runner does, and also says the moment the process has exited: go-plugin
// waits for the process on a goroutine of its own and only records the
// exit in a flag, which would have to be polled. exited is closed as soon
// as that wait returns, so a crash is noticed when it happens.
type processRunner struct {
	cmd    *exec.Cmd
	stdout io.ReadCloser
	stderr io.ReadCloser
	pid    int
	exited chan struct{}
}

var _ runner.Runner = (*processRunner)(nil)

// useProcessRunner makes cfg start its plugin through a processRunner,
// which it hands to started once made, so that the caller can follow the
// process. The command cfg.Cmd describes (path, process attributes) is
// kept; go-plugin's environment and standard input are added to it.
func useProcessRunner(cfg *plugin.ClientConfig, started func(*processRunner)) {
	tmpl := cfg.Cmd
	cfg.Cmd = nil
	cfg.RunnerFunc = func(_ hclog.Logger, spec *exec.Cmd, _ string) (runner.Runner, error) {
		cmd := exec.Command(tmpl.Path, tmpl.Args[1:]...)
		cmd.SysProcAttr = tmpl.SysProcAttr
		cmd.Env, cmd.Stdin = spec.Env, spec.Stdin
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, fmt.Errorf("plugin %s: stdout: %w", tmpl.Path, err)
		}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			return nil, fmt.Errorf("plugin %s: stderr: %w", tmpl.Path, err)
		}
		r := &processRunner{cmd: cmd, stdout: stdout, stderr: stderr, exited: make(chan struct{})}
		started(r)
		return r, nil
	}
}

// Start starts the process.
func (r *processRunner) Start(context.Context) error {
	if err := r.cmd.Start(); err != nil {
		close(r.exited)
		return err
	}
	r.pid = r.cmd.Process.Pid
	return nil
}

// Wait waits for the process to exit and then closes exited. go-plugin
// calls it once, on the goroutine that follows the process.
func (r *processRunner) Wait(context.Context) error {
	defer close(r.exited)
	return r.cmd.Wait()
}

// Kill kills the process; killing one that has exited is not an error.
func (r *processRunner) Kill(context.Context) error {
	if r.cmd.Process == nil {
		return nil
	}
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// Stdout carries go-plugin's handshake.
func (r *processRunner) Stdout() io.ReadCloser { return r.stdout }

// Stderr carries the plugin's log.
func (r *processRunner) Stderr() io.ReadCloser { return r.stderr }

// Name is the plugin binary.
func (r *processRunner) Name() string { return r.cmd.Path }

// ID is the process id, empty until the process has started.
func (r *processRunner) ID() string {
	if r.pid == 0 {
		return ""
	}
	return strconv.Itoa(r.pid)
}

// Diagnose explains a failed handshake.
func (r *processRunner) Diagnose(context.Context) string {
	return fmt.Sprintf("%s did not complete the plugin handshake: is it a Petrel plugin built for this machine?", r.cmd.Path)
}

// PluginToHost keeps addresses as they are: the plugin runs on this host.
func (r *processRunner) PluginToHost(network, addr string) (string, string, error) {
	return network, addr, nil
}

// HostToPlugin keeps addresses as they are: the plugin runs on this host.
func (r *processRunner) HostToPlugin(network, addr string) (string, string, error) {
	return network, addr, nil
}
