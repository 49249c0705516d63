package main

import "golang.org/x/sys/unix"

// ioctlGetTermios is the ioctl that reads a terminal's settings; it fails
// on anything that is not a terminal, which is how isTerminal tells.
const ioctlGetTermios = unix.TCGETS
