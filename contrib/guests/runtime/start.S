/*
 * start.S: guest entry point.
 *
 * The tender enters _start with RDI holding the address of its boot
 * information (struct hvt_boot_info in 64-bit long mode on hvt, struct
 * spt_boot_info in a sandboxed process on spt) and RSP just below the top
 * of guest memory. Clear the frame pointer, align the stack as the SysV ABI
 * expects at a call, and hand over to C; never return (guest_start exits,
 * and the instructions after the call trap on either target).
 */
    .section .text.start, "ax"
    .globl _start
    .type _start, @function
_start:
    xorl %ebp, %ebp
    andq $-16, %rsp
    call guest_start
1:  cli
    hlt
    jmp 1b
    .size _start, . - _start

    .section .note.GNU-stack, "", @progbits
