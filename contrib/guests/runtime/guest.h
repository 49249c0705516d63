/*
 * guest.h: the tiny runtime shared by Petrel's test guests.
 *
 * It describes the parts of the Solo5 hvt and spt ABIs (version 2) the
 * guests use: the application manifest, the calls into the tender, and the
 * ELF notes that declare target, ABI version and devices. Guest sources are
 * the same for both targets; GUEST_TARGET (1 for hvt, 2 for spt, set by the
 * Makefile) selects the ABI note, and the runtime file of that target
 * (runtime/hvt.c or runtime/spt.c) provides the calls and reads the
 * target's boot information. Everything is freestanding: no library from
 * elsewhere is used.
 */
#ifndef PETREL_GUEST_H
#define PETREL_GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef GUEST_TARGET
#error "GUEST_TARGET must be 1 (hvt) or 2 (spt)"
#endif

/* Manifest entry types (mft_abi.h). */
#define MFT_DEV_BLOCK_BASIC 1
#define MFT_DEV_NET_BASIC 2
#define MFT_RESERVED_FIRST (1U << 30)
#define MFT_NAME_SIZE 68
#define MFT_MAX_ENTRIES 64

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
#define GUEST_ABI_VERSION 2

/*
 * GUEST_MANIFEST(N, entries...) declares the ABI note (GUEST_TARGET,
 * version 2) and
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
        .target = GUEST_TARGET, .version = GUEST_ABI_VERSION,              \
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

/*
 * Provided by the target's runtime file. platform_init records the boot
 * information whose address the tender passed to the entry point; the
 * accessors read it once guest_main runs.
 */
void platform_init(const void *boot_info);
const char *platform_cmdline(void);
const struct mft *platform_manifest(void);
uint64_t guest_mem_size(void);

/* Calls into the tender: hypercalls on hvt, system calls on spt. */
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
/* The attached entry with the given handle and type, or NULL. */
const struct mft_entry *device_by_handle(uint64_t handle, uint32_t type);

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
