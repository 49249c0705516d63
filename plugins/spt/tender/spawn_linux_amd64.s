// spawnGuest forks the guest process. See spawn_linux_amd64.go for what it
// does and why it is written in assembly: the child runs no Go code, only
// the system calls below, and ends by jumping into the guest. Once it has
// unmapped the tender's memory, the child runs on in this code, whose
// pages it keeps (from spawnGuest to spawnGuestEnd, which must follow it),
// and reads only the child page, which R12 points into.

#include "textflag.h"
#include "go_asm.h"

#define SYS_write 1
#define SYS_close 3
#define SYS_munmap 11
#define SYS_rt_sigaction 13
#define SYS_rt_sigprocmask 14
#define SYS_clone 56
#define SYS_exit 60
#define SYS_wait4 61
#define SYS_getppid 110
#define SYS_prctl 157
#define SYS_exit_group 231
#define SYS_seccomp 317
#define SYS_close_range 436

#define SIG_SETMASK 2
#define SIGCHLD 17
#define SIGKILL 9
#define CLONE_VM 0x100
#define CLONE_VFORK 0x4000
#define CLONE_PARENT 0x8000
#define EINTR 4
#define PR_SET_PDEATHSIG 1
#define PR_SET_NO_NEW_PRIVS 38
#define SECCOMP_SET_MODE_FILTER 1
#define ENOSYS 38

// func spawnGuest(p *childParams) (pid, errno uintptr)
TEXT ·spawnGuest(SB), NOSPLIT, $0-24
	MOVQ	p+0(FP), R12

	// Block every signal on this thread, saving the old mask, so that the
	// child starts with every signal blocked: until it has reset the
	// handlers it inherited, no Go signal handler may run in it.
	MOVQ	$SYS_rt_sigprocmask, AX
	MOVQ	$SIG_SETMASK, DI
	LEAQ	childParams_fullMask(R12), SI
	LEAQ	childParams_oldMask(R12), DX
	MOVQ	$8, R10
	SYSCALL
	CMPQ	AX, $-4095
	JCS	fork
	NEGQ	AX
	MOVQ	$0, pid+8(FP)
	MOVQ	AX, errno+16(FP)
	RET

fork:
	// The guest process is forked in two steps. A child forked straight
	// from this thread would inherit its restartable-sequences
	// registration, which the C library makes in every thread of a
	// program linked with it: the kernel writes to that area, in the
	// thread's TLS, whenever the thread is preempted, and would kill the
	// guest process with SIGSEGV once it has unmapped it. A child that
	// shares its parent's memory (CLONE_VM) starts without one, so a
	// helper is created that way, on the child page's stack, and forks
	// the guest process with CLONE_PARENT, which makes it this thread's
	// child as if forked from here. CLONE_VFORK suspends this thread
	// until the helper has forked and exited.
	MOVQ	$SYS_clone, AX
	MOVQ	$(CLONE_VM|CLONE_VFORK|SIGCHLD), DI
	MOVQ	childParams_childSP(R12), SI
	XORQ	DX, DX
	XORQ	R10, R10
	XORQ	R8, R8
	SYSCALL
	CMPQ	AX, $0
	JEQ	helper
	MOVQ	AX, R13
	CMPQ	R13, $-4095
	JCC	restore

	// Reap the helper, which has exited: the guest's pid, or the clone's
	// -errno, is in the child page.
reap:
	MOVQ	$SYS_wait4, AX
	MOVQ	R13, DI
	XORQ	SI, SI
	XORQ	DX, DX
	XORQ	R10, R10
	SYSCALL
	CMPQ	AX, $-EINTR
	JEQ	reap
	MOVQ	childParams_forked(R12), R13

restore:
	// Parent: restore the signal mask and report the pid or errno.
	MOVQ	$SYS_rt_sigprocmask, AX
	MOVQ	$SIG_SETMASK, DI
	LEAQ	childParams_oldMask(R12), SI
	XORQ	DX, DX
	MOVQ	$8, R10
	SYSCALL
	CMPQ	R13, $-4095
	JCS	forked
	NEGQ	R13
	MOVQ	$0, pid+8(FP)
	MOVQ	R13, errno+16(FP)
	RET
forked:
	MOVQ	R13, pid+8(FP)
	MOVQ	$0, errno+16(FP)
	RET

helper:
	// The helper shares the tender's memory: it touches nothing but
	// registers and the child page. clone(CLONE_PARENT) forks with the
	// helper's exit signal, SIGCHLD: fork semantics, a copy of the address
	// space and one thread, whose parent is the tender's thread.
	MOVQ	$SYS_clone, AX
	MOVQ	$CLONE_PARENT, DI
	XORQ	SI, SI
	XORQ	DX, DX
	XORQ	R10, R10
	XORQ	R8, R8
	SYSCALL
	CMPQ	AX, $0
	JEQ	child
	MOVQ	AX, childParams_forked(R12)
	MOVQ	$SYS_exit, AX
	XORQ	DI, DI
	SYSCALL

child:
	// Reset every signal handler to SIG_DFL. SIGKILL and SIGSTOP (and
	// numbers the kernel does not know) fail with EINVAL, which is fine.
	MOVQ	$1, R13
resetloop:
	MOVQ	$SYS_rt_sigaction, AX
	MOVQ	R13, DI
	LEAQ	childParams_dfl(R12), SI
	XORQ	DX, DX
	MOVQ	$8, R10
	SYSCALL
	INCQ	R13
	CMPQ	R13, $64
	JLE	resetloop

	// Die with the parent's thread; if the parent is already gone, the
	// death signal will never come, so stop here.
	MOVQ	$SYS_prctl, AX
	MOVQ	$PR_SET_PDEATHSIG, DI
	MOVQ	$SIGKILL, SI
	XORQ	DX, DX
	XORQ	R10, R10
	XORQ	R8, R8
	SYSCALL
	MOVQ	$1, R14
	CMPQ	AX, $-4095
	JCC	fail
	MOVQ	$SYS_getppid, AX
	SYSCALL
	CMPQ	AX, childParams_ppid(R12)
	JNE	exit1

	// Close every descriptor outside the kept ones: close_range over the
	// gaps between them, or close() one by one where the kernel has no
	// close_range.
	MOVQ	childParams_ranges(R12), R13
	MOVQ	childParams_nranges(R12), R15
rangeloop:
	TESTQ	R15, R15
	JEQ	closed
	MOVQ	$SYS_close_range, AX
	MOVL	0(R13), DI
	MOVL	4(R13), SI
	XORQ	DX, DX
	SYSCALL
	CMPQ	AX, $-ENOSYS
	JEQ	closeeach
	MOVQ	$2, R14
	CMPQ	AX, $-4095
	JCC	fail
nextrange:
	ADDQ	$8, R13
	DECQ	R15
	JMP	rangeloop
closeeach:
	// Close fds first..min(last, closeMax), ignoring EBADF.
	MOVL	0(R13), BX
	MOVL	4(R13), CX
	MOVQ	childParams_closeMax(R12), DX
	CMPQ	CX, DX
	JLS	eachloop
	MOVQ	DX, CX
eachloop:
	CMPQ	BX, CX
	JHI	nextrange
	MOVQ	CX, R8
	MOVQ	$SYS_close, AX
	MOVQ	BX, DI
	SYSCALL
	MOVQ	R8, CX
	INCQ	BX
	JMP	eachloop

closed:
	// Move to the child page's stack, then unmap everything but guest
	// memory, the child page and this code: the guest keeps nothing of
	// the tender's memory, not even a copy.
	MOVQ	childParams_childSP(R12), SP
	MOVQ	childParams_unmap(R12), R13
	MOVQ	childParams_nunmap(R12), R15
unmaploop:
	TESTQ	R15, R15
	JEQ	unmapsystem
	MOVQ	$SYS_munmap, AX
	MOVQ	0(R13), DI
	MOVQ	8(R13), SI
	SUBQ	DI, SI
	SYSCALL
	MOVQ	$5, R14
	CMPQ	AX, $-4095
	JCC	fail
	ADDQ	$16, R13
	DECQ	R15
	JMP	unmaploop
unmapsystem:
	// The kernel's own mappings go too, unless it sealed them.
	MOVQ	childParams_system(R12), R13
	MOVQ	childParams_nsystem(R12), R15
systemloop:
	TESTQ	R15, R15
	JEQ	unmapped
	MOVQ	$SYS_munmap, AX
	MOVQ	0(R13), DI
	MOVQ	8(R13), SI
	SUBQ	DI, SI
	SYSCALL
	ADDQ	$16, R13
	DECQ	R15
	JMP	systemloop

unmapped:
	// Unblock every signal: from here on a signal has its default action.
	MOVQ	$SYS_rt_sigprocmask, AX
	MOVQ	$SIG_SETMASK, DI
	LEAQ	childParams_emptyMask(R12), SI
	XORQ	DX, DX
	MOVQ	$8, R10
	SYSCALL
	MOVQ	$3, R14
	CMPQ	AX, $-4095
	JCC	fail

	MOVQ	$SYS_prctl, AX
	MOVQ	$PR_SET_NO_NEW_PRIVS, DI
	MOVQ	$1, SI
	XORQ	DX, DX
	XORQ	R10, R10
	XORQ	R8, R8
	SYSCALL
	MOVQ	$4, R14
	CMPQ	AX, $-4095
	JCC	fail

	// Setup is complete: close the report pipe, which the guest must not
	// have, and install the filter.
	MOVQ	$SYS_close, AX
	MOVQ	childParams_errFD(R12), DI
	SYSCALL
	MOVQ	$SYS_seccomp, AX
	MOVQ	$SECCOMP_SET_MODE_FILTER, DI
	XORQ	SI, SI
	MOVQ	childParams_prog(R12), DX
	SYSCALL
	CMPQ	AX, $0
	JNE	exit1

	// Enter the guest: RSP and RDI as the spt ABI says, every other
	// general register cleared except RAX, which holds the entry point.
	MOVQ	childParams_entry(R12), AX
	MOVQ	childParams_bootInfo(R12), DI
	MOVQ	childParams_stack(R12), SP
	XORQ	BX, BX
	XORQ	CX, CX
	XORQ	DX, DX
	XORQ	SI, SI
	XORQ	BP, BP
	XORQ	R8, R8
	XORQ	R9, R9
	XORQ	R10, R10
	XORQ	R11, R11
	XORQ	R12, R12
	XORQ	R13, R13
	XORQ	R14, R14
	XORQ	R15, R15
	JMP	AX

fail:
	// Report the failed step (R14) and errno (-AX) through the pipe.
	NEGQ	AX
	MOVQ	R14, childParams_report+0(R12)
	MOVQ	AX, childParams_report+8(R12)
	MOVQ	$SYS_write, AX
	MOVQ	childParams_errFD(R12), DI
	LEAQ	childParams_report(R12), SI
	MOVQ	$16, DX
	SYSCALL
exit1:
	MOVQ	$SYS_exit_group, AX
	MOVQ	$1, DI
	SYSCALL
	JMP	exit1

// spawnGuestEnd follows spawnGuest: its address is where spawnGuest's code
// ends. It is never called.
TEXT ·spawnGuestEnd(SB), NOSPLIT|NOFRAME, $0-0
	INT	$3
	RET

// func trampolineText() (start, end uintptr)
TEXT ·trampolineText(SB), NOSPLIT, $0-16
	LEAQ	·spawnGuest(SB), AX
	MOVQ	AX, start+0(FP)
	LEAQ	·spawnGuestEnd(SB), AX
	MOVQ	AX, end+8(FP)
	RET
