/* TUN offload split and coalesce; see offload.h for the contract.
 *
 * Byte order: a ones'-complement sum is independent of the byte order it is
 * computed in (RFC 1071 §2(B)), so sums are accumulated from native loads and
 * stored back with native stores; only small constants (protocol, lengths)
 * are converted with htons.  Internal sums are "native-domain" values; the
 * exported checksum helpers convert to the wire value at the boundary.
 */
#include <errno.h>
#include <string.h>
#include <arpa/inet.h>

#include "offload.h"

#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define NH_HOPOPTS 0
#define NH_ROUTING 43
#define NH_FRAGMENT 44
#define NH_DSTOPTS 60

#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_CWR 0x80

#define FAIL(msg)             \
    do {                      \
        if (why)              \
            *why = (msg);     \
        return -EINVAL;       \
    } while (0)

static inline unsigned get16(const uint8_t *p)
{
    return ((unsigned)p[0] << 8) | p[1];
}

static inline uint32_t get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | p[3];
}

static inline void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* The virtio header is in host order (legacy virtio; the TUN default). */
static inline unsigned hget16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline void hput16(uint8_t *p, unsigned v)
{
    uint16_t x = (uint16_t)v;
    memcpy(p, &x, 2);
}

/* ---- checksums -------------------------------------------------------- */

/* 64-bit native loads added with end-around carry (ones'-complement addition
 * in 64 bits keeps the sum modulo 2^16-1, which is what folding needs), in two
 * independent chains.  On this host that is ~1.5x faster than 32-bit loads
 * into wide accumulators; the unrolling is what wireguard-go's 895d6c2 was
 * about. */
static inline uint64_t addc(uint64_t acc, uint64_t w)
{
    acc += w;
    return acc + (acc < w);
}

static uint64_t sum_native(const uint8_t *p, size_t n, uint64_t acc)
{
    uint64_t a = acc, b = 0, w0, w1, w2, w3;
    uint32_t x;
    uint16_t h;

    while (n >= 32) {
        memcpy(&w0, p, 8);
        memcpy(&w1, p + 8, 8);
        memcpy(&w2, p + 16, 8);
        memcpy(&w3, p + 24, 8);
        a = addc(a, w0);
        b = addc(b, w1);
        a = addc(a, w2);
        b = addc(b, w3);
        p += 32;
        n -= 32;
    }
    while (n >= 8) {
        memcpy(&w0, p, 8);
        a = addc(a, w0);
        p += 8;
        n -= 8;
    }
    if (n >= 4) {
        memcpy(&x, p, 4);
        b = addc(b, (uint64_t)x);
        p += 4;
        n -= 4;
    }
    if (n >= 2) {
        memcpy(&h, p, 2);
        b = addc(b, (uint64_t)h);
        p += 2;
        n -= 2;
    }
    if (n) {
        /* the odd byte is the high-order half of a word padded with zero */
        uint8_t last[2] = {p[0], 0};
        memcpy(&h, last, 2);
        b = addc(b, (uint64_t)h);
    }
    a = addc(a, b);
    return a;
}

/* sum_native over src while copying it to dst: one pass over the payload
 * instead of a memcpy and a second read. */
static uint64_t copy_sum_native(uint8_t *dst, const uint8_t *src, size_t n,
                                uint64_t acc)
{
    uint64_t a = acc, b = 0, w0, w1, w2, w3;

    while (n >= 32) {
        memcpy(&w0, src, 8);
        memcpy(&w1, src + 8, 8);
        memcpy(&w2, src + 16, 8);
        memcpy(&w3, src + 24, 8);
        memcpy(dst, &w0, 8);
        memcpy(dst + 8, &w1, 8);
        memcpy(dst + 16, &w2, 8);
        memcpy(dst + 24, &w3, 8);
        a = addc(a, w0);
        b = addc(b, w1);
        a = addc(a, w2);
        b = addc(b, w3);
        src += 32;
        dst += 32;
        n -= 32;
    }
    memcpy(dst, src, n);
    a = addc(a, b);
    return sum_native(src, n, a);
}

static inline uint16_t fold_native(uint64_t s)
{
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    return (uint16_t)s;
}

/* The checksum to store, never 0: skb_checksum_help stores CSUM_MANGLED_0 for
 * a zero result too, and for UDP a zero would mean "no checksum". */
static inline void store_csum(uint8_t *field, uint64_t sum)
{
    uint16_t c = (uint16_t)~fold_native(sum);
    if (c == 0)
        c = 0xffff;
    memcpy(field, &c, 2);
}

/* An IPv4 header checksum is stored as computed, zero included (ip_send_check
 * does not remap it). */
static inline void store_ip_csum(uint8_t *ip, unsigned ihl)
{
    uint16_t c;

    ip[10] = ip[11] = 0;
    c = (uint16_t)~fold_native(sum_native(ip, ihl, 0));
    memcpy(ip + 10, &c, 2);
}

static inline uint64_t pseudo_native(const uint8_t *src, const uint8_t *dst,
                                     unsigned alen, unsigned proto,
                                     uint32_t l4_len)
{
    uint64_t s = sum_native(dst, alen, sum_native(src, alen, 0));

    /* fold to 33 bits so that the small terms below, and the callers'
     * per-segment lengths, can be added without losing a carry */
    s = (s & 0xffffffffu) + (s >> 32);
    return s + htons((uint16_t)proto) + htons((uint16_t)(l4_len >> 16)) +
           htons((uint16_t)l4_len);
}

uint16_t aiou_csum_add(const void *data, size_t len, uint16_t sum)
{
    return ntohs(fold_native(sum_native(data, len, htons(sum))));
}

uint16_t aiou_csum(const void *data, size_t len)
{
    return (uint16_t)~aiou_csum_add(data, len, 0);
}

uint16_t aiou_pseudo_sum4(const uint8_t *src, const uint8_t *dst,
                          uint8_t proto, uint32_t l4_len)
{
    return ntohs(fold_native(pseudo_native(src, dst, 4, proto, l4_len)));
}

uint16_t aiou_pseudo_sum6(const uint8_t *src, const uint8_t *dst,
                          uint8_t proto, uint32_t l4_len)
{
    return ntohs(fold_native(pseudo_native(src, dst, 16, proto, l4_len)));
}

/* ---- split -------------------------------------------------------------- */

struct split {
    const uint8_t *pkt;
    size_t len;          /* IP packet bytes */
    unsigned gso_type;   /* without the ECN bit */
    unsigned csum_start;
    unsigned csum_offset;
    unsigned l4;         /* L4 header bytes */
    unsigned gso;        /* payload bytes per segment */
    unsigned nseg;
    const uint8_t *pseudo_dst;  /* the final destination (IPv6 routing header) */
    int v6, tcp, mode;   /* mode: 0 copy, 1 complete checksum, 2 segment */
};

/* Walk IPv6 extension headers from byte 40 to csum_start: they must end
 * exactly there, with `want` as the last next-header.  A routing header with
 * segments left names the final destination, which the pseudo-header uses
 * (RFC 8200 §8.1). */
static int walk_ipv6(struct split *s, unsigned want, const char **why)
{
    const uint8_t *p = s->pkt;
    unsigned nh = p[6], off = 40, end = s->csum_start;

    s->pseudo_dst = p + 24;
    while (off < end) {
        unsigned hlen;

        if (nh != NH_HOPOPTS && nh != NH_ROUTING && nh != NH_DSTOPTS)
            FAIL("an IPv6 header other than hop-by-hop, routing or destination options lies before csum_start");
        if (end - off < 8)
            FAIL("an IPv6 extension header crosses csum_start");
        hlen = ((unsigned)p[off + 1] + 1) * 8;
        if (hlen > end - off)
            FAIL("an IPv6 extension header crosses csum_start");
        if (nh == NH_ROUTING && p[off + 3] != 0) {
            unsigned type = p[off + 2], n = p[off + 1] / 2;

            /* types 0 and 2 carry the final destination last, SRH (4) first */
            if ((type == 0 || type == 2) && n >= 1)
                s->pseudo_dst = p + off + 8 + 16 * (n - 1);
            else if (type == 4 && n >= 1)
                s->pseudo_dst = p + off + 8;
            else
                FAIL("an IPv6 routing header of unknown type hides the final destination");
        }
        nh = p[off];
        off += hlen;
    }
    if (nh != want)
        FAIL("the IPv6 next header at csum_start does not match gso_type");
    return 0;
}

static int split_parse(const uint8_t *in, size_t in_len, struct split *s,
                       const char **why)
{
    const uint8_t *p;
    unsigned flags, gso_type, proto, hdrs;
    size_t payload;

    if (!in || in_len < AIOU_VNET_HDR_LEN)
        FAIL("shorter than the 10-byte virtio_net_hdr");
    memset(s, 0, sizeof(*s));
    p = s->pkt = in + AIOU_VNET_HDR_LEN;
    s->len = in_len - AIOU_VNET_HDR_LEN;
    flags = in[0];
    gso_type = in[1];
    s->gso = hget16(in + 4);
    s->csum_start = hget16(in + 6);
    s->csum_offset = hget16(in + 8);
    if (s->len == 0)
        FAIL("no packet after the virtio_net_hdr");

    if (gso_type == AIOU_VNET_GSO_NONE) {
        s->nseg = 1;
        if (!(flags & AIOU_VNET_F_NEEDS_CSUM))
            return 0;
        if ((size_t)s->csum_start + s->csum_offset + 2 > s->len)
            FAIL("csum_start + csum_offset lies beyond the packet");
        if (s->csum_offset & 1)
            FAIL("csum_offset is odd");
        s->mode = 1;
        return 0;
    }
    s->gso_type = gso_type & ~(unsigned)AIOU_VNET_GSO_ECN;
    switch (s->gso_type) {
    case AIOU_VNET_GSO_TCPV4:
    case AIOU_VNET_GSO_TCPV6:
        s->tcp = 1;
        break;
    case AIOU_VNET_GSO_UDP_L4:
        if (gso_type & AIOU_VNET_GSO_ECN)
            FAIL("the ECN bit is set on a UDP gso_type");
        break;
    default:
        FAIL("gso_type is not TCPV4, TCPV6 or UDP_L4");
    }
    if (!(flags & AIOU_VNET_F_NEEDS_CSUM))
        FAIL("a GSO packet without NEEDS_CSUM");
    if (s->gso == 0)
        FAIL("gso_size is 0 with a GSO type");
    if (s->csum_offset != (s->tcp ? 16u : 6u))
        FAIL("csum_offset is not the checksum field of the L4 header");
    proto = s->tcp ? IPPROTO_TCP_ : IPPROTO_UDP_;

    switch (p[0] >> 4) {
    case 4:
        if (s->gso_type == AIOU_VNET_GSO_TCPV6)
            FAIL("gso_type TCPV6 on an IPv4 packet");
        if (s->len < 20)
            FAIL("shorter than an IPv4 header");
        if (s->csum_start != (p[0] & 0xfu) * 4u || s->csum_start < 20)
            FAIL("csum_start is not the IPv4 header length");
        if (s->csum_start > s->len)
            FAIL("csum_start lies beyond the packet");
        if (p[9] != proto)
            FAIL("the IPv4 protocol does not match gso_type");
        if ((get16(p + 6) & 0x3fff) != 0)
            FAIL("a GSO packet that is an IPv4 fragment");
        if (s->len > AIOU_OFFLOAD_MAX_IPV4)
            FAIL("longer than an IPv4 packet can be");
        break;
    case 6:
        s->v6 = 1;
        if (s->gso_type == AIOU_VNET_GSO_TCPV4)
            FAIL("gso_type TCPV4 on an IPv6 packet");
        if (s->len < 40)
            FAIL("shorter than an IPv6 header");
        if (s->csum_start < 40)
            FAIL("csum_start lies inside the IPv6 header");
        if (s->csum_start > s->len)
            FAIL("csum_start lies beyond the packet");
        if (s->len > AIOU_OFFLOAD_MAX_IPV6)
            FAIL("longer than an IPv6 packet can be");
        if (walk_ipv6(s, proto, why))
            return -EINVAL;
        break;
    default:
        FAIL("a GSO packet that is neither IPv4 nor IPv6");
    }

    if (s->tcp) {
        if (s->len - s->csum_start < 20)
            FAIL("the TCP header lies beyond the packet");
        s->l4 = (p[s->csum_start + 12] >> 4) * 4u;
        if (s->l4 < 20)
            FAIL("the TCP data offset is below 5");
        if (s->l4 > s->len - s->csum_start)
            FAIL("the TCP header lies beyond the packet");
    } else {
        if (s->len - s->csum_start < 8)
            FAIL("the UDP header lies beyond the packet");
        s->l4 = 8;
    }
    hdrs = s->csum_start + s->l4;
    payload = s->len - hdrs;
    s->nseg = payload ? (unsigned)((payload + s->gso - 1) / s->gso) : 1;
    s->mode = 2;
    return 0;
}

int aiou_tun_split_size(const uint8_t *in, size_t in_len,
                        unsigned *npkts, size_t *nbytes, const char **why)
{
    struct split s;
    int ret = split_parse(in, in_len, &s, why);

    if (ret < 0)
        return ret;
    *npkts = s.nseg;
    *nbytes = s.mode == 2 ? (size_t)(s.nseg - 1) * (s.csum_start + s.l4) + s.len
                          : s.len;
    return 0;
}

int aiou_tun_split(const uint8_t *in, size_t in_len, uint8_t *out,
                   size_t out_cap, unsigned *lens, unsigned max_pkts,
                   const char **why)
{
    struct split s;
    const uint8_t *p;
    unsigned cs, hdrs, i, proto;
    size_t payload, used = 0;
    uint64_t pseudo;
    uint32_t seq0 = 0;
    int ret = split_parse(in, in_len, &s, why);

    if (ret < 0)
        return ret;
    if (!out || !lens || max_pkts < s.nseg)
        goto nospc;
    p = s.pkt;
    if (s.mode != 2) {
        if (out_cap < s.len)
            goto nospc;
        memcpy(out, p, s.len);
        if (s.mode == 1) {
            uint8_t *field = out + s.csum_start + s.csum_offset;
            /* the field's seed is part of the sum, as the kernel expects */
            store_csum(field, sum_native(out + s.csum_start, s.len - s.csum_start, 0));
        }
        lens[0] = (unsigned)s.len;
        return 1;
    }

    cs = s.csum_start;
    hdrs = cs + s.l4;
    payload = s.len - hdrs;
    if (out_cap < (size_t)(s.nseg - 1) * hdrs + s.len)
        goto nospc;
    proto = s.tcp ? IPPROTO_TCP_ : IPPROTO_UDP_;
    /* the pseudo-header without its length, which differs per segment */
    pseudo = s.v6 ? pseudo_native(p + 8, s.pseudo_dst, 16, proto, 0)
                  : pseudo_native(p + 12, p + 16, 4, proto, 0);
    if (s.tcp)
        seq0 = get32(p + cs + 4);

    for (i = 0; i < s.nseg; i++) {
        size_t at = (size_t)i * s.gso;
        unsigned seg_pay = payload - at < s.gso ? (unsigned)(payload - at) : s.gso;
        unsigned seg_len = hdrs + seg_pay, l4_len = seg_len - cs;
        uint8_t *o = out + used;
        uint64_t sum;

        memcpy(o, p, hdrs);
        sum = copy_sum_native(o + hdrs, p + hdrs + at, seg_pay, 0);
        if (s.v6) {
            put16(o + 4, seg_len - 40);
        } else {
            put16(o + 2, seg_len);
            put16(o + 4, get16(p + 4) + i);
            store_ip_csum(o, cs);
        }
        if (s.tcp) {
            uint8_t fl = o[cs + 13];

            put32(o + cs + 4, seq0 + (uint32_t)at);
            if (i + 1 < s.nseg)
                fl &= (uint8_t)~(TCP_FIN | TCP_PSH);
            if (i > 0)
                fl &= (uint8_t)~TCP_CWR;
            o[cs + 13] = fl;
        } else {
            put16(o + cs + 4, l4_len);
        }
        o[cs + s.csum_offset] = o[cs + s.csum_offset + 1] = 0;
        /* the payload's sum came with its copy; add the L4 header's (an even
         * length, so the word alignment of the payload sum holds) */
        sum = addc(sum, pseudo + htons((uint16_t)(l4_len >> 16)) + htons((uint16_t)l4_len));
        store_csum(o + cs + s.csum_offset, sum_native(o + cs, s.l4, sum));
        lens[i] = seg_len;
        used += seg_len;
    }
    return (int)s.nseg;

nospc:
    if (why)
        *why = "the output buffer or the length array is too small";
    return -ENOSPC;
}

/* ---- coalesce ----------------------------------------------------------- */

enum { K_NONE, K_TCP4, K_TCP6, K_UDP4, K_UDP6 };

#define TABLE_SIZE 512  /* a power of two, twice AIOU_GRO_MAX_IN */

struct gro_in {
    uint32_t hash;      /* flow hash (addresses, protocol, ports); 0: no flow */
    uint32_t seq;
    uint32_t l3;        /* offset of the L4 header */
    uint16_t pay;       /* payload bytes (candidates) */
    uint8_t proto;
    uint8_t kind;       /* K_* when the packet may be merged */
    uint8_t l4;
    uint8_t psh;
    int8_t csum;        /* 0 unknown, 1 valid, -1 invalid */
};

static inline int is_tcp(unsigned kind)
{
    return kind == K_TCP4 || kind == K_TCP6;
}

static inline int is_v6(unsigned kind)
{
    return kind == K_TCP6 || kind == K_UDP6;
}

static uint32_t mix(uint32_t h, const uint8_t *p, unsigned n)
{
    unsigned i;

    /* FNV-1a: the keys are a few dozen bytes and attacker-chosen only in
     * ways that cost the attacker their own coalescing */
    for (i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

/* Find the packet's flow (if it has ports) and whether it is a candidate. */
static void gro_classify(const uint8_t *p, unsigned len, unsigned flags,
                         struct gro_in *g)
{
    unsigned proto, l3, v = len ? p[0] >> 4 : 0, alen, ok_ip;
    uint32_t h;

    memset(g, 0, sizeof(*g));
    if (v == 4) {
        if (len < 20)
            return;
        l3 = (p[0] & 0xfu) * 4u;
        if (l3 < 20 || l3 > len || (get16(p + 6) & 0x1fff) != 0)
            return;  /* later fragments carry no ports; reassembly reorders anyway */
        proto = p[9];
        /* the kernel's GRO checks the header checksum too: merging would
         * launder a corrupt header into a fresh one */
        ok_ip = l3 == 20 && get16(p + 2) == len && !(p[6] & 0x20) &&
                fold_native(sum_native(p, 20, 0)) == 0xffff;
        alen = 4;
    } else if (v == 6) {
        unsigned nh;

        if (len < 40)
            return;
        nh = p[6];
        l3 = 40;
        ok_ip = get16(p + 4) == len - 40;
        while (nh == NH_HOPOPTS || nh == NH_ROUTING || nh == NH_DSTOPTS) {
            if (len - l3 < 8)
                return;
            ok_ip = 0;
            nh = p[l3];
            l3 += ((unsigned)p[l3 + 1] + 1) * 8;
            if (l3 > len)
                return;
        }
        proto = nh;
        alen = 16;
    } else {
        return;
    }
    if ((proto != IPPROTO_TCP_ && proto != IPPROTO_UDP_) || len - l3 < 4)
        return;
    h = mix(2166136261u ^ (v << 8) ^ proto, p + (v == 4 ? 12 : 8), 2 * alen);
    h = mix(h, p + l3, 4);
    g->hash = h ? h : 1;
    g->l3 = l3;
    g->proto = (uint8_t)proto;
    if (!ok_ip || len > AIOU_OFFLOAD_MAX_IPV4)
        return;

    if (proto == IPPROTO_TCP_ && (flags & AIOU_GRO_TCP)) {
        unsigned thl, fl;

        if (len - l3 < 20)
            return;
        thl = (p[l3 + 12] >> 4) * 4u;
        fl = p[l3 + 13];
        if (thl < 20 || thl >= len - l3)
            return;  /* no payload: pure ACKs are never merged */
        if (fl != TCP_ACK && fl != (TCP_ACK | TCP_PSH))
            return;
        g->kind = v == 4 ? K_TCP4 : K_TCP6;
        g->l4 = (uint8_t)thl;
        g->pay = (uint16_t)(len - l3 - thl);
        g->seq = get32(p + l3 + 4);
        g->psh = (fl & TCP_PSH) != 0;
    } else if (proto == IPPROTO_UDP_ && (flags & AIOU_GRO_UDP)) {
        if (len - l3 <= 8 || get16(p + l3 + 4) != len - l3)
            return;
        g->kind = v == 4 ? K_UDP4 : K_UDP6;
        g->l4 = 8;
        g->pay = (uint16_t)(len - l3 - 8);
    }
}

static int same_flow(const uint8_t *a, const struct gro_in *ga,
                     const uint8_t *b, const struct gro_in *gb)
{
    if (ga->hash != gb->hash || ga->proto != gb->proto || (a[0] >> 4) != (b[0] >> 4))
        return 0;
    if ((a[0] >> 4) == 4 ? memcmp(a + 12, b + 12, 8) != 0 : memcmp(a + 8, b + 8, 32) != 0)
        return 0;
    return memcmp(a + ga->l3, b + gb->l3, 4) == 0;
}

static int csum_valid(const uint8_t *p, unsigned len, const struct gro_in *g)
{
    unsigned proto = is_tcp(g->kind) ? IPPROTO_TCP_ : IPPROTO_UDP_;
    uint64_t s = is_v6(g->kind) ? pseudo_native(p + 8, p + 24, 16, proto, len - g->l3)
                                : pseudo_native(p + 12, p + 16, 4, proto, len - g->l3);

    return fold_native(sum_native(p + g->l3, len - g->l3, s)) == 0xffff;
}

static int checked(const uint8_t *const *pkts, const unsigned *lens,
                   struct gro_in *g, unsigned k)
{
    if (!g[k].csum)
        g[k].csum = csum_valid(pkts[k], lens[k], &g[k]) ? 1 : -1;
    return g[k].csum > 0;
}

static int ip_headers_match(const uint8_t *a, const uint8_t *b, int v6)
{
    if (v6)
        return memcmp(a, b, 4) == 0 && a[7] == b[7];
    return a[1] == b[1] && (a[6] & 0xe0) == (b[6] & 0xe0) && a[8] == b[8];
}

static int can_append(const uint8_t *const *pkts, const unsigned *lens,
                      struct gro_in *g, struct aiou_gro_out *o,
                      unsigned head, unsigned k)
{
    const uint8_t *a = pkts[head], *b = pkts[k];
    unsigned l3 = o->l3_len, l4 = o->l4_len;

    if (!o->open || g[k].kind != o->kind || o->count >= AIOU_GRO_MAX_SEGS)
        return 0;
    if (g[k].pay > o->gso_size || g[k].l4 != l4)
        return 0;
    if (o->size - AIOU_VNET_HDR_LEN + g[k].pay > AIOU_OFFLOAD_MAX_IPV4)
        return 0;
    if (!ip_headers_match(a, b, is_v6(o->kind)))
        return 0;
    if (is_tcp(o->kind)) {
        if (g[k].seq != o->next_seq)
            return 0;
        /* ack, data offset, reserved bits, window: what the kernel's
         * tcp_gro_receive flushes on; the urgent pointer, which the merged
         * header could only keep from the first; the options byte for byte */
        if (memcmp(a + l3 + 8, b + l3 + 8, 5) != 0 ||
            memcmp(a + l3 + 14, b + l3 + 14, 2) != 0 ||
            memcmp(a + l3 + 18, b + l3 + 18, 2) != 0 ||
            memcmp(a + l3 + 20, b + l3 + 20, l4 - 20) != 0)
            return 0;
    }
    if (!o->csum_ok) {
        if (!checked(pkts, lens, g, head)) {
            o->open = 0;  /* nothing can join a packet whose checksum is bad */
            return 0;
        }
        o->csum_ok = 1;
    }
    return checked(pkts, lens, g, k);
}

int aiou_tun_coalesce_plan(const uint8_t *const *pkts, const unsigned *lens,
                           unsigned n, unsigned flags,
                           struct aiou_gro_plan *plan)
{
    struct gro_in g[AIOU_GRO_MAX_IN];
    uint16_t table[TABLE_SIZE];
    uint16_t next[AIOU_GRO_MAX_IN], head[AIOU_GRO_MAX_IN], tail[AIOU_GRO_MAX_IN];
    unsigned k, j, nout = 0, m = 0;

    if (n > AIOU_GRO_MAX_IN)
        return -E2BIG;
    if (!plan || (n && (!pkts || !lens)))
        return -EINVAL;
    memset(table, 0, sizeof(table));
    plan->n_in = n;

    for (k = 0; k < n; k++) {
        struct aiou_gro_out *o;
        unsigned slot = 0, found = 0;

        if (!pkts[k] && lens[k])
            return -EINVAL;
        gro_classify(pkts[k], lens[k], flags, &g[k]);
        next[k] = 0xffff;
        if (g[k].hash) {
            /* the flow's most recent output, and the table slot that holds it */
            for (slot = g[k].hash & (TABLE_SIZE - 1); table[slot];
                 slot = (slot + 1) & (TABLE_SIZE - 1)) {
                unsigned h = head[table[slot] - 1];
                if (same_flow(pkts[h], &g[h], pkts[k], &g[k])) {
                    found = table[slot];
                    break;
                }
            }
            if (found) {
                o = &plan->out[found - 1];
                if (can_append(pkts, lens, g, o, head[found - 1], k)) {
                    next[tail[found - 1]] = (uint16_t)k;
                    tail[found - 1] = (uint16_t)k;
                    o->count++;
                    o->size += g[k].pay;
                    o->next_seq += g[k].pay;
                    if (g[k].pay < o->gso_size)
                        o->open = 0;
                    if (g[k].psh) {
                        o->psh = 1;
                        o->open = 0;
                    }
                    continue;
                }
            }
            table[slot] = (uint16_t)(nout + 1);
        }
        o = &plan->out[nout];
        memset(o, 0, sizeof(*o));
        o->size = AIOU_VNET_HDR_LEN + lens[k];
        o->count = 1;
        o->kind = g[k].kind;
        if (g[k].kind) {
            o->gso_size = g[k].pay;
            o->l3_len = (uint8_t)g[k].l3;
            o->l4_len = g[k].l4;
            o->next_seq = g[k].seq + g[k].pay;
            o->psh = g[k].psh;
            o->open = !g[k].psh;  /* nothing may follow a PSH */
        }
        head[nout] = tail[nout] = (uint16_t)k;
        nout++;
    }

    for (j = 0; j < nout; j++) {
        plan->out[j].first = (uint16_t)m;
        for (k = head[j]; k != 0xffff; k = next[k])
            plan->members[m++] = (uint16_t)k;
        if (plan->out[j].count == 1)
            plan->out[j].kind = K_NONE;
    }
    plan->n_out = nout;
    return (int)nout;
}

/* The output's geometry checked against the packets as they are now, so a
 * stale or corrupt plan cannot make emit read or write out of bounds. */
static int plan_check(const unsigned *lens, const struct aiou_gro_plan *plan,
                      unsigned i)
{
    const struct aiou_gro_out *o;
    unsigned c, hdrs;
    size_t total;

    if (!plan || !lens || i >= plan->n_out || plan->n_in > AIOU_GRO_MAX_IN)
        return -EINVAL;
    o = &plan->out[i];
    if (o->count == 0 || (unsigned)o->first + o->count > plan->n_in)
        return -EINVAL;
    for (c = 0; c < o->count; c++)
        if (plan->members[o->first + c] >= plan->n_in)
            return -EINVAL;
    if (o->count == 1)
        return o->size == AIOU_VNET_HDR_LEN + (size_t)lens[plan->members[o->first]] ? 0 : -EINVAL;
    if (o->kind == K_NONE || o->kind > K_UDP6 || o->gso_size == 0 ||
        o->l3_len != (is_v6(o->kind) ? 40 : 20) ||
        o->l4_len < (is_tcp(o->kind) ? 20 : 8) || o->l4_len > 60)
        return -EINVAL;
    hdrs = o->l3_len + o->l4_len;
    total = AIOU_VNET_HDR_LEN + hdrs;
    for (c = 0; c < o->count; c++) {
        unsigned len = lens[plan->members[o->first + c]];
        if (len <= hdrs || len - hdrs > o->gso_size ||
            (c + 1 < o->count && len - hdrs != o->gso_size))
            return -EINVAL;
        total += len - hdrs;
    }
    return total == o->size && total - AIOU_VNET_HDR_LEN <= AIOU_OFFLOAD_MAX_IPV4 ? 0 : -EINVAL;
}

/* The virtio header and the merged packet's headers, into h (10+l3+l4). */
static void merged_headers(const uint8_t *const *pkts,
                           const struct aiou_gro_out *o, unsigned first,
                           uint8_t *h)
{
    unsigned l3 = o->l3_len, l4 = o->l4_len, total = o->size - AIOU_VNET_HDR_LEN;
    int tcp = is_tcp(o->kind), v6 = is_v6(o->kind);
    unsigned proto = tcp ? IPPROTO_TCP_ : IPPROTO_UDP_;
    uint8_t *ip = h + AIOU_VNET_HDR_LEN;
    uint64_t pseudo;
    uint16_t seed;

    h[0] = AIOU_VNET_F_NEEDS_CSUM;
    h[1] = tcp ? (v6 ? AIOU_VNET_GSO_TCPV6 : AIOU_VNET_GSO_TCPV4) : AIOU_VNET_GSO_UDP_L4;
    hput16(h + 2, l3 + l4);
    hput16(h + 4, o->gso_size);
    hput16(h + 6, l3);
    hput16(h + 8, tcp ? 16 : 6);
    memcpy(ip, pkts[first], l3 + l4);
    if (v6) {
        put16(ip + 4, total - 40);
    } else {
        put16(ip + 2, total);
        store_ip_csum(ip, 20);
    }
    if (tcp) {
        if (o->psh)
            ip[l3 + 13] |= TCP_PSH;
    } else {
        put16(ip + l3 + 4, total - l3);
    }
    /* CHECKSUM_PARTIAL's convention: the folded pseudo-header sum over the
     * whole L4 length, which segmentation adjusts per segment (tcp_gso_segment
     * from skb->len, __udp_gso_segment from the UDP length field) */
    pseudo = v6 ? pseudo_native(ip + 8, ip + 24, 16, proto, total - l3)
                : pseudo_native(ip + 12, ip + 16, 4, proto, total - l3);
    seed = fold_native(pseudo);
    memcpy(ip + l3 + (tcp ? 16 : 6), &seed, 2);
}

long aiou_tun_coalesce_emit(const uint8_t *const *pkts, const unsigned *lens,
                            const struct aiou_gro_plan *plan, unsigned i,
                            uint8_t *dst, size_t dst_cap)
{
    const struct aiou_gro_out *o;
    const uint16_t *mem;
    unsigned c, hdrs;
    size_t at;

    if (!pkts || !dst || plan_check(lens, plan, i) < 0)
        return -EINVAL;
    o = &plan->out[i];
    if (dst_cap < o->size)
        return -EINVAL;
    mem = plan->members + o->first;
    if (o->count == 1) {
        memset(dst, 0, AIOU_VNET_HDR_LEN);
        if (lens[mem[0]])
            memcpy(dst + AIOU_VNET_HDR_LEN, pkts[mem[0]], lens[mem[0]]);
        return (long)o->size;
    }
    hdrs = o->l3_len + o->l4_len;
    merged_headers(pkts, o, mem[0], dst);
    at = AIOU_VNET_HDR_LEN + hdrs;
    for (c = 0; c < o->count; c++) {
        unsigned pay = lens[mem[c]] - hdrs;
        memcpy(dst + at, pkts[mem[c]] + hdrs, pay);
        at += pay;
    }
    return (long)at;
}

int aiou_tun_coalesce_iov(const uint8_t *const *pkts, const unsigned *lens,
                          const struct aiou_gro_plan *plan, unsigned i,
                          uint8_t hdr[AIOU_GRO_HDR_MAX], struct iovec *iov,
                          unsigned iov_cap)
{
    const struct aiou_gro_out *o;
    const uint16_t *mem;
    unsigned c, hdrs;

    if (!pkts || !hdr || !iov || plan_check(lens, plan, i) < 0)
        return -EINVAL;
    o = &plan->out[i];
    if (iov_cap < (unsigned)o->count + 1)
        return -ENOSPC;
    mem = plan->members + o->first;
    if (o->count == 1) {
        memset(hdr, 0, AIOU_VNET_HDR_LEN);
        iov[0].iov_base = hdr;
        iov[0].iov_len = AIOU_VNET_HDR_LEN;
        iov[1].iov_base = (void *)(uintptr_t)pkts[mem[0]];  /* writev never writes */
        iov[1].iov_len = lens[mem[0]];
        return 2;
    }
    hdrs = o->l3_len + o->l4_len;
    merged_headers(pkts, o, mem[0], hdr);
    iov[0].iov_base = hdr;
    iov[0].iov_len = AIOU_VNET_HDR_LEN + hdrs;
    for (c = 0; c < o->count; c++) {
        iov[c + 1].iov_base = (void *)(uintptr_t)(pkts[mem[c]] + hdrs);
        iov[c + 1].iov_len = lens[mem[c]] - hdrs;
    }
    return (int)o->count + 1;
}

int aiou_offload_index(const uint8_t *data, size_t data_len,
                       const unsigned *lens, unsigned n, const uint8_t **pkts)
{
    size_t off = 0;
    unsigned i;

    if (n && (!data || !lens || !pkts))
        return -EINVAL;
    for (i = 0; i < n; i++) {
        if (lens[i] > data_len - off)
            return -EINVAL;
        pkts[i] = data + off;
        off += lens[i];
    }
    return 0;
}
