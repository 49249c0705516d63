/* hello: greets, prints its command line and exits 0. */
#include "guest.h"

GUEST_MANIFEST(0);

int guest_main(const char *cmdline)
{
    printf("Hello from Petrel\n");
    printf("hello: command line: \"%s\"\n", cmdline);
    return 0;
}
