/* chatty: prints N lines (default 1000) as fast as it can, then exits 0. */
#include "guest.h"

GUEST_MANIFEST(0);

int guest_main(const char *cmdline)
{
    long n = 1000;
    if (*cmdline && (parse_int(cmdline, &n) != 0 || n < 0)) {
        printf("chatty: usage: chatty [LINES] (got \"%s\")\n", cmdline);
        return 1;
    }
    for (long i = 1; i <= n; i++)
        printf("chatty: line %ld of %ld\n", i, n);
    return 0;
}
