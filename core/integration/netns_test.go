package integration

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// inNamespace runs f on an OS thread that has entered the named network
// namespace (a name under /var/run/netns; "" is the test's own), so that
// the sockets f makes belong to that namespace; a socket keeps its
// namespace for its whole life, whichever thread uses it later. The
// thread moves back to its own namespace afterwards and returns to the
// pool; only if that fails is it left locked, so that it ends with its
// goroutine instead of serving others in the wrong namespace. Ending
// threads is avoided otherwise: a child started from one with a
// parent-death signal (as the tests' servers are) would be killed with
// it.
func inNamespace(name string, f func() error) error {
	if name == "" {
		return f()
	}
	done := make(chan error, 1)
	go func() {
		// Owned by this call: it ends when f returns.
		runtime.LockOSThread()
		// inOwn tells whether the thread is in its own namespace.
		inOwn := true
		defer func() {
			if inOwn {
				runtime.UnlockOSThread()
			}
		}()
		done <- func() error {
			own, err := netns.Get()
			if err != nil {
				return fmt.Errorf("own network namespace: %w", err)
			}
			defer own.Close()
			ns, err := netns.GetFromName(name)
			if err != nil {
				return fmt.Errorf("network namespace %s: %w", name, err)
			}
			defer ns.Close()
			if err := netns.Set(ns); err != nil {
				return fmt.Errorf("enter network namespace %s: %w", name, err)
			}
			inOwn = false
			ferr := f()
			inOwn = netns.Set(own) == nil
			return ferr
		}()
	}()
	return <-done
}

// listenIn listens on a TCP address in a network namespace.
func listenIn(ns, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNamespace(ns, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in namespace %q: %w", addr, ns, err)
	}
	return l, nil
}

// dialIn connects to a TCP address from a network namespace.
func dialIn(ns, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNamespace(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect to %s from namespace %q: %w", addr, ns, err)
	}
	return c, nil
}

// forward relays every TCP connection made to listen in namespace from to
// dial in namespace to, as a port forward between namespaces: it lets a
// process in a host's namespace reach a loopback service of the test
// (the API server, the registry) and the other way round, with nothing
// leaving loopback. An empty dial is the address it listens on (which
// listen may leave to the kernel with port 0). It returns that address
// and stops, with every connection it relays, when the test ends.
func forward(t testing.TB, from, listen, to, dial string) string {
	t.Helper()
	l, err := listenIn(from, listen)
	if err != nil {
		t.Fatal(err)
	}
	if dial == "" {
		dial = l.Addr().String()
	}
	var (
		mu     sync.Mutex
		conns  = map[net.Conn]bool{}
		closed bool
		wg     sync.WaitGroup
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			c.Close()
			return false
		}
		conns[c] = true
		return true
	}
	untrack := func(c net.Conn) {
		mu.Lock()
		delete(conns, c)
		mu.Unlock()
		c.Close()
	}
	relay := func(in net.Conn) {
		defer wg.Done()
		defer untrack(in)
		out, err := dialIn(to, dial)
		if err != nil {
			return
		}
		if !track(out) {
			return
		}
		defer untrack(out)
		// Either direction ending ends the connection: what is relayed
		// here (TLS, HTTP) does not use half-closed connections.
		done := make(chan struct{})
		go func() {
			// Owned by relay, which waits for it.
			io.Copy(out, in)
			out.Close()
			in.Close()
			close(done)
		}()
		io.Copy(in, out)
		in.Close()
		out.Close()
		<-done
	}
	wg.Add(1)
	go func() {
		// Owned by forward: ends when the listener is closed at cleanup.
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if !track(c) {
				continue
			}
			wg.Add(1)
			go relay(c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}
