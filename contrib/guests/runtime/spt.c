/*
 * spt.c: the spt target of Petrel's test guests: the boot information of
 * the spt ABI and the calls into the tender, which are Linux system calls
 * made directly (x86-64 syscall instruction). The tender's seccomp filter
 * allows exactly the calls made here, on the descriptors the boot
 * information and the manifest name.
 */
#include "guest.h"

/* struct spt_boot_info (spt_abi.h): its address is the sole argument of the
 * entry point. */
struct spt_boot_info {
    uint64_t mem_size;
    uint64_t kernel_end;
    const char *cmdline;
    const struct mft *mft;
    int epollfd;
    int timerfd;
};
_Static_assert(sizeof(struct spt_boot_info) == 40, "spt_boot_info layout");

/* epoll_pwait's data for the internal timerfd (SPT_INTERNAL_TIMERFD). */
#define SPT_INTERNAL_TIMERFD 0xfffffffeULL

/* Linux x86-64 system call numbers and constants used here. */
#define SYS_READ 0
#define SYS_WRITE 1
#define SYS_PREAD64 17
#define SYS_PWRITE64 18
#define SYS_CLOCK_GETTIME 228
#define SYS_EXIT_GROUP 231
#define SYS_EPOLL_PWAIT 281
#define SYS_TIMERFD_SETTIME 286
#define CLOCK_REALTIME 0
#define CLOCK_MONOTONIC 1
#define TFD_TIMER_ABSTIME 1
#define EINTR 4
#define EAGAIN 11

struct timespec64 { int64_t sec, nsec; };
struct itimerspec64 { struct timespec64 interval, value; };
struct epoll_event64 { uint32_t events; uint64_t data; } __attribute__((packed));

static const struct spt_boot_info *boot_info;

static long syscall6(long n, long a0, long a1, long a2, long a3, long a4,
                     long a5)
{
    register long r10 __asm__("r10") = a3;
    register long r8 __asm__("r8") = a4;
    register long r9 __asm__("r9") = a5;
    long ret;
    __asm__ __volatile__("syscall"
                         : "=a"(ret)
                         : "a"(n), "D"(a0), "S"(a1), "d"(a2), "r"(r10),
                           "r"(r8), "r"(r9)
                         : "rcx", "r11", "memory");
    return ret;
}

void platform_init(const void *bi)
{
    boot_info = bi;
}

const char *platform_cmdline(void)
{
    return boot_info->cmdline;
}

const struct mft *platform_manifest(void)
{
    return boot_info->mft;
}

uint64_t guest_mem_size(void)
{
    return boot_info->mem_size;
}

static uint64_t clock_ns(long clock)
{
    struct timespec64 ts = { 0, 0 };
    syscall6(SYS_CLOCK_GETTIME, clock, (long)&ts, 0, 0, 0, 0);
    return (uint64_t)ts.sec * 1000000000ULL + (uint64_t)ts.nsec;
}

uint64_t walltime_ns(void)
{
    return clock_ns(CLOCK_REALTIME);
}

void console_write(const char *s, size_t len)
{
    while (len > 0) {
        long n = syscall6(SYS_WRITE, 1, (long)s, (long)len, 0, 0, 0);
        if (n == -EINTR)
            continue;
        if (n <= 0)
            return;
        s += n;
        len -= (size_t)n;
    }
}

/* poll_net arms the tender's timerfd for the deadline and waits on the
 * epoll set, which holds the timerfd and every network device's tap. */
int poll_net(uint64_t timeout_ns, uint64_t *ready_set)
{
    struct itimerspec64 it = { { 0, 0 }, { 0, 0 } };
    uint64_t deadline = clock_ns(CLOCK_MONOTONIC) + timeout_ns;
    it.value.sec = (int64_t)(deadline / 1000000000ULL);
    it.value.nsec = (int64_t)(deadline % 1000000000ULL);
    if (syscall6(SYS_TIMERFD_SETTIME, boot_info->timerfd, TFD_TIMER_ABSTIME,
                 (long)&it, 0, 0, 0) != 0)
        return SOLO5_R_EUNSPEC;
    /* One event per manifest entry (taps) and one for the timerfd. */
    struct epoll_event64 ev[MFT_MAX_ENTRIES + 1];
    long n;
    do {
        n = syscall6(SYS_EPOLL_PWAIT, boot_info->epollfd, (long)ev,
                     (MFT_MAX_ENTRIES + 1), -1, 0, 0);
    } while (n == -EINTR);
    if (n < 0)
        return SOLO5_R_EUNSPEC;
    uint64_t ready = 0;
    for (long i = 0; i < n; i++)
        if (ev[i].data != SPT_INTERNAL_TIMERFD && ev[i].data < 64)
            ready |= 1ULL << ev[i].data;
    if (ready_set)
        *ready_set = ready;
    return SOLO5_R_OK;
}

/* block_io checks a request as the spt bindings do (one whole block, aligned,
 * within capacity) before making it: the tender's filter kills the guest
 * for any other. */
static int block_io(long nr, uint64_t handle, uint64_t offset, void *buf,
                    size_t len)
{
    const struct mft_entry *e = device_by_handle(handle, MFT_DEV_BLOCK_BASIC);
    if (!e)
        return SOLO5_R_EINVAL;
    uint64_t bs = e->u.block_basic.block_size, cap = e->u.block_basic.capacity;
    if (len != bs || offset % bs != 0 || cap < bs || offset > cap - bs)
        return SOLO5_R_EINVAL;
    long n = syscall6(nr, e->b.hostfd, (long)buf, (long)len, (long)offset, 0, 0);
    return n == (long)len ? SOLO5_R_OK : SOLO5_R_EUNSPEC;
}

int block_write(uint64_t handle, uint64_t offset, const void *buf, size_t len)
{
    return block_io(SYS_PWRITE64, handle, offset, (void *)(uintptr_t)buf, len);
}

int block_read(uint64_t handle, uint64_t offset, void *buf, size_t len)
{
    return block_io(SYS_PREAD64, handle, offset, buf, len);
}

int net_write(uint64_t handle, const void *buf, size_t len)
{
    const struct mft_entry *e = device_by_handle(handle, MFT_DEV_NET_BASIC);
    if (!e)
        return SOLO5_R_EINVAL;
    long n = syscall6(SYS_WRITE, e->b.hostfd, (long)buf, (long)len, 0, 0, 0);
    return n == (long)len ? SOLO5_R_OK : SOLO5_R_EUNSPEC;
}

int net_read(uint64_t handle, void *buf, size_t len, size_t *read_len)
{
    const struct mft_entry *e = device_by_handle(handle, MFT_DEV_NET_BASIC);
    if (read_len)
        *read_len = 0;
    if (!e)
        return SOLO5_R_EINVAL;
    long n = syscall6(SYS_READ, e->b.hostfd, (long)buf, (long)len, 0, 0, 0);
    if (n == -EAGAIN)
        return SOLO5_R_AGAIN;
    if (n < 0)
        return SOLO5_R_EUNSPEC;
    if (read_len)
        *read_len = (size_t)n;
    return SOLO5_R_OK;
}

void guest_exit(int status)
{
    for (;;)
        syscall6(SYS_EXIT_GROUP, status, 0, 0, 0, 0, 0);
}
