# The spt tender's waiter: a complete static x86-64 Linux executable, ELF
# header and program headers included, in one section that is the file.
# Once the guest process is set up, the tender execs it in place of
# itself, so that what waits for the guest is a few hundred bytes instead
# of a Go process.
#
# It forwards SIGTERM, SIGINT and SIGHUP to the guest process, waits for
# it and ends as it ended: with its exit status, or by the signal that
# killed it (with that signal's default action; the tender has turned core
# dumps off). It exits with status 1 when the guest cannot be waited for.
# The guest's pid is the 32-bit field at "pid", which the tender patches
# before it writes the executable into a memfd.
#
# The tender's Go code holds the machine code assembled from this file
# (waiterelf_linux_amd64.go); TestWaiterMachineCode assembles it with
# `as --64` and fails when the two differ, and `go test -run
# TestWaiterMachineCode -update` rewrites the Go file. Everything is
# position-relative or resolved by the assembler: the object file has no
# relocations, and its .text section is the executable.

	.set	BASE, 0x400000		# where the kernel maps the file

	.set	SYS_rt_sigaction, 13
	.set	SYS_rt_sigprocmask, 14
	.set	SYS_rt_sigreturn, 15
	.set	SYS_getpid, 39
	.set	SYS_wait4, 61
	.set	SYS_kill, 62
	.set	SYS_exit_group, 231
	.set	SYS_waitid, 247

	.set	SIGHUP, 1
	.set	SIGINT, 2
	.set	SIGTERM, 15
	.set	SIGCHLD, 17
	.set	SIG_UNBLOCK, 1
	.set	SIG_SETMASK, 2
	.set	SA_RESTORER, 0x04000000
	.set	SA_RESTART, 0x10000000
	.set	P_PID, 1
	.set	WEXITED, 4
	.set	WNOWAIT, 0x01000000
	.set	EINTR, 4

	.text
ehdr:					# Elf64_Ehdr
	.byte	0x7f, 0x45, 0x4c, 0x46	# \177ELF
	.byte	2, 1, 1, 0		# ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_NONE
	.quad	0			# ABI version and padding
	.word	2			# e_type: ET_EXEC
	.word	62			# e_machine: EM_X86_64
	.long	1			# e_version
	.quad	BASE + start - ehdr	# e_entry
	.quad	phdr - ehdr		# e_phoff
	.quad	0			# e_shoff: no section headers
	.long	0			# e_flags
	.word	phdr - ehdr		# e_ehsize
	.word	56			# e_phentsize
	.word	2			# e_phnum
	.word	0, 0, 0			# e_shentsize, e_shnum, e_shstrndx
phdr:					# Elf64_Phdr: the whole file, readable and executable
	.long	1			# p_type: PT_LOAD
	.long	5			# p_flags: PF_R|PF_X
	.quad	0			# p_offset
	.quad	BASE			# p_vaddr
	.quad	BASE			# p_paddr
	.quad	end - ehdr		# p_filesz
	.quad	end - ehdr		# p_memsz
	.quad	0x1000			# p_align
					# Elf64_Phdr: a stack that is not executable
	.long	0x6474e551		# p_type: PT_GNU_STACK
	.long	6			# p_flags: PF_R|PF_W
	.quad	0, 0, 0, 0, 0		# p_offset, p_vaddr, p_paddr, p_filesz, p_memsz
	.quad	16			# p_align

pid:	.long	0			# the guest's pid, patched in by the tender
	.long	0
forward:				# struct sigaction for the forwarded signals
	.quad	BASE + handler - ehdr	# sa_handler
	.quad	SA_RESTORER | SA_RESTART
	.quad	BASE + restorer - ehdr	# sa_restorer
	.quad	0			# sa_mask
dfl:	.quad	0, 0, 0, 0		# struct sigaction: SIG_DFL
nomask:	.quad	0			# sigset_t: no signal
allmask: .quad	-1			# sigset_t: every signal

start:
	# SIGCHLD to SIG_DFL: an ignored SIGCHLD, which survives exec, would
	# have the kernel reap the guest before it could be waited for.
	mov	$SYS_rt_sigaction, %eax
	mov	$SIGCHLD, %edi
	lea	dfl(%rip), %rsi
	xor	%edx, %edx
	mov	$8, %r10d
	syscall
	test	%rax, %rax
	jnz	fail

	mov	$SIGTERM, %edi
	call	catch
	mov	$SIGINT, %edi
	call	catch
	mov	$SIGHUP, %edi
	call	catch

	# The tender blocked the forwarded signals before exec, so that one
	# sent meanwhile waits for its handler: unblock every signal now.
	mov	$SYS_rt_sigprocmask, %eax
	mov	$SIG_SETMASK, %edi
	lea	nomask(%rip), %rsi
	xor	%edx, %edx
	mov	$8, %r10d
	syscall
	test	%rax, %rax
	jnz	fail

	# 0(%rsp): siginfo_t (128 bytes); 128(%rsp): wait status;
	# 136(%rsp): a signal mask.
	sub	$144, %rsp

	# Wait for the guest to end without reaping it: until it is reaped its
	# pid cannot name another process, so the handler's kill is safe.
wait:
	mov	$SYS_waitid, %eax
	mov	$P_PID, %edi
	mov	pid(%rip), %esi
	mov	%rsp, %rdx
	mov	$(WEXITED | WNOWAIT), %r10d
	xor	%r8d, %r8d
	syscall
	cmp	$-EINTR, %rax
	je	wait
	test	%rax, %rax
	jnz	fail

	# Block every signal, so that no handler runs once the guest is
	# reaped, then reap it: its resource usage becomes the waiter's.
	mov	$SYS_rt_sigprocmask, %eax
	mov	$SIG_SETMASK, %edi
	lea	allmask(%rip), %rsi
	xor	%edx, %edx
	mov	$8, %r10d
	syscall
	test	%rax, %rax
	jnz	fail
	mov	$SYS_wait4, %eax
	mov	pid(%rip), %edi
	lea	128(%rsp), %rsi
	xor	%edx, %edx
	xor	%r10d, %r10d
	syscall
	cmp	pid(%rip), %eax
	jne	fail

	mov	128(%rsp), %ebx
	and	$0x7f, %ebx		# the signal that killed the guest, or 0
	jnz	killed
	movzbl	129(%rsp), %edi		# its exit status
	jmp	exit

killed:
	# Die by the same signal: default action, unblocked, sent to self.
	mov	$SYS_rt_sigaction, %eax
	mov	%ebx, %edi
	lea	dfl(%rip), %rsi
	xor	%edx, %edx
	mov	$8, %r10d
	syscall
	lea	-1(%rbx), %ecx
	mov	$1, %eax
	shl	%cl, %rax
	mov	%rax, 136(%rsp)
	mov	$SYS_rt_sigprocmask, %eax
	mov	$SIG_UNBLOCK, %edi
	lea	136(%rsp), %rsi
	xor	%edx, %edx
	mov	$8, %r10d
	syscall
	mov	$SYS_getpid, %eax
	syscall
	mov	%eax, %edi
	mov	%ebx, %esi
	mov	$SYS_kill, %eax
	syscall
	# Still alive (a signal whose default is not to terminate): say so as
	# a shell would.
	lea	128(%rbx), %edi
	jmp	exit

fail:
	mov	$1, %edi
exit:
	mov	$SYS_exit_group, %eax
	syscall
	jmp	exit

# catch installs the forwarding handler for the signal in %edi.
catch:
	mov	$SYS_rt_sigaction, %eax
	lea	forward(%rip), %rsi
	xor	%edx, %edx
	mov	$8, %r10d
	syscall
	test	%rax, %rax
	jnz	fail
	ret

# handler sends the signal it caught (%edi) to the guest.
handler:
	mov	%edi, %esi
	mov	pid(%rip), %edi
	mov	$SYS_kill, %eax
	syscall
	ret

restorer:
	mov	$SYS_rt_sigreturn, %eax
	syscall
end:
