package policy

import (
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
)

// resubscribeDelay is how long WatchBridges waits before subscribing
// again after its subscription broke.
const resubscribeDelay = time.Second

// WatchBridges calls changed whenever a bridge appears, changes or goes
// away in the network namespace of the calling thread (petreld's), as
// netlink reports it, so that the root policy follows the host's bridges
// at once instead of at its next re-reading. It is subscribed when it
// returns: every change made afterwards is reported. When the kernel
// drops messages (a full socket buffer ends the subscription), it
// subscribes again and calls changed, since changes may have been missed.
// logf receives what goes wrong meanwhile. stop ends the watch and waits
// for it.
func WatchBridges(changed func(), logf func(error)) (stop func(), err error) {
	updates, done, err := subscribeLinks(logf)
	if err != nil {
		return nil, fmt.Errorf("watch bridges through netlink: %w", err)
	}
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		for {
			broken := followLinks(updates, quit, changed)
			// Closing done closes the socket; the reader then ends and
			// closes updates.
			close(done)
			for range updates {
			}
			if !broken {
				return
			}
			for {
				select {
				case <-quit:
					return
				case <-time.After(resubscribeDelay):
				}
				var serr error
				if updates, done, serr = subscribeLinks(logf); serr == nil {
					break
				}
				logf(fmt.Errorf("subscribe to link changes again: %w", serr))
			}
			changed()
		}
	}()
	return func() { close(quit); <-finished }, nil
}

// subscribeLinks subscribes to the link changes of the calling thread's
// network namespace; closing done ends the subscription (and the reader's
// complaint about its closed socket is not passed on).
func subscribeLinks(logf func(error)) (chan netlink.LinkUpdate, chan struct{}, error) {
	updates, done := make(chan netlink.LinkUpdate, 64), make(chan struct{})
	report := func(err error) {
		select {
		case <-done:
		default:
			logf(err)
		}
	}
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{ErrorCallback: report})
	if err != nil {
		close(done)
		return nil, nil, err
	}
	return updates, done, nil
}

// followLinks calls changed for each update about a bridge (created,
// changed or removed: the kernel describes the link in each) until quit
// (false) or the end of the subscription (true). Updates about other
// links, such as the taps of VMs starting and stopping, are left alone.
func followLinks(updates <-chan netlink.LinkUpdate, quit <-chan struct{}, changed func()) (broken bool) {
	for {
		select {
		case <-quit:
			return false
		case u, ok := <-updates:
			if !ok {
				return true
			}
			if u.Link != nil && u.Link.Type() == "bridge" {
				changed()
			}
		}
	}
}
