/* aiouring native helpers; see helpers.h for the contract. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include <netinet/in.h>
#include <netinet/udp.h>

#include "helpers.h"
#include "offload.h"

int aiou_ring_open(struct aiou_ring **out, unsigned entries,
                   unsigned cq_entries, unsigned flags)
{
    struct io_uring_params p;
    struct aiou_ring *r;
    int ret;

    *out = NULL;
    r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->eventfd = -1;
    memset(&p, 0, sizeof(p));
    p.flags = flags;
    if (cq_entries) {
        p.flags |= IORING_SETUP_CQSIZE;
        p.cq_entries = cq_entries;
    }
    ret = io_uring_queue_init_params(entries, &r->ring, &p);
    if (ret < 0) {
        free(r);
        return ret;
    }
    r->setup_flags = p.flags;
    r->features = p.features;
    r->sq_entries = p.sq_entries;
    r->cq_entries = p.cq_entries;
    r->eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->eventfd < 0) {
        ret = -errno;
        goto fail;
    }
    /* The plain variant: the _async one never fires for poll-driven TUN
     * reads, which complete through task work rather than io-wq. */
    ret = io_uring_register_eventfd(&r->ring, r->eventfd);
    if (ret < 0)
        goto fail;
    *out = r;
    return 0;
fail:
    if (r->eventfd >= 0)
        close(r->eventfd);
    io_uring_queue_exit(&r->ring);
    free(r);
    return ret;
}

static void bufring_free(struct aiou_bufring *b)
{
    if (b->br)
        munmap(b->br, b->ring_bytes);
    if (b->bufs)
        munmap(b->bufs, b->bufs_bytes);
    free(b);
}

void aiou_ring_close(struct aiou_ring *r)
{
    unsigned i;

    if (!r)
        return;
    io_uring_unregister_eventfd(&r->ring);
    for (i = 0; i < r->ngroups; i++)
        if (r->groups[i])
            io_uring_unregister_buf_ring(&r->ring, i);
    aiou_ring_forget(r);
}

/* Free this process's copy of a ring inherited across fork() without
 * touching the ring itself, which the parent still uses: no unregistering,
 * no cancels; only the mappings, fds and memory of this process go. */
void aiou_ring_forget(struct aiou_ring *r)
{
    unsigned i;

    if (!r)
        return;
    for (i = 0; i < r->ngroups; i++)
        if (r->groups[i])
            bufring_free(r->groups[i]);
    r->ngroups = 0;
    io_uring_queue_exit(&r->ring);
    /* Batches still listed here had SQEs the kernel never completed; the
     * ring is gone now, so nothing can write through them any more. */
    for (i = 0; i < r->nbatches; i++)
        free(r->batches[i]);
    free(r->groups);
    free(r->batches);
    free(r->free_slots);
    free(r->finished);
    close(r->eventfd);
    free(r);
}

/* An SQE, submitting what is queued first if the SQ is full. */
static struct io_uring_sqe *get_sqe(struct aiou_ring *r, int *err)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    int ret;

    if (sqe)
        return sqe;
    ret = io_uring_submit(&r->ring);
    r->submit_calls++;
    if (ret < 0) {
        *err = ret;
        return NULL;
    }
    r->submitted += ret;
    sqe = io_uring_get_sqe(&r->ring);
    if (!sqe)
        *err = -EBUSY;
    return sqe;
}

#define GET_SQE_OR_RETURN(r, sqe)          \
    int err_ = 0;                          \
    struct io_uring_sqe *sqe = get_sqe((r), &err_); \
    if (!sqe)                              \
        return err_;

int aiou_prep_nop(struct aiou_ring *r, uint64_t ud)
{
    GET_SQE_OR_RETURN(r, sqe);
    io_uring_prep_nop(sqe);
    sqe->user_data = ud;
    return 0;
}

int aiou_prep_read(struct aiou_ring *r, int fd, void *buf, unsigned nbytes,
                   int64_t offset, uint64_t ud)
{
    GET_SQE_OR_RETURN(r, sqe);
    io_uring_prep_read(sqe, fd, buf, nbytes, (__u64)offset);
    sqe->user_data = ud;
    return 0;
}

int aiou_prep_write(struct aiou_ring *r, int fd, const void *buf,
                    unsigned nbytes, int64_t offset, uint64_t ud)
{
    GET_SQE_OR_RETURN(r, sqe);
    io_uring_prep_write(sqe, fd, buf, nbytes, (__u64)offset);
    sqe->user_data = ud;
    return 0;
}

int aiou_prep_readv(struct aiou_ring *r, int fd, const struct iovec *iov,
                    unsigned nr, int64_t offset, uint64_t ud)
{
    GET_SQE_OR_RETURN(r, sqe);
    io_uring_prep_readv(sqe, fd, iov, nr, (__u64)offset);
    sqe->user_data = ud;
    return 0;
}

int aiou_prep_writev(struct aiou_ring *r, int fd, const struct iovec *iov,
                     unsigned nr, int64_t offset, uint64_t ud)
{
    GET_SQE_OR_RETURN(r, sqe);
    io_uring_prep_writev(sqe, fd, iov, nr, (__u64)offset);
    sqe->user_data = ud;
    return 0;
}

int aiou_prep_poll(struct aiou_ring *r, int fd, unsigned events, uint64_t ud)
{
    GET_SQE_OR_RETURN(r, sqe);
    io_uring_prep_poll_add(sqe, fd, events);
    sqe->user_data = ud;
    return 0;
}

int aiou_prep_cancel(struct aiou_ring *r, uint64_t target, uint64_t ud)
{
    GET_SQE_OR_RETURN(r, sqe);
    io_uring_prep_cancel64(sqe, target, 0);
    sqe->user_data = ud;
    return 0;
}

int aiou_prep_cancel_all(struct aiou_ring *r, uint64_t ud)
{
    GET_SQE_OR_RETURN(r, sqe);
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
    sqe->user_data = ud;
    return 0;
}

static struct aiou_bufring *group(struct aiou_ring *r, unsigned bgid)
{
    return bgid < r->ngroups ? r->groups[bgid] : NULL;
}

int aiou_prep_read_multishot(struct aiou_ring *r, int fd, unsigned short bgid,
                             uint64_t ud)
{
    if (!group(r, bgid))
        return -ENOENT;
    {
        /* liburing 2.3 has no io_uring_prep_read_multishot (2.6): fill the
         * SQE the way the newer helper does; nbytes 0 means "the buffer's
         * size". */
        GET_SQE_OR_RETURN(r, sqe);
        io_uring_prep_rw(AIOU_OP_READ_MULTISHOT, sqe, fd, NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = bgid;
        sqe->user_data = ud;
    }
    return 0;
}

int aiou_prep_recvmsg_multishot(struct aiou_ring *r, int fd, unsigned short bgid,
                                uint64_t ud)
{
    struct aiou_bufring *b = group(r, bgid);

    if (!b || !b->recvmsg)
        return -ENOENT;
    {
        GET_SQE_OR_RETURN(r, sqe);
        io_uring_prep_recvmsg_multishot(sqe, fd, &b->msg, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = bgid;
        sqe->user_data = ud;
    }
    return 0;
}

/* Submit with eventfd notifications off: CQEs posted while our own
 * io_uring_enter runs (inline TUN writes, and task work run on the way out
 * of the syscall) would each signal the eventfd and wake the loop's epoll
 * for completions the caller reaps right after this call anyway.  CQEs
 * posted after notifications are back on signal as usual, so nothing is
 * missed as long as the caller reaps after submitting. */
int aiou_submit(struct aiou_ring *r)
{
    int ret;

    if (!io_uring_sq_ready(&r->ring))
        return 0;  /* nothing queued: no system call */
    io_uring_cq_eventfd_toggle(&r->ring, false);
    ret = io_uring_submit(&r->ring);
    r->submit_calls++;
    io_uring_cq_eventfd_toggle(&r->ring, true);
    if (ret > 0)
        r->submitted += ret;
    return ret;
}

/* Submit what is queued and block until a CQE is ready or timeout_ms passes
 * (used only by close, to wait for the CQEs of cancelled ops). */
int aiou_wait(struct aiou_ring *r, unsigned timeout_ms)
{
    struct __kernel_timespec ts;
    struct io_uring_cqe *cqe;
    int ret;

    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
    ret = io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, &ts, NULL);
    if (ret > 0)
        r->submitted += ret;
    return ret == -ETIME ? 0 : ret;
}

static unsigned sq_flags(struct aiou_ring *r)
{
    return IO_URING_READ_ONCE(*r->ring.sq.kflags);
}

static int needs_enter(struct aiou_ring *r)
{
    return (sq_flags(r) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) != 0;
}

/* -- write batches ------------------------------------------------------ */

static void batch_release(struct aiou_ring *r, struct aiou_batch *b)
{
    uint32_t slot = b->slot;

    r->batches[slot] = NULL;
    r->free_slots[r->nfree++] = slot;
    r->live_batches--;
    free(b);
}

static int slot_alloc(struct aiou_ring *r, uint32_t *slot)
{
    if (!r->nfree) {
        unsigned n = r->nbatches ? 2 * r->nbatches : 64, i;
        struct aiou_batch **nb;
        uint32_t *nf, *nd;

        if (n > (1u << 30))
            return -ENOBUFS;
        nb = realloc(r->batches, n * sizeof(*nb));
        if (!nb)
            return -ENOMEM;
        r->batches = nb;
        nf = realloc(r->free_slots, n * sizeof(*nf));
        if (!nf)
            return -ENOMEM;
        r->free_slots = nf;
        nd = realloc(r->finished, n * sizeof(*nd));
        if (!nd)
            return -ENOMEM;
        r->finished = nd;
        for (i = r->nbatches; i < n; i++) {
            r->batches[i] = NULL;
            r->free_slots[r->nfree++] = n - 1 - (i - r->nbatches);
        }
        r->nbatches = n;
    }
    *slot = r->free_slots[--r->nfree];
    return 0;
}

/* -- outputs: what one write carries ----------------------------------- */

/* Room one batch of `n` packets needs: outputs, member indices, iovecs
 * (a coalesced output takes count + 1), rewritten header blocks. */
static size_t batch_bytes(unsigned n, unsigned flags)
{
    size_t hdrs = (flags & (AIOU_EMIT_GRO_TCP | AIOU_EMIT_GRO_UDP)) ? (size_t)n * AIOU_GRO_HDR_MAX : 0;

    return sizeof(struct aiou_batch) + (size_t)n * sizeof(struct aiou_out)
           + (size_t)n * sizeof(uint32_t) + (size_t)2 * n * sizeof(struct iovec) + hdrs;
}

static struct aiou_batch *batch_new(unsigned n, unsigned flags)
{
    struct aiou_batch *b = malloc(batch_bytes(n, flags));
    unsigned char *p;

    if (!b)
        return NULL;
    memset(b, 0, sizeof(*b));
    p = (unsigned char *)&b->out[n];
    b->members = (uint32_t *)p;
    p += (size_t)n * sizeof(uint32_t);
    /* keep the iovecs aligned: sizeof(uint32_t) * n may be odd in 8s */
    p = (unsigned char *)(((uintptr_t)p + 7) & ~(uintptr_t)7);
    b->iovs = (struct iovec *)p;
    p += (size_t)2 * n * sizeof(struct iovec);
    b->hdrs = p;
    return b;
}

static const struct sockaddr *out_addr(const unsigned char *addrs, size_t aoff, unsigned alen)
{
    return alen ? (const struct sockaddr *)(addrs + aoff) : NULL;
}

/* The largest UDP payload one GSO send may carry for this destination. */
static unsigned gso_limit(const unsigned char *addr, unsigned alen)
{
    sa_family_t family = AF_INET;

    if (alen >= sizeof(sa_family_t))
        memcpy(&family, addr, sizeof(family));
    return family == AF_INET6 ? 65535 - 8 : 65535 - 20 - 8;
}

static void out_plain(struct aiou_batch *b, struct aiou_out *o, unsigned kind, unsigned flags,
                      const unsigned char *pkt, uint32_t len, const unsigned char *addr,
                      unsigned alen, unsigned *iov_used)
{
    o->iov = b->iovs + *iov_used;
    if (kind == AIOU_KIND_PACKET && (flags & AIOU_EMIT_VNET)) {
        static const unsigned char zero_hdr[AIOU_VNET_HDR_LEN];
        o->iov[0].iov_base = (void *)zero_hdr;
        o->iov[0].iov_len = sizeof(zero_hdr);
        o->iov[1].iov_base = (void *)pkt;
        o->iov[1].iov_len = len;
        o->niov = 2;
    } else {
        o->iov[0].iov_base = (void *)pkt;
        o->iov[0].iov_len = len;
        o->niov = 1;
    }
    *iov_used += o->niov;
    if (kind == AIOU_KIND_DATAGRAM) {
        memset(&o->msg, 0, sizeof(o->msg));
        o->msg.msg_iov = o->iov;
        o->msg.msg_iovlen = o->niov;
        if (alen) {
            o->msg.msg_name = (void *)addr;
            o->msg.msg_namelen = alen;
        }
    }
}

/* Lay out the outputs of `n` packets in `b` (members, iovecs, headers).
 * Returns the output count or -errno. */
static int build_outputs(struct aiou_batch *b, unsigned kind, unsigned flags, unsigned gso_max,
                         const unsigned char *data, const uint32_t *lens, unsigned n,
                         const unsigned char *addrs, const uint16_t *addrlens)
{
    unsigned iov_used = 0, nout = 0, i = 0;
    size_t off = 0, aoff = 0;
    unsigned gro = flags & (AIOU_EMIT_GRO_TCP | AIOU_EMIT_GRO_UDP);

    if (kind == AIOU_KIND_PACKET && gro && (flags & AIOU_EMIT_VNET)) {
        static __thread struct aiou_gro_plan plan;
        const uint8_t *pkts[AIOU_GRO_MAX_IN];
        unsigned groflags = ((flags & AIOU_EMIT_GRO_TCP) ? AIOU_GRO_TCP : 0) |
                            ((flags & AIOU_EMIT_GRO_UDP) ? AIOU_GRO_UDP : 0);

        while (i < n) {
            unsigned m = n - i < AIOU_GRO_MAX_IN ? n - i : AIOU_GRO_MAX_IN, k;
            size_t chunk = 0;
            int nplan, ret;

            for (k = 0; k < m; k++)
                chunk += lens[i + k];
            ret = aiou_offload_index(data + off, chunk, (const unsigned *)(lens + i), m, pkts);
            if (ret < 0)
                return ret;
            nplan = aiou_tun_coalesce_plan(pkts, (const unsigned *)(lens + i), m, groflags, &plan);
            if (nplan < 0)
                return nplan;
            for (k = 0; k < (unsigned)nplan; k++) {
                struct aiou_out *o = &b->out[nout];
                const struct aiou_gro_out *po = &plan.out[k];
                unsigned c;
                int niov = aiou_tun_coalesce_iov(pkts, (const unsigned *)(lens + i), &plan, k,
                                                 b->hdrs + (size_t)nout * AIOU_GRO_HDR_MAX,
                                                 b->iovs + iov_used, 2 * n - iov_used);
                if (niov < 0)
                    return niov;
                o->iov = b->iovs + iov_used;
                o->niov = (unsigned)niov;
                iov_used += (unsigned)niov;
                o->first = i + po->first;  /* index into members, rebased below */
                o->count = po->count;
                o->coalesced = po->count > 1;
                o->seg = po->gso_size;
                for (c = 0; c < po->count; c++)
                    b->members[i + po->first + c] = i + plan.members[po->first + c];
                nout++;
            }
            i += m;
            off += chunk;
        }
        return (int)nout;
    }
    while (i < n) {
        struct aiou_out *o = &b->out[nout];
        unsigned alen = kind == AIOU_KIND_DATAGRAM ? addrlens[i] : 0;
        unsigned j = i + 1, total = lens[i];

        if (kind == AIOU_KIND_DATAGRAM && (flags & AIOU_EMIT_GSO) && lens[i] && lens[i] <= gso_max) {
            unsigned limit = gso_limit(addrs + aoff, alen);
            size_t aj = aoff + alen;
            /* a run: the same destination, the same size, the last one may be shorter */
            while (j < n && j - i < AIOU_GRO_MAX_SEGS && addrlens[j] == alen &&
                   !memcmp(addrs + aj, addrs + aoff, alen) && lens[j] && lens[j] <= lens[i] &&
                   total + lens[j] <= limit && lens[j - 1] == lens[i]) {
                total += lens[j];
                aj += alen;
                j++;
            }
        }
        if (j - i > 1) {
            struct cmsghdr *cm;
            uint16_t seg = (uint16_t)lens[i];

            o->iov = b->iovs + iov_used++;
            o->iov[0].iov_base = (void *)(data + off);
            o->iov[0].iov_len = total;
            o->niov = 1;
            memset(&o->msg, 0, sizeof(o->msg));
            o->msg.msg_iov = o->iov;
            o->msg.msg_iovlen = 1;
            if (alen) {
                o->msg.msg_name = (void *)(addrs + aoff);
                o->msg.msg_namelen = alen;
            }
            o->msg.msg_control = o->cmsg.buf;
            o->msg.msg_controllen = sizeof(o->cmsg.buf);
            cm = CMSG_FIRSTHDR(&o->msg);
            cm->cmsg_level = SOL_UDP;
            cm->cmsg_type = UDP_SEGMENT;
            cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));  /* exactly a u16, or EINVAL */
            memcpy(CMSG_DATA(cm), &seg, sizeof(seg));
            o->coalesced = 1;
            o->seg = seg;
        } else {
            out_plain(b, o, kind, flags, data + off, lens[i], addrs ? addrs + aoff : NULL, alen, &iov_used);
            o->coalesced = 0;
        }
        o->first = i;
        o->count = j - i;
        for (; i < j; i++) {
            b->members[i] = i;
            off += lens[i];
            if (kind == AIOU_KIND_DATAGRAM)
                aoff += addrlens[i];
        }
        nout++;
    }
    return (int)nout;
}

/* Check a batch's arguments and lay out its outputs (merged where the
 * offloads allow): the number of outputs, with *bp the new batch, or -errno. */
static int plan_batch(struct aiou_batch **bp, unsigned kind, unsigned flags, unsigned gso_max,
                      const unsigned char *data, const uint32_t *lens, unsigned n,
                      const unsigned char *addrs, const uint16_t *addrlens)
{
    struct aiou_batch *b;
    int nout;

    if (n > AIOU_MAX_BATCH || kind > AIOU_KIND_DATAGRAM || (kind == AIOU_KIND_DATAGRAM && !addrlens))
        return -EINVAL;
    b = batch_new(n, flags);
    if (!b)
        return -ENOMEM;
    nout = build_outputs(b, kind, flags, gso_max, data, lens, n, addrs, addrlens);
    if (nout < 0) {
        free(b);
        return nout;
    }
    *bp = b;
    return nout;
}

static void prep_output(struct io_uring_sqe *sqe, int fd, unsigned kind, struct aiou_out *o)
{
    if (kind == AIOU_KIND_DATAGRAM)
        /* MSG_DONTWAIT: a full socket completes with -EAGAIN (the sink waits
         * for POLLOUT and sends again, in order) instead of being parked in
         * io_uring's internal poll, which retries parked sends last first */
        io_uring_prep_sendmsg(sqe, fd, &o->msg, MSG_DONTWAIT);
    else if (o->niov == 1)
        io_uring_prep_write(sqe, fd, o->iov[0].iov_base, (unsigned)o->iov[0].iov_len, (__u64)-1);
    else
        io_uring_prep_writev(sqe, fd, o->iov, o->niov, (__u64)-1);
}

int aiou_emit(struct aiou_ring *r, int fd, unsigned kind, unsigned flags,
              unsigned gso_max, const unsigned char *data, const uint32_t *lens,
              unsigned n, const unsigned char *addrs, const uint16_t *addrlens,
              uint32_t *slot, unsigned *planned)
{
    struct aiou_batch *b;
    struct io_uring_sqe *prev = NULL;
    unsigned i;
    int nout, ret;

    *planned = 0;
    if (!n)
        return 0;
    nout = plan_batch(&b, kind, flags, gso_max, data, lens, n, addrs, addrlens);
    if (nout < 0)
        return nout;
    ret = slot_alloc(r, &b->slot);
    if (ret < 0) {
        free(b);
        return ret;
    }
    b->fd = fd;
    b->kind = kind;
    b->flags = flags;
    b->planned = (unsigned)nout;
    r->batches[b->slot] = b;
    r->live_batches++;
    for (i = 0; i < (unsigned)nout; i++) {
        int err = 0;
        unsigned long long submits = r->submit_calls;
        struct io_uring_sqe *sqe = get_sqe(r, &err);

        if (!sqe)
            break;  /* the SQ could not be drained: the caller takes the rest back */
        /* Datagrams of one batch are linked, each starting once the one
         * before completed: after a failure (a full socket, a refused GSO
         * send) the rest complete -ECANCELED and are sent again, in order.
         * A link is set on the previous SQE only while it is still ours
         * (get_sqe may have submitted it to make room). */
        if (kind == AIOU_KIND_DATAGRAM && prev && r->submit_calls == submits)
            prev->flags |= IOSQE_IO_LINK;
        prev = sqe;
        prep_output(sqe, fd, kind, &b->out[i]);
        sqe->user_data = ((uint64_t)AIOU_TAG_BATCH << AIOU_UD_ID_BITS) | ((uint64_t)b->slot << 16) | i;
        b->refs++;
        b->nout++;
    }
    if (!b->nout) {
        batch_release(r, b);
        return -EBUSY;
    }
    *slot = b->slot;
    *planned = (unsigned)nout;
    return (int)b->nout;
}

int aiou_batch_members(struct aiou_ring *r, uint32_t slot, unsigned index,
                       uint32_t *members, unsigned max, int *coalesced,
                       uint32_t *seg)
{
    struct aiou_batch *b = slot < r->nbatches ? r->batches[slot] : NULL;
    struct aiou_out *o;
    unsigned c;

    if (!b || index >= b->planned)
        return -ENOENT;
    o = &b->out[index];
    for (c = 0; c < o->count && c < max; c++)
        members[c] = b->members[o->first + c];
    *coalesced = o->coalesced;
    *seg = o->seg;
    return (int)c;
}

unsigned aiou_live_batches(struct aiou_ring *r)
{
    return r->live_batches;
}

/* One CQE of a batch: *done is set to the batch's slot if it was the last.
 * Returns 1 when Python must hear of it (a failure). */
static int batch_cqe(struct aiou_ring *r, uint64_t ud, int res, int64_t *done)
{
    uint32_t slot = (uint32_t)((ud >> 16) & 0xFFFFFFFFu);
    struct aiou_batch *b = slot < r->nbatches ? r->batches[slot] : NULL;

    if (!b)
        return 0;
    if (--b->refs == 0)
        *done = slot;
    return res < 0;
}

/* -- reaping ------------------------------------------------------------ */

/* The UDP_GRO segment size a received super-datagram carries, or 0. */
static unsigned gro_segment(struct io_uring_recvmsg_out *o, struct msghdr *msg)
{
    struct cmsghdr *cm;

    for (cm = io_uring_recvmsg_cmsg_firsthdr(o, msg); cm; cm = io_uring_recvmsg_cmsg_nexthdr(o, msg, cm)) {
        if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO && cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int seg;
            memcpy(&seg, CMSG_DATA(cm), sizeof(seg));
            return seg > 0 ? (unsigned)seg : 0;
        }
    }
    return 0;
}

/* Lay out `plen` payload bytes received from `name` as records (address,
 * then payload) in the arena, one per GRO segment (`seg`, or one record for
 * the whole payload when 0): their offsets and length fields go to pk.
 * Returns the number of records, 0 if they do not fit (arena or pk). */
static unsigned datagram_records(const void *name, unsigned namelen, const unsigned char *payload,
                                 unsigned plen, unsigned seg, unsigned char *arena, unsigned room,
                                 int64_t *pk, unsigned pk_room, uint64_t ud, unsigned *used_out)
{
    unsigned nrec = seg && plen > seg ? (plen + seg - 1) / seg : 1, k, used = 0;

    if (nrec > pk_room || (size_t)nrec * namelen + plen > room)
        return 0;
    for (k = 0; k < nrec; k++) {
        unsigned take = seg && plen > seg ? (k + 1 < nrec ? seg : plen - k * seg) : plen;
        memcpy(arena + used, name, namelen);
        memcpy(arena + used + namelen, payload + (size_t)(seg ? k * seg : 0), take);
        pk[3 * k] = (int64_t)ud;
        pk[3 * k + 1] = used;       /* relative: the caller adds its base */
        pk[3 * k + 2] = ((int64_t)namelen << 32) | take;
        used += namelen + take;
    }
    *used_out = used;
    return nrec;
}

/* Copy what a provided buffer holds into the arena as packet records (one,
 * or one per segment of a TUN super-packet or a GRO'd datagram), their
 * (ud, offset, length field) triples into pk.  Returns the record count, 0
 * when they do not fit (and `first`: nothing else was taken this call, so
 * they never will: then -EBADMSG), -EMSGSIZE for a truncated datagram,
 * -EBADMSG for a read that makes no sense (dropped). */
static int take_buffer(struct aiou_bufring *b, const unsigned char *src, int res, uint64_t ud,
                       unsigned char *arena, unsigned arena_size, unsigned *used,
                       int64_t *pk, unsigned pk_room, int first)
{
    unsigned room = arena_size - *used, k;

    if (b->recvmsg) {
        struct io_uring_recvmsg_out *o = io_uring_recvmsg_validate((void *)src, res, &b->msg);
        unsigned namelen, plen, seg, nrec, got;

        if (!o)
            return -EBADMSG;
        if (o->flags & MSG_TRUNC)
            return -EMSGSIZE;
        namelen = o->namelen < (unsigned)b->msg.msg_namelen ? o->namelen : (unsigned)b->msg.msg_namelen;
        plen = io_uring_recvmsg_payload_length(o, res, &b->msg);
        seg = (b->kind & AIOU_BR_GRO) ? gro_segment(o, &b->msg) : 0;
        nrec = datagram_records(io_uring_recvmsg_name(o), namelen, io_uring_recvmsg_payload(o, &b->msg),
                                plen, seg, arena + *used, room, pk, pk_room, ud, &got);
        if (!nrec)
            return first ? -EBADMSG : 0;
        for (k = 0; k < nrec; k++)
            pk[3 * k + 1] += *used;
        *used += got;
        return (int)nrec;
    }
    if (b->kind & AIOU_BR_VNET) {
        unsigned lens[256];
        unsigned max = pk_room < 256 ? pk_room : 256;
        size_t off = *used;
        int np = aiou_tun_split(src, (size_t)res, arena + *used, room, lens, max, NULL);

        if (np == -ENOSPC)
            return first ? -EBADMSG : 0;
        if (np < 0)
            return -EBADMSG;
        for (k = 0; k < (unsigned)np; k++) {
            pk[3 * k] = (int64_t)ud;
            pk[3 * k + 1] = (int64_t)off;
            pk[3 * k + 2] = lens[k];
            off += lens[k];
        }
        *used = (unsigned)off;
        return np;
    }
    if ((unsigned)res > room)
        return first ? -EBADMSG : 0;
    memcpy(arena + *used, src, (size_t)res);
    pk[0] = (int64_t)ud;
    pk[1] = *used;
    pk[2] = res;
    *used += (unsigned)res;
    return 1;
}

int aiou_reap(struct aiou_ring *r, int64_t *out, unsigned max,
              unsigned char *arena, unsigned arena_size,
              int64_t *pk, unsigned pk_max, unsigned *npk)
{
    struct io_uring *ring = &r->ring;
    unsigned n = 0, p = 0, used = 0, consumed = 0, touched_lo = ~0u, touched_hi = 0, i;
    int defer = (r->setup_flags & IORING_SETUP_DEFER_TASKRUN) != 0;
    int entered = 0, full = 0;

    while (r->nfinished)
        batch_release(r, r->batches[r->finished[--r->nfinished]]);

    while (!full) {
        unsigned head, tail, mask, count = 0;

        if ((defer && !entered) || needs_enter(r)) {
            int ret;
            if (sq_flags(r) & IORING_SQ_CQ_OVERFLOW)
                r->overflows++;
            ret = io_uring_get_events(ring);
            entered = 1;
            if (ret < 0 && ret != -EAGAIN && ret != -EBUSY && ret != -EINTR)
                return ret;
        }
        head = *ring->cq.khead;
        tail = io_uring_smp_load_acquire(ring->cq.ktail);
        mask = ring->cq.ring_mask;
        while (head != tail) {
            struct io_uring_cqe *cqe = &ring->cq.cqes[head & mask];
            uint64_t ud = cqe->user_data;
            unsigned g = (unsigned)(ud >> AIOU_UD_ID_BITS);
            int64_t res = cqe->res, off = -1, done = -1;

            /* Room for this CQE's entry and the done event it may cause. */
            if (n + 2 > max || p >= pk_max) {
                full = 1;
                break;
            }
            if (g == AIOU_TAG_BATCH) {
                if (!batch_cqe(r, ud, cqe->res, &done))
                    goto next_cqe;  /* a successful write: nobody to tell */
            } else if (cqe->flags & IORING_CQE_F_BUFFER) {
                struct aiou_bufring *b = g ? group(r, g - 1) : NULL;
                unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

                if (b && bid < b->entries) {
                    unsigned char *src = b->bufs + (size_t)bid * b->bufsize;

                    if (res > 0) {
                        int got = take_buffer(b, src, cqe->res, ud, arena, arena_size, &used,
                                              pk + 3 * p, pk_max - p, used == 0 && p == 0);
                        if (got == 0) {
                            full = 1;  /* does not fit this call: the CQE waits for the next */
                            break;
                        }
                        if (got > 0) {
                            p += (unsigned)got;
                            b->reads++;
                            b->records += (unsigned)got;
                            off = -2;  /* its packets are in pk */
                        } else if (got == -EBADMSG) {
                            r->split_errors++;  /* nothing to deliver; a final CQE re-arms */
                            res = -EAGAIN;
                        } else {
                            res = got;  /* truncated: reported, not delivered */
                        }
                    }
                    io_uring_buf_ring_add(b->br, src, b->bufsize, bid,
                                          io_uring_buf_ring_mask(b->entries),
                                          b->pending++);
                    if (g - 1 < touched_lo)
                        touched_lo = g - 1;
                    if (g - 1 >= touched_hi)
                        touched_hi = g;
                }
            }
            if ((cqe->flags & IORING_CQE_F_MORE) && (off == -2 || res == -EAGAIN)) {
                /* packets of an armed multishot op (already in pk), or one
                 * dropped: nothing for the op's handler */
            } else {
                out[5 * n] = (int64_t)ud;
                out[5 * n + 1] = res;
                out[5 * n + 2] = cqe->flags;
                out[5 * n + 3] = off;
                out[5 * n + 4] = p;
                n++;
            }
        next_cqe:
            if (done >= 0) {
                /* After the CQE's own entry: Python drops the batch's
                 * buffers only once it has seen every failure of it, and
                 * may still ask about its outputs until the next reap. */
                r->finished[r->nfinished++] = (uint32_t)done;
                out[5 * n] = (int64_t)(((uint64_t)AIOU_TAG_EVENT << AIOU_UD_ID_BITS) | (uint64_t)done);
                out[5 * n + 1] = 0;
                out[5 * n + 2] = 0;
                out[5 * n + 3] = -1;
                out[5 * n + 4] = p;
                n++;
            }
            head++;
            count++;
        }
        if (count)
            io_uring_cq_advance(ring, count);
        consumed += count;
        if (!count && !needs_enter(r))
            break;
    }
    /* Publish recycled buffers before Python sees the CQEs, so a re-arm
     * after -ENOBUFS finds buffers (re-arming first storms -ENOBUFS). */
    for (i = touched_lo; i < touched_hi; i++) {
        struct aiou_bufring *b = r->groups[i];
        if (b && b->pending) {
            io_uring_buf_ring_advance(b->br, b->pending);
            b->pending = 0;
        }
    }
    r->reaped += consumed;
    *npk = p;
    return (int)n;
}

/* -- buffer rings ------------------------------------------------------- */

int aiou_bufring_add(struct aiou_ring *r, unsigned short bgid,
                     unsigned entries, unsigned bufsize, unsigned kind)
{
    struct io_uring_buf_reg reg;
    struct aiou_bufring *b;
    unsigned i;
    int ret;

    if (bgid >= AIOU_MAX_GROUPS)
        return -EINVAL;
    if (bgid >= r->ngroups) {
        unsigned n = r->ngroups ? r->ngroups : 64;
        struct aiou_bufring **ng;

        while (n <= bgid)
            n *= 2;
        ng = realloc(r->groups, n * sizeof(*ng));
        if (!ng)
            return -ENOMEM;
        memset(ng + r->ngroups, 0, (n - r->ngroups) * sizeof(*ng));
        r->groups = ng;
        r->ngroups = n;
    }
    if (r->groups[bgid])
        return -EEXIST;
    if (!entries || (entries & (entries - 1)) || entries > 32768 || !bufsize)
        return -EINVAL;
    b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->entries = entries;
    b->bufsize = bufsize;
    b->bgid = bgid;
    b->ring_bytes = (size_t)entries * sizeof(struct io_uring_buf);
    b->bufs_bytes = (size_t)entries * bufsize;
    /* liburing 2.3 has no io_uring_setup_buf_ring (2.4): map page-aligned
     * memory ourselves and register it.  The buffers are sized for the
     * largest packet but mapped lazily: only the pages packets touch become
     * resident. */
    b->br = mmap(NULL, b->ring_bytes, PROT_READ | PROT_WRITE,
                 MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (b->br == MAP_FAILED) {
        b->br = NULL;
        bufring_free(b);
        return -ENOMEM;
    }
    b->bufs = mmap(NULL, b->bufs_bytes, PROT_READ | PROT_WRITE,
                   MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    if (b->bufs == MAP_FAILED) {
        b->bufs = NULL;
        bufring_free(b);
        return -ENOMEM;
    }
    io_uring_buf_ring_init(b->br);
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)b->br;
    reg.ring_entries = entries;
    reg.bgid = bgid;
    ret = io_uring_register_buf_ring(&r->ring, &reg, 0);
    if (ret < 0) {
        bufring_free(b);
        return ret;
    }
    for (i = 0; i < entries; i++)
        io_uring_buf_ring_add(b->br, b->bufs + (size_t)i * bufsize, bufsize, i,
                              io_uring_buf_ring_mask(entries), i);
    io_uring_buf_ring_advance(b->br, entries);
    b->kind = kind;
    if (kind & AIOU_BR_RECVMSG) {
        b->msg.msg_namelen = sizeof(struct sockaddr_storage);
        if (kind & AIOU_BR_GRO)
            b->msg.msg_controllen = CMSG_SPACE(sizeof(int)) * 2;  /* UDP_GRO, and room for one more */
        b->recvmsg = 1;
    }
    r->groups[bgid] = b;
    return 0;
}

int aiou_bufring_remove(struct aiou_ring *r, unsigned short bgid)
{
    int ret;

    if (!group(r, bgid))
        return -ENOENT;
    ret = io_uring_unregister_buf_ring(&r->ring, bgid);
    bufring_free(r->groups[bgid]);
    r->groups[bgid] = NULL;
    return ret;
}

int aiou_bufring_counts(struct aiou_ring *r, unsigned short bgid,
                        unsigned long long *reads, unsigned long long *records)
{
    struct aiou_bufring *b = group(r, bgid);

    if (!b)
        return -ENOENT;
    *reads = b->reads;
    *records = b->records;
    return 0;
}

int aiou_probe_opcodes(unsigned char *supported, unsigned max,
                       unsigned *last_op)
{
    struct io_uring_probe *probe = io_uring_get_probe();
    unsigned i;

    if (!probe)
        return -ENOSYS;
    *last_op = probe->last_op;
    memset(supported, 0, max);
    for (i = 0; i < probe->ops_len && i < max; i++) {
        unsigned op = probe->ops[i].op;
        if (op < max && (probe->ops[i].flags & IO_URING_OP_SUPPORTED))
            supported[op] = 1;
    }
    io_uring_free_probe(probe);
    return 0;
}

/* -- readiness backend -------------------------------------------------- */

/* What one read may produce at most, in records and in arena bytes beyond
 * the read itself: a TUN super-packet's segments each repeat the headers
 * (at most 120 bytes), a GRO'd datagram's each repeat the address. */
#define AIOU_SPLIT_MAX 256
#define AIOU_GRO_RECV_MAX 128  /* UDP_MAX_SEGMENTS on 6.18: a GSO send that stays in the host */

int aiou_read_batch(int fd, unsigned char *arena, unsigned arena_size,
                    unsigned bufsize, unsigned kind, int64_t *out, unsigned cap,
                    unsigned max_reads, int *err, unsigned *dropped, unsigned *nreads)
{
    unsigned n = 0, used = 0, reads = 0;
    unsigned char *scratch = NULL;
    unsigned per_read = 1, extra = 0;

    *err = 0;
    *dropped = 0;
    if (kind & AIOU_BR_VNET) {
        /* a super-packet is read whole into scratch, then split into the arena */
        scratch = malloc(bufsize);
        if (!scratch) {
            *err = -ENOMEM;
            return 0;
        }
        per_read = AIOU_SPLIT_MAX;
        extra = AIOU_SPLIT_MAX * 120;
    }
    while (reads < max_reads && n + per_read <= cap && (size_t)used + bufsize + extra <= arena_size) {
        ssize_t got = read(fd, scratch ? scratch : arena + used, bufsize);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                *err = -errno;
            break;
        }
        reads++;
        if (got == 0) {
            *err = -ENODATA;
            break;
        }
        if (scratch) {
            unsigned lens[AIOU_SPLIT_MAX], k;
            int np = aiou_tun_split(scratch, (size_t)got, arena + used, arena_size - used, lens, AIOU_SPLIT_MAX, NULL);

            if (np < 0) {
                (*dropped)++;  /* malformed, or a pathological segment count */
                continue;
            }
            for (k = 0; k < (unsigned)np; k++) {
                out[2 * n] = used;
                out[2 * n + 1] = lens[k];
                used += lens[k];
                n++;
            }
            continue;
        }
        out[2 * n] = used;
        out[2 * n + 1] = got;
        used += (unsigned)got;
        n++;
    }
    free(scratch);
    *nreads = reads;
    return (int)n;
}

int aiou_recv_batch(int fd, unsigned char *arena, unsigned arena_size,
                    unsigned bufsize, unsigned kind, int64_t *out, unsigned cap,
                    unsigned max_reads, int *err, unsigned *dropped, unsigned *nreads)
{
    unsigned n = 0, used = 0, reads = 0;
    const unsigned namemax = sizeof(struct sockaddr_storage);
    unsigned per_read = (kind & AIOU_BR_GRO) ? AIOU_GRO_RECV_MAX : 1;
    union {
        char buf[CMSG_SPACE(sizeof(int)) * 2];
        struct cmsghdr align;
    } control;

    *err = 0;
    *dropped = 0;
    while (reads < max_reads && n + per_read <= cap &&
           (size_t)used + (size_t)namemax * (per_read + 1) + bufsize <= arena_size) {
        struct sockaddr_storage name;
        /* the payload lands past room for every segment's copy of the address */
        unsigned char *payload = arena + used + (size_t)namemax * per_read;
        struct iovec iov = { payload, bufsize };
        struct msghdr msg;
        unsigned seg = 0, nrec, k, plen, alen;
        struct cmsghdr *cm;
        ssize_t got;

        memset(&msg, 0, sizeof(msg));
        msg.msg_name = &name;
        msg.msg_namelen = namemax;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        if (kind & AIOU_BR_GRO) {
            msg.msg_control = control.buf;
            msg.msg_controllen = sizeof(control.buf);
        }
        got = recvmsg(fd, &msg, MSG_DONTWAIT);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                *err = -errno;
            break;
        }
        reads++;
        if (msg.msg_flags & MSG_TRUNC) {
            *err = -EMSGSIZE;
            break;
        }
        alen = msg.msg_namelen < namemax ? msg.msg_namelen : namemax;
        for (cm = (kind & AIOU_BR_GRO) ? CMSG_FIRSTHDR(&msg) : NULL; cm; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO && cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
                int v;
                memcpy(&v, CMSG_DATA(cm), sizeof(v));
                seg = v > 0 ? (unsigned)v : 0;
            }
        }
        plen = (unsigned)got;
        nrec = seg && plen > seg ? (plen + seg - 1) / seg : 1;
        if (nrec > per_read) {
            (*dropped)++;  /* more segments than any sender makes: not ours to split */
            continue;
        }
        /* records (address, then payload segment) laid out forwards: each
         * lands at or before its payload, so a forward memmove is safe */
        for (k = 0; k < nrec; k++) {
            unsigned take = nrec == 1 ? plen : (k + 1 < nrec ? seg : plen - k * seg);
            memcpy(arena + used, &name, alen);
            memmove(arena + used + alen, payload + (size_t)k * seg, take);
            out[3 * n] = used;
            out[3 * n + 1] = alen;
            out[3 * n + 2] = take;
            used += alen + take;
            n++;
        }
    }
    *nreads = reads;
    return (int)n;
}

/* One output by syscall: its bytes count, or -errno. */
static ssize_t send_output(int fd, unsigned kind, struct aiou_out *o)
{
    ssize_t put;

    do {
        if (kind == AIOU_KIND_DATAGRAM)
            put = sendmsg(fd, &o->msg, MSG_DONTWAIT);
        else
            put = writev(fd, o->iov, (int)o->niov);
    } while (put < 0 && errno == EINTR);
    return put < 0 ? -errno : put;
}

int aiou_send_batch(int fd, unsigned kind, unsigned flags, unsigned gso_max,
                    const unsigned char *data, const uint32_t *lens, unsigned n,
                    const unsigned char *addrs, const uint16_t *addrlens,
                    int *errs, int *nerr, unsigned *events, uint32_t *seg,
                    unsigned *writes)
{
    struct aiou_batch *b;
    unsigned i, c, handled = 0;
    int nout;

    *nerr = 0;
    *events = 0;
    *seg = 0;
    *writes = 0;
    if (!n)
        return 0;
    nout = plan_batch(&b, kind, flags, gso_max, data, lens, n, addrs, addrlens);
    if (nout < 0)
        return nout;
    for (i = 0; i < n; i++)
        errs[i] = 0;
    for (i = 0; i < (unsigned)nout; i++) {
        struct aiou_out *o = &b->out[i];
        ssize_t put = send_output(fd, kind, o);

        if (put == -EAGAIN && kind == AIOU_KIND_DATAGRAM)
            break;  /* runs are consecutive: what is handled is a prefix */
        (*writes)++;
        if (put < 0 && o->coalesced &&
            ((kind == AIOU_KIND_PACKET && put == -EINVAL) ||
             (kind == AIOU_KIND_DATAGRAM && (put == -EIO || put == -EINVAL || put == -EMSGSIZE)))) {
            /* the kernel refused the offload: every packet again, plainly */
            struct aiou_batch *one = batch_new(1, 0);
            if (!one) {
                free(b);
                return -ENOMEM;
            }
            if (kind == AIOU_KIND_PACKET)
                *events |= AIOU_EV_GRO_REFUSED;
            else if (put == -EMSGSIZE) {
                *events |= AIOU_EV_GSO_TOO_BIG;
                *seg = o->seg;
            } else
                *events |= AIOU_EV_GSO_REFUSED;
            for (c = 0; c < o->count; c++) {
                unsigned m = b->members[o->first + c];
                size_t off = 0, aoff = 0;
                unsigned k, iov_used = 0;
                ssize_t again;

                for (k = 0; k < m; k++) {
                    off += lens[k];
                    if (kind == AIOU_KIND_DATAGRAM)
                        aoff += addrlens[k];
                }
                out_plain(one, &one->out[0], kind, flags & AIOU_EMIT_VNET, data + off, lens[m],
                          addrs ? addrs + aoff : NULL, kind == AIOU_KIND_DATAGRAM ? addrlens[m] : 0, &iov_used);
                again = send_output(fd, kind, &one->out[0]);
                if (again == -EAGAIN && kind == AIOU_KIND_DATAGRAM) {
                    /* the socket filled up while resending: this datagram
                     * and the rest wait for it, as after a plain EAGAIN */
                    free(one);
                    free(b);
                    return (int)m;
                }
                (*writes)++;
                if (again < 0) {
                    errs[m] = (int)again;
                    (*nerr)++;
                }
            }
            free(one);
        } else if (put < 0) {
            for (c = 0; c < o->count; c++) {
                errs[b->members[o->first + c]] = (int)put;
                (*nerr)++;
            }
        }
        if (kind == AIOU_KIND_DATAGRAM)
            handled = o->first + o->count;
    }
    if (kind == AIOU_KIND_PACKET)
        handled = n;  /* a TUN write never waits: every packet was written or refused */
    free(b);
    return (int)handled;
}
