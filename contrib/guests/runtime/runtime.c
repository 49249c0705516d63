/*
 * runtime.c: hypercall wrappers, manifest lookup, string helpers and a tiny
 * printf shared by Petrel's test guests.
 */
#include "guest.h"

#define HVT_HYPERCALL_PIO_BASE 0x500

enum {
    HC_WALLTIME = 1,
    HC_PUTS,
    HC_POLL,
    HC_BLOCK_WRITE,
    HC_BLOCK_READ,
    HC_NET_WRITE,
    HC_NET_READ,
    HC_HALT,
};

/* Hypercall argument structures (hvt_abi.h). */
struct hc_walltime { uint64_t nsecs; };
struct hc_puts { uint64_t data; uint64_t len; };
struct hc_poll { uint64_t timeout_nsecs; uint64_t ready_set; int ret; };
struct hc_block { uint64_t handle, offset, data, len; int ret; };
struct hc_net { uint64_t handle, data, len; int ret; };
struct hc_halt { uint64_t cookie; int exit_status; };

_Static_assert(sizeof(struct hc_poll) == 24, "hvt_hc_poll layout");
_Static_assert(sizeof(struct hc_block) == 40, "hvt_hc_block_* layout");
_Static_assert(sizeof(struct hc_net) == 32, "hvt_hc_net_* layout");
_Static_assert(sizeof(struct hc_halt) == 16, "hvt_hc_halt layout");

/* Issue hypercall n: a 32-bit OUT of the argument's address to port 0x500+n. */
static inline void hypercall(int n, volatile void *arg)
{
    __asm__ __volatile__("outl %0, %1"
                         :
                         : "a"((uint32_t)(uintptr_t)arg),
                           "d"((uint16_t)(HVT_HYPERCALL_PIO_BASE + n))
                         : "memory");
}

const struct hvt_boot_info *boot_info;

void guest_start(const struct hvt_boot_info *bi)
{
    boot_info = bi;
    guest_exit(guest_main((const char *)(uintptr_t)bi->cmdline));
}

uint64_t walltime_ns(void)
{
    volatile struct hc_walltime a = { 0 };
    hypercall(HC_WALLTIME, &a);
    return a.nsecs;
}

void console_write(const char *s, size_t len)
{
    volatile struct hc_puts a = { .data = (uintptr_t)s, .len = len };
    hypercall(HC_PUTS, &a);
}

int poll_net(uint64_t timeout_ns, uint64_t *ready_set)
{
    volatile struct hc_poll a = { .timeout_nsecs = timeout_ns };
    hypercall(HC_POLL, &a);
    if (ready_set)
        *ready_set = a.ready_set;
    return a.ret;
}

int block_write(uint64_t handle, uint64_t offset, const void *buf, size_t len)
{
    volatile struct hc_block a = {
        .handle = handle, .offset = offset, .data = (uintptr_t)buf, .len = len
    };
    hypercall(HC_BLOCK_WRITE, &a);
    return a.ret;
}

int block_read(uint64_t handle, uint64_t offset, void *buf, size_t len)
{
    volatile struct hc_block a = {
        .handle = handle, .offset = offset, .data = (uintptr_t)buf, .len = len
    };
    hypercall(HC_BLOCK_READ, &a);
    return a.ret;
}

int net_write(uint64_t handle, const void *buf, size_t len)
{
    volatile struct hc_net a = {
        .handle = handle, .data = (uintptr_t)buf, .len = len
    };
    hypercall(HC_NET_WRITE, &a);
    return a.ret;
}

int net_read(uint64_t handle, void *buf, size_t len, size_t *read_len)
{
    volatile struct hc_net a = {
        .handle = handle, .data = (uintptr_t)buf, .len = len
    };
    hypercall(HC_NET_READ, &a);
    if (read_len)
        *read_len = a.ret == SOLO5_R_OK ? a.len : 0;
    return a.ret;
}

void guest_exit(int status)
{
    volatile struct hc_halt a = { .cookie = 0, .exit_status = status };
    for (;;)
        hypercall(HC_HALT, &a);
}

const struct mft_entry *device_lookup(const char *name, uint32_t type,
                                      uint64_t *handle)
{
    const struct mft *m = (const struct mft *)(uintptr_t)boot_info->mft;
    for (uint32_t i = 1; i < m->entries; i++) {
        const struct mft_entry *e = &m->e[i];
        if (e->type == type && e->attached && strcmp(e->name, name) == 0) {
            if (handle)
                *handle = i;
            return e;
        }
    }
    return NULL;
}

void *memset(void *dst, int c, size_t n)
{
    unsigned char *d = dst;
    while (n--)
        *d++ = (unsigned char)c;
    return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d < s) {
        while (n--)
            *d++ = *s++;
    } else {
        while (n--)
            d[n] = s[n];
    }
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x - *y;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return (unsigned char)*a - (unsigned char)*b;
}

/* parse_int parses an optionally signed decimal integer that makes up all
 * of s; it returns 0 on success and -1 otherwise. */
int parse_int(const char *s, long *out)
{
    long v = 0;
    int neg = 0;
    if (*s == '-' || *s == '+')
        neg = *s++ == '-';
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
    }
    *out = neg ? -v : v;
    return 0;
}

/* Output state for vsnprintf: writes what fits, counts everything. */
struct out {
    char *buf;
    size_t size, n;
};

static void put(struct out *o, char c)
{
    if (o->n + 1 < o->size)
        o->buf[o->n] = c;
    o->n++;
}

static void put_uint(struct out *o, unsigned long v, unsigned base, int width,
                     char pad)
{
    char tmp[24];
    int i = 0;
    do {
        tmp[i++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (width-- > i)
        put(o, pad);
    while (i--)
        put(o, tmp[i]);
}

/* vsnprintf supports %s %c %d %i %u %x %p and %%, with the l modifier,
 * a zero flag and a field width for numbers. */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = { buf, size, 0 };
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put(&o, *fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        int width = 0, lng = 0;
        if (*fmt == '0')
            pad = '0', fmt++;
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l')
            lng = 1, fmt++;
        switch (*fmt) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            while (*s)
                put(&o, *s++);
            break;
        }
        case 'c':
            put(&o, (char)va_arg(ap, int));
            break;
        case 'd':
        case 'i': {
            long v = lng ? va_arg(ap, long) : va_arg(ap, int);
            if (v < 0) {
                put(&o, '-');
                put_uint(&o, -(unsigned long)v, 10, width ? width - 1 : 0, pad);
            } else {
                put_uint(&o, v, 10, width, pad);
            }
            break;
        }
        case 'u':
            put_uint(&o, lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned),
                     10, width, pad);
            break;
        case 'x':
            put_uint(&o, lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned),
                     16, width, pad);
            break;
        case 'p':
            put(&o, '0');
            put(&o, 'x');
            put_uint(&o, (uintptr_t)va_arg(ap, void *), 16, width, pad);
            break;
        case '%':
            put(&o, '%');
            break;
        case 0:
            fmt--;
            break;
        default:
            put(&o, '%');
            put(&o, *fmt);
        }
    }
    if (size)
        buf[o.n < size ? o.n : size - 1] = 0;
    return (int)o.n;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

int printf(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    console_write(buf, n < (int)sizeof buf ? (size_t)n : sizeof buf - 1);
    return n;
}
