/* sleep: prints a line, sleeps MS milliseconds (its only argument, default
 * 100) in the tender's poll call, prints a second line and exits 0. The
 * benchmarks use it for a guest whose exit comes after its console is
 * followed. */
#include "guest.h"

GUEST_MANIFEST(0);

int guest_main(const char *cmdline)
{
    long ms = 100;
    if (*cmdline && (parse_int(cmdline, &ms) != 0 || ms < 0)) {
        printf("sleep: usage: sleep [MS] (got \"%s\")\n", cmdline);
        return 1;
    }
    printf("sleep: sleeping %ld ms\n", ms);
    uint64_t ready = 0;
    /* No network device can wake it: the call returns at the deadline. */
    poll_net((uint64_t)ms * 1000000ULL, &ready);
    printf("sleep: awake\n");
    return 0;
}
