/*
 * common.c: what Petrel's test guests share whatever their target: the C
 * entry point, manifest lookup, string helpers and a tiny printf.
 */
#include "guest.h"

/* guest_start is called by _start (start.S) with the boot information. */
void guest_start(const void *bi)
{
    platform_init(bi);
    guest_exit(guest_main(platform_cmdline()));
}

const struct mft_entry *device_lookup(const char *name, uint32_t type,
                                      uint64_t *handle)
{
    const struct mft *m = platform_manifest();
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

const struct mft_entry *device_by_handle(uint64_t handle, uint32_t type)
{
    const struct mft *m = platform_manifest();
    if (handle == 0 || handle >= m->entries)
        return NULL;
    const struct mft_entry *e = &m->e[handle];
    return e->type == type && e->attached ? e : NULL;
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
