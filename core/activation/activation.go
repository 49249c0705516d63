// Package activation gives network daemons their listening socket either
// from systemd socket activation or by binding an address themselves, so
// the same binary runs under a .socket unit (no privileges needed to bind
// a port, started on the first connection) or stand-alone.
package activation

import (
	"fmt"
	"net"
	"os"
	"strconv"
)

// Systemd is the listen specification that selects the socket systemd
// passed in (the first one, file descriptor 3).
const Systemd = "systemd"

// firstFD is the first file descriptor systemd passes (SD_LISTEN_FDS_START).
const firstFD = 3

// Listener returns the listener for spec: the socket inherited from
// systemd when spec is "systemd", otherwise a new TCP listener on spec
// (host:port). An inherited socket is only accepted when LISTEN_PID names
// this process, so a variable leaked from a parent is never mistaken for
// activation; the activation variables are then removed from the
// environment so that child processes do not see them.
func Listener(spec string) (net.Listener, error) {
	if spec != Systemd {
		lis, err := net.Listen("tcp", spec)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", spec, err)
		}
		return lis, nil
	}
	if err := check(os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getpid()); err != nil {
		return nil, err
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	f := os.NewFile(firstFD, "systemd-socket")
	if f == nil {
		return nil, fmt.Errorf("systemd socket activation: file descriptor %d is not open", firstFD)
	}
	// FileListener duplicates the descriptor; the original is closed on
	// every path so that only the listener holds the socket.
	defer f.Close()
	lis, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("systemd socket activation: file descriptor %d: %w", firstFD, err)
	}
	return lis, nil
}

// check validates the activation variables for process pid.
func check(listenPID, listenFDs string, pid int) error {
	if listenPID == "" || listenFDs == "" {
		return fmt.Errorf("systemd socket activation: LISTEN_PID and LISTEN_FDS are not set (start this through its .socket unit, or give a host:port to listen on)")
	}
	p, err := strconv.Atoi(listenPID)
	if err != nil || p != pid {
		return fmt.Errorf("systemd socket activation: LISTEN_PID=%q is not this process (%d)", listenPID, pid)
	}
	n, err := strconv.Atoi(listenFDs)
	if err != nil || n < 1 {
		return fmt.Errorf("systemd socket activation: LISTEN_FDS=%q passes no socket", listenFDs)
	}
	if n > 1 {
		return fmt.Errorf("systemd socket activation: LISTEN_FDS=%d, want exactly one socket (one ListenStream= line)", n)
	}
	return nil
}
