// Package faketender is a stand-in for solo5-hvt and solo5-spt in tests:
// it parses the real tender command line strictly, checks the image's
// manifest against the configured devices as the real tenders do, prints
// console lines, and exits the way it is told — including, like
// solo5-hvt, printing "Exiting on signal 15" and exiting 1 on SIGTERM.
//
// Tests run it through the re-exec pattern: a test binary's TestMain calls
// MaybeRun, and a small wrapper script (WriteWrapper) makes that binary
// look like a tender executable to petreld and its plugins.
//
// The unikernel arguments after IMAGE control it:
//
//	lines=N      print N console lines "line 1" ... "line N" (default 1)
//	rate=N       print at most N lines per second (default: as fast as
//	             it can)
//	delay=DUR    wait DUR (a Go duration) before printing anything, so
//	             that a test can start following the console first
//	exit=N       exit with code N once done (default 0)
//	run=DUR      stay up for DUR (a Go duration) before exiting; "forever"
//	             stays up until a signal
//	stderr=TEXT  print TEXT on stderr first
//	child=1      start a child process (sleep) that lives as long as the
//	             tender, as a tender that runs its guest in a child does,
//	             and print "child PID"
package faketender

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// EnvRun makes MaybeRun act as the fake tender.
const EnvRun = "PETREL_FAKE_TENDER"

// EnvName overrides the program name used in messages (default
// "solo5-hvt").
const EnvName = "PETREL_FAKE_TENDER_NAME"

// ABIVersion is the Solo5 ABI version the fake tender claims.
const ABIVersion = 2

// MaybeRun runs the fake tender and exits if EnvRun is set; otherwise it
// returns. Call it first thing in TestMain.
func MaybeRun() {
	if os.Getenv(EnvRun) == "" {
		return
	}
	os.Exit(Main(os.Args[1:]))
}

// WriteWrapper writes an executable script in dir that runs the current
// test binary as the fake tender, and returns its path.
func WriteWrapper(dir, name string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	script := fmt.Sprintf("#!/bin/sh\n%s=1 %s=%s exec %q \"$@\"\n", EnvRun, EnvName, name, exe)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		return "", fmt.Errorf("write fake tender wrapper: %w", err)
	}
	return p, nil
}

// Main is the fake tender's entry point; it returns the exit code.
func Main(args []string) int {
	prog := os.Getenv(EnvName)
	if prog == "" {
		prog = "solo5-hvt"
	}
	ta, err := solo5.ParseTenderArgs(args)
	switch {
	case errors.Is(err, solo5.ErrVersion):
		fmt.Fprintf(os.Stderr, "%s (Petrel fake tender) ABI version %d\n", prog, ABIVersion)
		return 0
	case errors.Is(err, solo5.ErrHelp):
		fmt.Fprintf(os.Stderr, "usage: %s [--mem=MB] [--net:NAME=IFACE] [--block:NAME=PATH] -- IMAGE [ARGS...]\n", prog)
		return 0
	case err != nil:
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		return 1
	}
	im, err := solo5.ReadFile(ta.Image)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s: %v\n", prog, ta.Image, err)
		return 1
	}
	var nets, blocks []string
	for _, n := range ta.Nets {
		nets = append(nets, n.Name)
	}
	for _, b := range ta.Blocks {
		blocks = append(blocks, b.Name)
	}
	if err := solo5.ValidateDevices(im, nets, blocks); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	lines, code, run, rate := 1, 0, time.Duration(0), 0
	forever := false
	for _, a := range ta.Args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "lines":
			lines, _ = strconv.Atoi(v)
		case "rate":
			rate, _ = strconv.Atoi(v)
		case "delay":
			d, _ := time.ParseDuration(v)
			time.Sleep(d)
		case "exit":
			code, _ = strconv.Atoi(v)
		case "run":
			if v == "forever" {
				forever = true
			} else {
				run, _ = time.ParseDuration(v)
			}
		case "stderr":
			fmt.Fprintln(os.Stderr, v)
		case "child":
			child := exec.Command("sleep", "86400")
			child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := child.Start(); err != nil {
				fmt.Fprintf(os.Stderr, "%s: start child: %v\n", prog, err)
				return 1
			}
			fmt.Printf("child %d\n", child.Process.Pid)
		}
	}
	fmt.Printf("Solo5: Petrel fake tender, memory %d MB, args %q\n", ta.MemMB, ta.Args)
	start := time.Now()
	for i := 1; i <= lines; i++ {
		if rate > 0 && i%100 == 0 {
			if d := time.Until(start.Add(time.Duration(int64(i) * int64(time.Second) / int64(rate)))); d > 0 {
				time.Sleep(d)
			}
		}
		fmt.Printf("line %d\n", i)
	}
	var timeout <-chan time.Time
	if !forever {
		timeout = time.After(run)
	}
	select {
	case s := <-sigs:
		n := 0
		if sig, ok := s.(syscall.Signal); ok {
			n = int(sig)
		}
		fmt.Fprintf(os.Stderr, "%s: Exiting on signal %d\n", prog, n)
		return 1
	case <-timeout:
		fmt.Printf("Solo5: solo5_exit(%d) called\n", code)
		return code
	}
}
