/*
 * hvt.c: the hvt target of Petrel's test guests: the boot information of
 * the hvt ABI and the hypercalls, issued as port I/O.
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

/* struct hvt_boot_info: its address is the sole argument of the entry point. */
struct hvt_boot_info {
    uint64_t mem_size;
    uint64_t kernel_end;
    uint64_t cpu_cycle_freq;
    uint64_t cmdline;
    uint64_t mft;
};

static const struct hvt_boot_info *boot_info;

void platform_init(const void *bi)
{
    boot_info = bi;
}

const char *platform_cmdline(void)
{
    return (const char *)(uintptr_t)boot_info->cmdline;
}

const struct mft *platform_manifest(void)
{
    return (const struct mft *)(uintptr_t)boot_info->mft;
}

uint64_t guest_mem_size(void)
{
    return boot_info->mem_size;
}

/* Issue hypercall n: a 32-bit OUT of the argument's address to port 0x500+n. */
static inline void hypercall(int n, volatile void *arg)
{
    __asm__ __volatile__("outl %0, %1"
                         :
                         : "a"((uint32_t)(uintptr_t)arg),
                           "d"((uint16_t)(HVT_HYPERCALL_PIO_BASE + n))
                         : "memory");
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
