/*
 * guest.h: the tiny runtime shared by Petrel's test guests.
 *
 * It describes the parts of the Solo5 hvt ABI (version 2) the guests use:
 * the boot information the tender passes in RDI, the application manifest,
 * the hypercalls, and the ELF notes that declare target, ABI version and
 * devices. Everything is freestanding: no library from elsewhere is used.
 */
#ifndef PETREL_GUEST_H
#define PETREL_GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* struct hvt_boot_info: its address is the sole argument of the entry point. */
struct hvt_boot_info {
    uint64_t mem_size;
    uint64_t kernel_end;
    uint64_t cpu_cycle_freq;
    uint64_t cmdline;
    uint64_t mft;
};

/* Manifest entry types (mft_abi.h). */
#define MFT_DEV_BLOCK_BASIC 1
#define MFT_DEV_NET_BASIC 2
#define MFT_RESERVED_FIRST (1U << 30)
#define MFT_NAME_SIZE 68

struct mft_entry {
    char name[MFT_NAME_SIZE];
    uint32_t type;
    union {
        struct {
            uint64_t capacity;
            uint16_t block_size;
        } block_basic;
        struct {
            uint8_t mac[6];
            uint16_t mtu;
        } net_basic;
    } u;
    union {
        int hostfd;
        void *data;
    } b;
    bool attached;
};
_Static_assert(sizeof(struct mft_entry) == 104, "struct mft_entry layout");

struct mft {
    uint32_t version;
    uint32_t entries;
    struct mft_entry e[];
};

/* ELF note header with the name "Solo5" padded to 8 bytes. */
struct solo5_nhdr {
    uint32_t n_namesz;
    uint32_t n_descsz;
    uint32_t n_type;
    char n_name[8];
};

#define SOLO5_NOTE_ABI1 0x31494241 /* "ABI1" */
#define SOLO5_NOTE_MFT1 0x3154464d /* "MFT1" */
#define HVT_ABI_TARGET 1
#define HVT_ABI_VERSION 2

/*
 * GUEST_MANIFEST(N, entries...) declares the ABI note (hvt, version 2) and
 * a manifest note with N devices, e.g.
 *   GUEST_MANIFEST(1, GUEST_BLOCK("storage"));
 * The manifest structure is 8-byte aligned, so its descriptor starts with
 * 4 bytes of padding after the 20-byte note header, as in Solo5.
 */
#define GUEST_BLOCK(n) { .name = n, .type = MFT_DEV_BLOCK_BASIC }
#define GUEST_NET(n) { .name = n, .type = MFT_DEV_NET_BASIC }

#define GUEST_ABI_NOTE                                                      \
    const struct {                                                          \
        struct solo5_nhdr h;                                                \
        uint32_t target, version, reserved0, reserved1;                    \
    } guest_abi_note                                                        \
    __attribute__((section(".note.solo5.abi"), aligned(4), used)) = {       \
        .h = { 6, 16, SOLO5_NOTE_ABI1, "Solo5" },                           \
        .target = HVT_ABI_TARGET, .version = HVT_ABI_VERSION,              \
    }

#define GUEST_MANIFEST(N, ...)                                              \
    GUEST_ABI_NOTE;                                                         \
    const struct {                                                          \
        struct solo5_nhdr h;                                                \
        struct {                                                            \
            uint32_t version;                                               \
            uint32_t entries;                                               \
            struct mft_entry e[(N) + 1];                                    \
        } m;                                                                \
    } guest_mft_note                                                        \
    __attribute__((section(".note.solo5.manifest"), aligned(8), used)) = {  \
        .h = { 6, 4 + 8 + ((N) + 1) * sizeof(struct mft_entry),             \
               SOLO5_NOTE_MFT1, "Solo5" },                                  \
        .m = { 1, (N) + 1,                                                  \
               { { .name = "", .type = MFT_RESERVED_FIRST }, __VA_ARGS__ } }, \
    }

/* Results of block and network hypercalls (solo5_result_t). */
#define SOLO5_R_OK 0
#define SOLO5_R_AGAIN 1
#define SOLO5_R_EINVAL 2
#define SOLO5_R_EUNSPEC 3

/* The entry point of every guest; its return value is the exit status. */
int guest_main(const char *cmdline);

/* Boot information, valid once guest_main runs. */
extern const struct hvt_boot_info *boot_info;

/* Hypercalls. */
uint64_t walltime_ns(void);
void console_write(const char *s, size_t len);
int poll_net(uint64_t timeout_ns, uint64_t *ready_set);
int block_write(uint64_t handle, uint64_t offset, const void *buf, size_t len);
int block_read(uint64_t handle, uint64_t offset, void *buf, size_t len);
int net_write(uint64_t handle, const void *buf, size_t len);
int net_read(uint64_t handle, void *buf, size_t len, size_t *read_len);
void __attribute__((noreturn)) guest_exit(int status);

/* Manifest lookup: the attached entry called name of the given type and its
 * handle, or NULL. */
const struct mft_entry *device_lookup(const char *name, uint32_t type,
                                      uint64_t *handle);

/* Strings and formatting. */
void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int parse_int(const char *s, long *out);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
