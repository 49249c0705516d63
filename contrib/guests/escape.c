/* escape: tries one thing the spt sandbox must forbid, so the tender's
 * tests can check that the guest dies by SIGSYS for it. It prints what it is
 * about to try first; if the attempt returns, it prints the result and
 * exits 0, which the tests treat as an escape. Built for spt only.
 *
 *   syscall NR [ARG...]   system call NR with up to six decimal arguments
 *   x32 NR [ARG...]       the same through the x32 ABI (NR | 0x40000000)
 *   int80 NR [ARG...]     the same through the i386 ABI (int $0x80)
 *   read FD               read one byte from FD
 *   write FD              write one byte to FD
 *   pread FD [OFFSET]     pread64 of 512 bytes from FD at OFFSET (default 0)
 *   pwrite FD [OFFSET]    pwrite64 of 512 bytes to FD at OFFSET (default 0)
 *   clock ID              clock_gettime of clock ID
 */
#include "guest.h"

GUEST_MANIFEST(0);

#define X32_SYSCALL_BIT 0x40000000L

static uint8_t buf[4096];

static long syscall6(long n, const long a[6])
{
    register long r10 __asm__("r10") = a[3];
    register long r8 __asm__("r8") = a[4];
    register long r9 __asm__("r9") = a[5];
    long ret;
    __asm__ __volatile__("syscall"
                         : "=a"(ret)
                         : "a"(n), "D"(a[0]), "S"(a[1]), "d"(a[2]), "r"(r10),
                           "r"(r8), "r"(r9)
                         : "rcx", "r11", "memory");
    return ret;
}

static long int80(long n, const long a[6])
{
    long ret;
    __asm__ __volatile__("int $0x80"
                         : "=a"(ret)
                         : "a"(n), "b"(a[0]), "c"(a[1]), "d"(a[2]), "S"(a[3]),
                           "D"(a[4])
                         : "memory");
    return ret;
}

/* Split the command line into at most max words, in place. */
static int split(char *s, char **words, int max)
{
    int n = 0;
    while (*s && n < max) {
        while (*s == ' ')
            *s++ = 0;
        if (!*s)
            break;
        words[n++] = s;
        while (*s && *s != ' ')
            s++;
    }
    return n;
}

static char line[8192];

int guest_main(const char *cmdline)
{
    char *w[9];
    size_t len = strlen(cmdline);
    if (len >= sizeof line)
        len = sizeof line - 1;
    memcpy(line, cmdline, len);
    int n = split(line, w, 9);
    long v[8] = { 0 };
    for (int i = 1; i < n; i++) {
        if (parse_int(w[i], &v[i - 1]) != 0) {
            printf("escape: %s is not a number\n", w[i]);
            return 1;
        }
    }
    if (n < 2) {
        printf("escape: usage: escape syscall|x32|int80|read|write|pread|pwrite|clock N [...]\n");
        return 1;
    }
    const char *what = w[0];
    long r, a[6] = { 0 };
    if (strcmp(what, "syscall") == 0 || strcmp(what, "x32") == 0 ||
        strcmp(what, "int80") == 0) {
        for (int i = 0; i < 6; i++)
            a[i] = v[i + 1];
        int x32 = strcmp(what, "x32") == 0;
        long nr = x32 ? (v[0] | X32_SYSCALL_BIT) : v[0];
        printf("escape: trying %s system call %ld\n", what, nr);
        r = strcmp(what, "int80") == 0 ? int80(nr, a) : syscall6(nr, a);
    } else if (strcmp(what, "read") == 0) {
        printf("escape: trying read from descriptor %ld\n", v[0]);
        a[0] = v[0], a[1] = (long)buf, a[2] = 1;
        r = syscall6(0, a);
    } else if (strcmp(what, "write") == 0) {
        printf("escape: trying write to descriptor %ld\n", v[0]);
        buf[0] = 'x';
        a[0] = v[0], a[1] = (long)buf, a[2] = 1;
        r = syscall6(1, a);
    } else if (strcmp(what, "pread") == 0 || strcmp(what, "pwrite") == 0) {
        int wr = strcmp(what, "pwrite") == 0;
        printf("escape: trying %s of 512 bytes on descriptor %ld at offset %ld\n",
               what, v[0], v[1]);
        a[0] = v[0], a[1] = (long)buf, a[2] = 512, a[3] = v[1];
        r = syscall6(wr ? 18 : 17, a);
    } else if (strcmp(what, "clock") == 0) {
        printf("escape: trying clock_gettime of clock %ld\n", v[0]);
        a[0] = v[0], a[1] = (long)buf;
        r = syscall6(228, a);
    } else {
        printf("escape: unknown attempt \"%s\"\n", what);
        return 1;
    }
    printf("escape: %s returned %ld: the sandbox let it through\n", what, r);
    return 0;
}
