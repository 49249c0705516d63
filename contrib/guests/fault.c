/* fault: touches an address beyond guest memory, which is not mapped, so
 * the guest faults. On hvt, with no exception handlers installed, this ends
 * in a triple fault that the tender must report as a failure; on spt the
 * sandboxed process dies by SIGSEGV, and so does the tender. */
#include "guest.h"

GUEST_MANIFEST(0);

int guest_main(const char *cmdline)
{
    (void)cmdline;
    volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)(guest_mem_size() + 0x1000);
    printf("fault: touching unmapped address %p\n", (void *)p);
    *p = 0xdeadbeef;
    printf("fault: the write did not fault\n");
    return 0;
}
