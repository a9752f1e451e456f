/* Mutation fuzzer for offload.c, meant to run under -fsanitize=address,undefined
 * (scripts/offload_fuzz.sh builds and runs it).
 *
 * Every input and every output buffer gets its own malloc of exactly the size
 * the contract allows, so a read or write one byte out of bounds is reported.
 * The corpus (written by tests/native/offload_corpus.py) holds valid TUN reads
 * and valid batches of outgoing packets; each iteration mutates one and checks
 * the contract's invariants:
 *   split: size query and split agree; one byte less room gives -ENOSPC;
 *   coalesce: every input lands in exactly one output, in order per output;
 *   emit writes exactly the planned size, refuses a smaller buffer, agrees
 *   with the iovec form; a merged output splits back into its member count.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "offload.h"

struct entry {
    int kind;             /* 0: one TUN read, 1: a batch of packets */
    unsigned n;
    unsigned *lens;
    uint8_t **data;
};

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static unsigned below(unsigned n)
{
    return n ? (unsigned)(next() % n) : 0;
}

static void die(const char *what, unsigned long iter)
{
    fprintf(stderr, "offload_fuzz: %s (iteration %lu)\n", what, iter);
    abort();
}

static uint8_t *mutate(const uint8_t *src, unsigned len, unsigned *out_len)
{
    unsigned cap = len + 80, n = len, k, rounds = 1 + below(5);
    uint8_t *b = malloc(cap ? cap : 1);

    memcpy(b, src, len);
    for (k = 0; k < rounds; k++) {
        switch (below(6)) {
        case 0:
            if (n)
                b[below(n)] ^= (uint8_t)(1u << below(8));
            break;
        case 1:
            if (n)
                b[below(n)] = (uint8_t)next();
            break;
        case 2:
            n = below(n + 1);
            break;
        case 3: {
            unsigned add = below(cap - n + 1);
            for (unsigned i = 0; i < add; i++)
                b[n + i] = (uint8_t)next();
            n += add;
            break;
        }
        case 4:
            if (n >= 10) {
                static const uint16_t vals[] = {0, 1, 6, 8, 16, 19, 20, 39, 40, 41, 60, 1000, 65535};
                uint16_t v = vals[below(sizeof(vals) / sizeof(vals[0]))];
                memcpy(b + 2 + 2 * below(4), &v, 2);
            }
            break;
        default:
            break;  /* sometimes unchanged: the valid path runs too */
        }
    }
    /* an exactly sized copy: ASan sees the first byte past the end */
    uint8_t *exact = malloc(n ? n : 1);
    memcpy(exact, b, n);
    free(b);
    *out_len = n;
    return exact;
}

static void fuzz_split(const uint8_t *in, unsigned len, unsigned long iter)
{
    unsigned npkts = 0, i;
    size_t nbytes = 0, sum = 0;
    const char *why = NULL;
    int r = aiou_tun_split_size(in, len, &npkts, &nbytes, &why);

    if (r < 0) {
        if (r != -EINVAL || !why)
            die("split_size refused without -EINVAL and a reason", iter);
        if (aiou_tun_split(in, len, NULL, 0, NULL, 0, NULL) != -EINVAL)
            die("split accepted what split_size refused", iter);
        return;
    }
    if (npkts == 0 || npkts > 65535 + 64)
        die("split_size gave an absurd count", iter);
    if (nbytes > 1u << 24)
        return;  /* a legal but huge explosion (gso_size 1): skip the copy */
    uint8_t *out = malloc(nbytes ? nbytes : 1);
    unsigned *lens = malloc(sizeof(unsigned) * npkts);
    r = aiou_tun_split(in, len, out, nbytes, lens, npkts, &why);
    if (r != (int)npkts)
        die("split disagreed with split_size", iter);
    for (i = 0; i < npkts; i++)
        sum += lens[i];
    if (sum != nbytes)
        die("split lengths do not add up", iter);
    if (nbytes && aiou_tun_split(in, len, out, nbytes - 1, lens, npkts, NULL) != -ENOSPC)
        die("split did not refuse a buffer one byte short", iter);
    if (npkts > 1 && aiou_tun_split(in, len, out, nbytes, lens, npkts - 1, NULL) != -ENOSPC)
        die("split did not refuse a length array one short", iter);
    free(out);
    free(lens);
}

static struct aiou_gro_plan plan;

static void fuzz_coalesce(const struct entry *e, unsigned long iter)
{
    unsigned n = e->n, i, j, flags = 1 + below(3);
    const uint8_t *pkts[AIOU_GRO_MAX_IN];
    uint8_t *own[AIOU_GRO_MAX_IN];
    unsigned lens[AIOU_GRO_MAX_IN], seen[AIOU_GRO_MAX_IN];
    int r;

    for (i = 0; i < n; i++) {
        if (below(3) == 0) {
            own[i] = mutate(e->data[i], e->lens[i], &lens[i]);
        } else {
            own[i] = malloc(e->lens[i]);
            memcpy(own[i], e->data[i], e->lens[i]);
            lens[i] = e->lens[i];
        }
        pkts[i] = own[i];
        seen[i] = 0;
    }
    r = aiou_tun_coalesce_plan(pkts, lens, n, flags, &plan);
    if (r < 0 || (unsigned)r != plan.n_out || (n && r == 0) || (unsigned)r > n)
        die("plan returned a bad count", iter);
    for (i = 0; i < plan.n_out; i++) {
        const struct aiou_gro_out *o = &plan.out[i];
        uint8_t hdr[AIOU_GRO_HDR_MAX];
        struct iovec iov[AIOU_GRO_MAX_SEGS + 1];
        size_t iov_total = 0;
        int niov;

        for (j = 0; j < o->count; j++) {
            unsigned m = plan.members[o->first + j];
            if (m >= n || seen[m]++)
                die("an input is missing from the plan or in it twice", iter);
            if (j && m <= plan.members[o->first + j - 1])
                die("an output's members are out of input order", iter);
        }
        uint8_t *dst = malloc(o->size);
        if (aiou_tun_coalesce_emit(pkts, lens, &plan, i, dst, o->size) != (long)o->size)
            die("emit did not write the planned size", iter);
        if (aiou_tun_coalesce_emit(pkts, lens, &plan, i, dst, o->size - 1) != -EINVAL)
            die("emit did not refuse a buffer one byte short", iter);
        niov = aiou_tun_coalesce_iov(pkts, lens, &plan, i, hdr, iov, o->count + 1);
        if (niov != (int)o->count + 1)
            die("iov gave the wrong count", iter);
        for (j = 0; j < (unsigned)niov; j++) {
            if (memcmp((uint8_t *)dst + iov_total, iov[j].iov_base, iov[j].iov_len) != 0)
                die("iov and emit disagree", iter);
            iov_total += iov[j].iov_len;
        }
        if (iov_total != o->size)
            die("iov and emit sizes disagree", iter);
        if (o->count > 1) {
            unsigned np = 0;
            size_t nb = 0;
            if (aiou_tun_split_size(dst, o->size, &np, &nb, NULL) < 0 || np != o->count)
                die("a merged output does not split back into its members", iter);
            fuzz_split(dst, o->size, iter);
        }
        free(dst);
    }
    for (i = 0; i < n; i++) {
        if (seen[i] != 1)
            die("an input is missing from the plan", iter);
        free(own[i]);
    }
    uint8_t one[1];
    if (aiou_tun_coalesce_emit(pkts, lens, &plan, plan.n_out, one, sizeof(one)) != -EINVAL)
        die("emit accepted an output index out of range", iter);
}

static struct entry *load(const char *path, unsigned *count)
{
    FILE *f = fopen(path, "rb");
    struct entry *es = NULL;
    unsigned n = 0, kind, cnt, len, i;

    if (!f) {
        perror(path);
        exit(2);
    }
    while (fread(&kind, 4, 1, f) == 1 && fread(&cnt, 4, 1, f) == 1) {
        es = realloc(es, sizeof(*es) * (n + 1));
        es[n].kind = (int)kind;
        es[n].n = cnt;
        es[n].lens = malloc(sizeof(unsigned) * (cnt ? cnt : 1));
        es[n].data = malloc(sizeof(uint8_t *) * (cnt ? cnt : 1));
        for (i = 0; i < cnt; i++) {
            if (fread(&len, 4, 1, f) != 1)
                exit(3);
            es[n].lens[i] = len;
            es[n].data[i] = malloc(len ? len : 1);
            if (len && fread(es[n].data[i], 1, len, f) != len)
                exit(3);
        }
        n++;
    }
    fclose(f);
    *count = n;
    return es;
}

int main(int argc, char **argv)
{
    unsigned long iters, it;
    unsigned n;
    struct entry *es;

    if (argc < 3) {
        fprintf(stderr, "usage: %s CORPUS ITERATIONS [SEED]\n", argv[0]);
        return 2;
    }
    es = load(argv[1], &n);
    iters = strtoul(argv[2], NULL, 10);
    if (argc > 3)
        rng ^= strtoull(argv[3], NULL, 10) * 0x2545f4914f6cdd1dull;
    if (!n)
        return 2;
    for (it = 0; it < iters; it++) {
        struct entry *e = &es[below(n)];
        if (e->kind == 0) {
            unsigned len;
            uint8_t *in = mutate(e->data[0], e->lens[0], &len);
            fuzz_split(in, len, it);
            free(in);
        } else {
            fuzz_coalesce(e, it);
        }
    }
    printf("offload_fuzz: %lu iterations over %u corpus entries, no failure\n", iters, n);
    for (it = 0; it < n; it++) {
        for (unsigned i = 0; i < es[it].n; i++)
            free(es[it].data[i]);
        free(es[it].data);
        free(es[it].lens);
    }
    free(es);
    return 0;
}
