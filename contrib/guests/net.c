/* net: answers ARP requests and ICMP echo requests for the IPv4 address
 * given as its first argument on net device "service0", printing a line for
 * each frame it handles. With a second argument N it exits 0 after
 * answering N echo requests; otherwise it runs until stopped. */
#include "guest.h"

GUEST_MANIFEST(1, GUEST_NET("service0"));

#define ETH_HLEN 14
#define ETHERTYPE_IP 0x0800
#define ETHERTYPE_ARP 0x0806
#define FRAME_MAX 1514

static uint8_t frame[FRAME_MAX + 64];
static uint8_t mac[6], ip[4];

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }

/* Internet checksum (RFC 1071) of n bytes. */
static uint16_t checksum(const uint8_t *p, size_t n)
{
    uint32_t sum = 0;
    for (; n > 1; p += 2, n -= 2)
        sum += get16(p);
    if (n)
        sum += (uint32_t)p[0] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* Parse a dotted-quad IPv4 address; 0 on success. */
static int parse_ip(const char *s, uint8_t out[4])
{
    for (int i = 0; i < 4; i++) {
        unsigned v = 0;
        int digits = 0;
        while (*s >= '0' && *s <= '9' && digits < 4)
            v = v * 10 + (*s++ - '0'), digits++;
        if (!digits || v > 255)
            return -1;
        out[i] = (uint8_t)v;
        if (i < 3 && *s++ != '.')
            return -1;
    }
    return (*s == 0 || *s == ' ') ? 0 : -1;
}

static void fmt_ip(char *buf, const uint8_t *a)
{
    snprintf(buf, 16, "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
}

/* Answer an ARP request for our address in place; returns the reply length
 * or 0 if the frame needs no answer. */
static size_t handle_arp(uint8_t *f, size_t len)
{
    uint8_t *a = f + ETH_HLEN;
    char who[16], what[16];
    if (len < ETH_HLEN + 28 || get16(a) != 1 || get16(a + 2) != ETHERTYPE_IP ||
        a[4] != 6 || a[5] != 4) {
        printf("net: ignored malformed ARP frame\n");
        return 0;
    }
    fmt_ip(who, a + 14);
    fmt_ip(what, a + 24);
    if (get16(a + 6) != 1 || memcmp(a + 24, ip, 4) != 0) {
        printf("net: ARP op %u for %s from %s ignored\n", get16(a + 6), what, who);
        return 0;
    }
    printf("net: ARP request for %s from %s, replying\n", what, who);
    memcpy(f, f + 6, 6);
    memcpy(f + 6, mac, 6);
    put16(a + 6, 2);
    memcpy(a + 18, a + 8, 10); /* requester's MAC and IP become the target */
    memcpy(a + 8, mac, 6);
    memcpy(a + 14, ip, 4);
    return ETH_HLEN + 28;
}

/* Answer an ICMP echo request to our address in place; returns the reply
 * length or 0. */
static size_t handle_ip(uint8_t *f, size_t len)
{
    uint8_t *h = f + ETH_HLEN;
    char who[16];
    if (len < ETH_HLEN + 20 || (h[0] >> 4) != 4) {
        printf("net: ignored malformed IPv4 frame\n");
        return 0;
    }
    size_t ihl = (size_t)(h[0] & 0xf) * 4, total = get16(h + 2);
    if (ihl < 20 || total < ihl + 8 || ETH_HLEN + total > len) {
        printf("net: ignored malformed IPv4 frame\n");
        return 0;
    }
    fmt_ip(who, h + 12);
    uint8_t *icmp = h + ihl;
    if (h[9] != 1 || icmp[0] != 8 || memcmp(h + 16, ip, 4) != 0) {
        printf("net: IPv4 protocol %u from %s ignored\n", h[9], who);
        return 0;
    }
    printf("net: ICMP echo request from %s, replying\n", who);
    memcpy(f, f + 6, 6);
    memcpy(f + 6, mac, 6);
    memcpy(h + 16, h + 12, 4);
    memcpy(h + 12, ip, 4);
    h[8] = 64;
    put16(h + 10, 0);
    put16(h + 10, checksum(h, ihl));
    icmp[0] = 0;
    put16(icmp + 2, 0);
    put16(icmp + 2, checksum(icmp, total - ihl));
    return ETH_HLEN + total;
}

int guest_main(const char *cmdline)
{
    uint64_t h;
    const struct mft_entry *e = device_lookup("service0", MFT_DEV_NET_BASIC, &h);
    if (!e) {
        printf("net: net device \"service0\" is not attached\n");
        return 1;
    }
    if (parse_ip(cmdline, ip) != 0) {
        printf("net: usage: net IPV4-ADDRESS [REPLIES] (got \"%s\")\n", cmdline);
        return 1;
    }
    long limit = -1;
    const char *rest = cmdline;
    while (*rest && *rest != ' ')
        rest++;
    if (*rest == ' ' && (parse_int(rest + 1, &limit) != 0 || limit <= 0)) {
        printf("net: REPLIES must be a positive number\n");
        return 1;
    }
    memcpy(mac, e->u.net_basic.mac, 6);
    char addr[16];
    fmt_ip(addr, ip);
    printf("net: service0 mac %02x:%02x:%02x:%02x:%02x:%02x mtu %u, answering for %s\n",
           mac[0], mac[1], mac[2], mac[3], mac[4], mac[5],
           e->u.net_basic.mtu, addr);

    long replies = 0;
    while (limit < 0 || replies < limit) {
        uint64_t ready = 0;
        poll_net(1000000000ULL, &ready);
        if (!(ready & (1ULL << h)))
            continue;
        for (;;) {
            size_t len = 0;
            int r = net_read(h, frame, FRAME_MAX, &len);
            if (r == SOLO5_R_AGAIN)
                break;
            if (r != SOLO5_R_OK) {
                printf("net: read failed (%d)\n", r);
                return 1;
            }
            size_t out = 0;
            if (len < ETH_HLEN) {
                printf("net: ignored runt frame of %lu bytes\n", (unsigned long)len);
                continue;
            }
            uint16_t type = get16(frame + 12);
            if (type == ETHERTYPE_ARP) {
                out = handle_arp(frame, len);
            } else if (type == ETHERTYPE_IP) {
                out = handle_ip(frame, len);
                if (out)
                    replies++;
            } else {
                printf("net: ignored frame of type 0x%04x\n", type);
            }
            if (out && net_write(h, frame, out) != SOLO5_R_OK) {
                printf("net: write failed\n");
                return 1;
            }
        }
    }
    printf("net: answered %ld echo requests, exiting\n", replies);
    return 0;
}
