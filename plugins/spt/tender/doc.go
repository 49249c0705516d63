// Package tender is Petrel's built-in Solo5 spt tender: it runs a Solo5 spt
// unikernel (ABI version 2) as a Linux process confined by a seccomp filter,
// with the command line and exit statuses of Solo5's solo5-spt, in Go and
// without cgo or libseccomp.
//
// # The guest process
//
// On spt the guest runs in a process of its own, at the addresses it was
// linked for: guest memory is mapped at its own addresses, from 0x10000 up
// to the guest memory size, and the only system calls the guest may make
// are those of the spt ABI, on the descriptors the tender hands it. A seccomp
// filter applies to one thread, and a Go process always has several, so
// filtering a thread of the tender itself would leave unfiltered threads
// sharing the guest's address space: any of them could be made to do what
// the guest may not. The tender therefore never lets the guest run in a
// process that has another thread.
//
// The Go process (the tender) prepares everything: guest memory, mapped
// with MAP_FIXED_NOREPLACE so that it never replaces a mapping of the
// tender's own, the image loaded into it with each segment's protection
// (never writable and executable at once), the boot information, manifest
// and command line in low memory, the epoll set and timerfd, the tap and
// block descriptors, the seccomp program and the descriptor ranges to
// close. It also maps a child page, outside the Go heap, holding all the
// guest process will read before it enters the guest: the parameters of
// the steps below, the seccomp program, the descriptor ranges and the
// address ranges to unmap, with room for a stack. Then, on a thread locked
// to its goroutine for the life of the process, an assembly function
// blocks every signal, forks and restores the mask in the parent. The
// child is a copy of the tender's address space with a single thread, and
// it runs no Go code (the Go runtime's state in a forked copy is not
// usable): only system calls made from assembly. (It is forked by a helper
// that shares the tender's memory and forks with CLONE_PARENT, because a
// child forked straight from a thread of a program linked with the C
// library would inherit that thread's restartable-sequences area, which
// the kernel writes to and which the child is about to unmap.) It resets
// every signal handler to SIG_DFL, asks for SIGKILL when the forking
// thread dies and checks that its parent is still the tender, closes every
// descriptor but the console (1), the epoll set, the timerfd and the
// devices, moves its stack to the child page and unmaps everything but
// guest memory, the child page and the page or two of its own machine
// code (the kernel's vDSO pages too, unless the kernel sealed them; the
// legacy [vsyscall] page cannot be unmapped and holds no memory of the
// tender's), unblocks signals, sets PR_SET_NO_NEW_PRIVS, closes the pipe
// on which it reports setup failures, installs the filter and jumps to the
// guest's entry point with the stack pointer just below the top of guest
// memory and the boot information's address as argument.
//
// This is sound because at the moment the filter is installed the child
// has exactly one thread (fork copies only the calling thread) and nothing
// but its own code runs before it: no signal handler (all are SIG_DFL and
// signals were blocked until then), no other thread, no Go runtime. The
// filter, once installed, cannot be removed and is inherited by anything
// the guest could create, and it allows no call that creates threads or
// processes, or maps or unmaps memory, anyway. What the guest can reach
// is its address space, which holds nothing of the tender's but the child
// page and the page or two of the tender's code that the child ran (no
// copy of the tender's heap, stacks or data: the guest cannot read even
// what the tender read), and the kept descriptors, and on those only the
// calls the filter allows:
// write on descriptor 1, exit_group, epoll_pwait on the epoll set,
// timerfd_settime on the timerfd, clock_gettime of the monotonic and
// realtime clocks, arch_prctl(ARCH_SET_FS), read and write on each tap,
// and pread64 and pwrite64 of exactly one block at an offset within each
// block device, so a guest cannot grow a block file. Anything else kills
// the guest process with SIGSYS, as does any system call made through the
// x32 or i386 system call ABIs.
//
// The parent unmaps its own copies of guest memory and of the child page
// and closes its copies of the device descriptors, so guest memory is
// counted in the child only. Once the child has closed the report pipe
// without reporting a failure, the tender has nothing left to do but wait,
// and a Go process is several megabytes where a waiting loop needs a few
// pages: it execs the waiter, a static executable of a few hundred bytes
// that it writes into a memfd (its source is testdata/waiter_amd64.S), on
// the thread that forked the guest, which survives the exec as the
// waiter's only thread, so the guest stays its child and keeps its death
// signal. The waiter forwards SIGTERM, SIGINT and SIGHUP to the guest,
// waits for it and ends as the guest ended: with the guest's exit status,
// or by the signal that killed the guest (with its default action, and
// core dumps off), so a shell sees 128+N for a guest that faulted. If the
// tender or the waiter is killed, the kernel kills the guest
// (PR_SET_PDEATHSIG). Should the exec fail (no memfd_create or execveat,
// or a policy against executing a memfd), the Go process waits itself,
// the same way.
//
// # Address space
//
// Guest addresses are the tender's own, so the tender must not occupy the
// guest's range: it must be a position-independent executable
// (go build -buildmode=pie), which Linux maps far above it. At start the
// tender reads /proc/self/maps and refuses to run when anything is mapped
// in [0x10000, mem); the largest --mem is therefore bounded by the lowest
// mapping of the tender's own.
//
// Main is the entry point; it is meant to be called from a small main
// package or from a multi-call binary, on its main goroutine.
package tender
