//go:build !linux

package hostdev

import "errors"

// OpenTap fails: tap interfaces are attached through Linux's /dev/net/tun.
func OpenTap(string) (int, error) {
	return -1, errors.New("tap interfaces can only be attached on Linux")
}

// closeFD does nothing: OpenTap never returns a descriptor here.
func closeFD(int) {}
