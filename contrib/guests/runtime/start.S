/*
 * start.S: guest entry point.
 *
 * The tender enters _start in 64-bit long mode with RDI holding the
 * guest-physical address of struct hvt_boot_info and RSP just below the top
 * of guest memory. Clear the frame pointer, align the stack as the SysV ABI
 * expects at a call, and hand over to C; never return.
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
