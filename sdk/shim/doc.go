// Package shim is the per-VM supervisor process of Petrel and the Go API
// that hypervisor plugins use to start and talk to it.
//
// # Why a shim
//
// A hypervisor plugin does not run a tender (solo5-hvt, solo5-spt, ...)
// itself. It starts one small petrel-shim process per VM, in a session of its
// own, and the shim starts the tender as its child. Because the shim is the
// tender's parent it can reap the real exit status and resource usage with
// wait4, and because it does not belong to the plugin's session, VMs survive
// the plugin or petreld being killed or upgraded: a restarted plugin finds
// the shim again through its unix socket. The shim keeps the console in a
// bounded ring buffer, can pin the tender to CPUs, and records the exit
// status on disk before it leaves, so the outcome of a VM is never lost just
// because nobody was listening at the moment it ended.
//
// The shim uses only the standard library and golang.org/x/sys (not even
// package net, which would link the C library) so that it stays within a
// few megabytes of resident memory per VM: about 3.5 MB idle and 4.5 MB
// after serving clients on x86-64. For the same reason it runs with
// GOMAXPROCS=1 and GOGC=20 unless the environment sets them, disables heap
// profiling, and hands memory freed by a burst of activity back to the
// kernel within a second. Launch sets GOMAXPROCS=1 in the shim's
// environment (unless the caller's sets it) and passes --own-gomaxprocs,
// so that the Go runtime starts with one processor (a shorter start-up,
// which precedes the guest's) while the tender gets the caller's
// environment unchanged.
//
// # Command line
//
//	petrel-shim --dir DIR [--cpus 0,2] [--console-lines 1000]
//	            [--console-bytes 1048576] [--line-max 4096]
//	            [--own-gomaxprocs] -- TENDER ARGS...
//
// DIR must exist (the launcher creates it 0700). The tender's stdout and
// stderr share one pipe, so their order is preserved; its stdin is
// /dev/null and it inherits the shim's environment. --cpus takes ids and
// ranges ("0,2-3"); each must be in the shim's own affinity mask.
//
// If file descriptor 3 is a pipe when the shim starts, the shim writes one
// JSON line to it, {"tender_pid":N} once the tender runs or {"error":"..."}
// when it could not be started, and closes it. Launch relies on this to
// report failures synchronously.
//
//	petrel-shim --spare
//
// starts a spare shim (Launcher): descriptor 3 is then a unix stream
// socket on which it waits for {"args":[...]}, the command line above,
// sent with the log file and the locked shim.lock attached (SCM_RIGHTS)
// and followed by end-of-file. It then runs as a shim started with those
// arguments, reporting readiness on the same socket. End-of-file with no
// work (its launcher is gone) makes it exit 0. Such a shim keeps its
// command line, which names no VM; its working directory is DIR (the
// tender's is the one the spare started in).
//
// # Files in DIR
//
//   - shim.sock: the control socket, removed when the shim exits.
//   - shim.json: {"shim_pid","tender_pid","started_at","argv"}, written
//     once the tender runs.
//   - console.jsonl: the console ring at exit, one Line per JSON line.
//   - exit.json: the Exit record. It is written after console.jsonl, so its
//     presence means console.jsonl is complete.
//   - shim.log: the shim's own stderr, redirected there by Launch.
//   - shim.lock: locked (flock) by the launcher, then by the shim for as
//     long as it runs (it inherits the locked file on descriptor 4), so
//     that a launcher that died mid-launch can be followed by one that
//     finds the run it started (Resume) instead of starting another.
//
// All of them except shim.log are written atomically (temporary file,
// fsync, rename, fsync of DIR). Stale console.jsonl and exit.json files of a
// previous run in the same DIR are removed before the tender starts.
//
// # Socket protocol
//
// A client connects to DIR/shim.sock, writes one JSON request on one line,
// reads one or more JSON response lines and closes the connection. Every
// request may instead be answered with {"error":"...","error_code":"..."};
// error_code is "exited" when the request needs a running tender and it has
// exited, "bad_request" for malformed or refused requests.
//
//	{"op":"info"}
//	  -> {"shim_pid":N,"tender_pid":N,"started_at":T,"exited":bool}
//	{"op":"wait"}
//	  -> blocks until the tender exits, then {"exit":{...as exit.json...}}
//	{"op":"kill","signal":15}
//	  -> {"ok":true}; only SIGHUP, SIGINT, SIGQUIT, SIGKILL and SIGTERM
//	     are accepted
//	{"op":"stats"}
//	  -> {"stats":{...}}, see Stats
//	{"op":"console","since":T,"count":N,"follow":bool}
//	  -> zero or more {"line":{"time":T,"text":"...","truncated":bool}},
//	     then {"end":true}; with follow, new lines keep coming until the
//	     tender has exited (then {"end":true}) or the client disconnects.
//
// Times are RFC 3339 with nanoseconds. In a console request since is
// inclusive (lines at or after it; empty means no bound) and count keeps
// only the newest N of the selected lines (0 means all). Line timestamps
// are strictly increasing within one shim, so a reconnecting follower can
// resume from the last time it saw and drop the one duplicate. A follower
// slower than the ring loses the lines that rotate out before it reads
// them; the tender is never slowed down by a client.
//
// # Lifetime
//
// SIGTERM and SIGINT sent to the shim are forwarded to the tender; the shim
// keeps running until the tender exits. SIGHUP and SIGPIPE are caught and
// dropped (rather than ignored, so that the tender starts with default
// dispositions). When the tender has exited the shim writes console.jsonl
// and exit.json, answers waiters and ends console streams, lingers until no
// client is connected or two seconds have passed, removes the socket and
// exits 0.
//
// If the shim itself is killed with SIGKILL, nothing is written: the tender
// is orphaned (re-parented to init) and keeps running, unsupervised, and
// clients get ErrShimLost. The tender is in the shim's process group, so
// killing that group (kill -9 -SHIMPID) stops both.
package shim
