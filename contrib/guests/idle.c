/* idle: prints one line, then waits for ever in the tender's poll (one
 * wake-up a minute), as a deployed service waits for work; used to
 * measure what a running VM costs the host beyond its guest memory. */
#include "guest.h"

GUEST_MANIFEST(0);

int guest_main(const char *cmdline)
{
    (void)cmdline;
    printf("idle: waiting\n");
    for (;;)
        poll_net(60000000000ULL, 0);
}
