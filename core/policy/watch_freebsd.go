package policy

import "errors"

// WatchBridges is not available on FreeBSD, which has no netlink route
// socket here: petreld re-reads the host's bridges when a policy names
// one it does not know, and at each deploy.
func WatchBridges(changed func(), logf func(error)) (stop func(), err error) {
	return nil, errors.New("following bridge changes is implemented with Linux's netlink only")
}
