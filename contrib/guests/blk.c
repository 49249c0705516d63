/* blk: writes a pattern to several sectors of block device "storage",
 * reads it back, checks that out-of-range and misaligned requests are
 * refused, and prints "blk: OK" (exit 0) or what failed (exit 1). */
#include "guest.h"

GUEST_MANIFEST(1, GUEST_BLOCK("storage"));

#define MAX_SECTOR 4096

static uint8_t wbuf[MAX_SECTOR], rbuf[MAX_SECTOR];

static void fill(uint8_t *b, size_t n, uint64_t sector)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(sector * 31 + i * 7 + (i >> 8));
}

int guest_main(const char *cmdline)
{
    (void)cmdline;
    uint64_t h;
    const struct mft_entry *e = device_lookup("storage", MFT_DEV_BLOCK_BASIC, &h);
    if (!e) {
        printf("blk: FAIL: block device \"storage\" is not attached\n");
        return 1;
    }
    uint64_t bs = e->u.block_basic.block_size, cap = e->u.block_basic.capacity;
    printf("blk: capacity %lu bytes, block size %lu\n", cap, bs);
    if (bs == 0 || bs > MAX_SECTOR || cap < bs) {
        printf("blk: FAIL: unusable geometry\n");
        return 1;
    }
    uint64_t n = cap / bs;
    uint64_t sectors[] = { 0, 1, 2, n / 2, n - 2, n - 1 };
    int count = sizeof sectors / sizeof sectors[0];
    for (int i = 0; i < count; i++) {
        fill(wbuf, bs, sectors[i]);
        int r = block_write(h, sectors[i] * bs, wbuf, bs);
        if (r != SOLO5_R_OK) {
            printf("blk: FAIL: write sector %lu returned %d\n", sectors[i], r);
            return 1;
        }
    }
    for (int i = 0; i < count; i++) {
        memset(rbuf, 0, bs);
        int r = block_read(h, sectors[i] * bs, rbuf, bs);
        fill(wbuf, bs, sectors[i]);
        if (r != SOLO5_R_OK || memcmp(rbuf, wbuf, bs) != 0) {
            printf("blk: FAIL: read back sector %lu (ret %d) does not match\n", sectors[i], r);
            return 1;
        }
    }
    if (block_write(h, cap, wbuf, bs) != SOLO5_R_EINVAL) {
        printf("blk: FAIL: write past the end was not refused\n");
        return 1;
    }
    if (block_read(h, 1, rbuf, bs) != SOLO5_R_EINVAL) {
        printf("blk: FAIL: misaligned read was not refused\n");
        return 1;
    }
    printf("blk: %d sectors written and verified\n", count);
    printf("blk: OK\n");
    return 0;
}
