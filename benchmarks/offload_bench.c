/* Time per call of the offload C functions on a 45 x 1380-byte TCP/IPv4 flow
 * (one TSO super-packet's worth at MSS 1380), natively, without Python.
 * Build and run: sh benchmarks/offload_bench.sh */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "offload.h"

#define NSEG 45
#define MSS 1380

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, v >> 16);
    put16(p + 2, v & 0xffff);
}

/* One valid TCP/IPv4 segment: ACK, seq, random payload, both checksums. */
static unsigned segment(uint8_t *p, uint32_t seq, unsigned ident, unsigned pay)
{
    static const uint8_t src[4] = {10, 9, 0, 2}, dst[4] = {10, 9, 0, 1};
    unsigned len = 40 + pay, i;

    memset(p, 0, 40);
    p[0] = 0x45;
    put16(p + 2, len);
    put16(p + 4, ident);
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    memcpy(p + 12, src, 4);
    memcpy(p + 16, dst, 4);
    put16(p + 10, aiou_csum(p, 20));
    put16(p + 20, 5201);
    put16(p + 22, 40000);
    put32(p + 24, seq);
    put32(p + 28, 77);
    p[32] = 5 << 4;
    p[33] = 0x10;
    put16(p + 34, 502);
    for (i = 0; i < pay; i++)
        p[40 + i] = (uint8_t)rand();
    put16(p + 36, (uint16_t)~aiou_csum_add(p + 20, len - 20, aiou_pseudo_sum4(src, dst, 6, len - 20)));
    return len;
}

int main(int argc, char **argv)
{
    static uint8_t data[NSEG * (40 + MSS)], sp[10 + 65535], out[NSEG * (40 + MSS)];
    static struct aiou_gro_plan plan;
    const uint8_t *pkts[NSEG];
    unsigned lens[NSEG], slens[NSEG], i, off = 0;
    long iters = argc > 1 ? atol(argv[1]) : 20000, k;
    volatile unsigned sink = 0;
    double t0, t_plan, t_emit, t_split, t_csum;
    long n;

    for (i = 0; i < NSEG; i++) {
        lens[i] = segment(data + off, 1000 + i * MSS, i, MSS);
        pkts[i] = data + off;
        off += lens[i];
    }
    if (aiou_tun_coalesce_plan(pkts, lens, NSEG, AIOU_GRO_TCP, &plan) != 1 || plan.out[0].count != NSEG) {
        fprintf(stderr, "the flow did not coalesce into one super-packet\n");
        return 1;
    }
    n = aiou_tun_coalesce_emit(pkts, lens, &plan, 0, sp, sizeof(sp));
    if (aiou_tun_split(sp, (size_t)n, out, sizeof(out), slens, NSEG, NULL) != NSEG ||
        memcmp(out, data, off) != 0) {
        fprintf(stderr, "split(coalesce(flow)) is not the flow\n");
        return 1;
    }

    t0 = now();
    for (k = 0; k < iters; k++)
        sink += (unsigned)aiou_tun_coalesce_plan(pkts, lens, NSEG, AIOU_GRO_TCP, &plan);
    t_plan = (now() - t0) / iters;
    t0 = now();
    for (k = 0; k < iters; k++)
        sink += (unsigned)aiou_tun_coalesce_emit(pkts, lens, &plan, 0, sp, sizeof(sp));
    t_emit = (now() - t0) / iters;
    t0 = now();
    for (k = 0; k < iters; k++)
        sink += (unsigned)aiou_tun_split(sp, (size_t)n, out, sizeof(out), slens, NSEG, NULL);
    t_split = (now() - t0) / iters;
    t0 = now();
    for (k = 0; k < iters * NSEG; k++)
        sink += aiou_csum(data + 40 + (k % NSEG) * (40 + MSS), 1500);
    t_csum = (now() - t0) / (iters * NSEG);

    printf("45 x 1380 B TCP/IPv4 (super-packet %ld B), %ld iterations each:\n", n, iters);
    printf("  coalesce plan  %8.2f us/call  (%.0f ns/segment; includes checksum verification)\n", t_plan * 1e6, t_plan * 1e9 / NSEG);
    printf("  coalesce emit  %8.2f us/call  (%.0f ns/segment)\n", t_emit * 1e6, t_emit * 1e9 / NSEG);
    printf("  split          %8.2f us/call  (%.0f ns/segment)\n", t_split * 1e6, t_split * 1e9 / NSEG);
    printf("  checksum 1500 B %7.0f ns\n", t_csum * 1e9);
    return sink == 0xdeadbeef;
}
