/* exit: exits with the integer status given as its only argument. */
#include "guest.h"

GUEST_MANIFEST(0);

int guest_main(const char *cmdline)
{
    long code;
    if (parse_int(cmdline, &code) != 0) {
        printf("exit: usage: exit CODE (got \"%s\")\n", cmdline);
        return 1;
    }
    printf("exit: exiting with status %ld\n", code);
    return (int)code;
}
