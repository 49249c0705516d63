/* fault: touches an address beyond guest memory, which is not mapped, so
 * the guest faults; with no exception handlers installed this ends in a
 * triple fault that the tender must report as a failure. */
#include "guest.h"

GUEST_MANIFEST(0);

int guest_main(const char *cmdline)
{
    (void)cmdline;
    volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)(boot_info->mem_size + 0x1000);
    printf("fault: touching unmapped address %p\n", (void *)p);
    *p = 0xdeadbeef;
    printf("fault: the write did not fault\n");
    return 0;
}
