/* aiouring native helpers; see helpers.h for the contract. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include "helpers.h"

/* A zero virtio_net_hdr: "no offload" for a packet written to an
 * IFF_VNET_HDR device. */
static const unsigned char zero_vnet_hdr[10];

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
    for (i = 0; i < r->ngroups; i++) {
        if (r->groups[i]) {
            io_uring_unregister_buf_ring(&r->ring, i);
            bufring_free(r->groups[i]);
        }
    }
    io_uring_queue_exit(&r->ring);
    /* Batches still listed here had SQEs the kernel never completed; the
     * ring is gone now, so nothing can write through them any more. */
    for (i = 0; i < r->nbatches; i++)
        free(r->batches[i]);
    free(r->groups);
    free(r->batches);
    free(r->free_slots);
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
        uint32_t *nf;

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
        for (i = r->nbatches; i < n; i++) {
            r->batches[i] = NULL;
            r->free_slots[r->nfree++] = n - 1 - (i - r->nbatches);
        }
        r->nbatches = n;
    }
    *slot = r->free_slots[--r->nfree];
    return 0;
}

int aiou_emit(struct aiou_ring *r, int fd, unsigned kind, unsigned flags,
              const unsigned char *data, const uint32_t *lens, unsigned n,
              const unsigned char *addrs, const uint16_t *addrlens,
              uint32_t *slot)
{
    struct aiou_batch *b;
    size_t off = 0, aoff = 0;
    unsigned i;
    int ret;

    if (!n)
        return 0;
    if (n > AIOU_MAX_BATCH || kind > AIOU_KIND_DATAGRAM)
        return -EINVAL;
    b = calloc(1, sizeof(*b) + (size_t)n * sizeof(struct aiou_out));
    if (!b)
        return -ENOMEM;
    ret = slot_alloc(r, &b->slot);
    if (ret < 0) {
        free(b);
        return ret;
    }
    b->fd = fd;
    b->kind = kind;
    b->flags = flags;
    r->batches[b->slot] = b;
    r->live_batches++;
    for (i = 0; i < n; i++) {
        struct aiou_out *o = &b->out[i];
        int err = 0;
        struct io_uring_sqe *sqe = get_sqe(r, &err);
        uint64_t ud;

        if (!sqe)
            break;
        o->first = i;
        o->count = 1;
        ud = ((uint64_t)AIOU_TAG_BATCH << AIOU_UD_ID_BITS) |
             ((uint64_t)b->slot << 16) | i;
        if (kind == AIOU_KIND_DATAGRAM) {
            o->iov[0].iov_base = (void *)(data + off);
            o->iov[0].iov_len = lens[i];
            o->msg.msg_iov = o->iov;
            o->msg.msg_iovlen = 1;
            if (addrlens[i]) {
                o->msg.msg_name = (void *)(addrs + aoff);
                o->msg.msg_namelen = addrlens[i];
            }
            aoff += addrlens[i];
            io_uring_prep_sendmsg(sqe, fd, &o->msg, 0);
        } else if (flags & AIOU_EMIT_VNET) {
            o->iov[0].iov_base = (void *)zero_vnet_hdr;
            o->iov[0].iov_len = sizeof(zero_vnet_hdr);
            o->iov[1].iov_base = (void *)(data + off);
            o->iov[1].iov_len = lens[i];
            io_uring_prep_writev(sqe, fd, o->iov, 2, (__u64)-1);
        } else {
            io_uring_prep_write(sqe, fd, data + off, lens[i], (__u64)-1);
        }
        sqe->user_data = ud;
        off += lens[i];
        b->refs++;
        b->nout++;
    }
    if (!b->nout) {
        batch_release(r, b);
        return -EBUSY;
    }
    *slot = b->slot;
    return (int)b->nout;
}

int aiou_batch_output(struct aiou_ring *r, uint32_t slot, unsigned index,
                      uint32_t *first, uint32_t *count)
{
    struct aiou_batch *b = slot < r->nbatches ? r->batches[slot] : NULL;

    if (!b || index >= b->nout)
        return -ENOENT;
    *first = b->out[index].first;
    *count = b->out[index].count;
    return 0;
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

/* Copy one datagram of a recvmsg buffer into the arena as address then
 * payload; returns the arena bytes used, 0 if it does not fit, or -errno. */
static long take_datagram(struct aiou_bufring *b, const unsigned char *src, int res,
                          unsigned char *arena, unsigned room, int64_t *lenfield)
{
    struct io_uring_recvmsg_out *o = io_uring_recvmsg_validate((void *)src, res, &b->msg);
    unsigned namelen, plen;

    if (!o)
        return -EINVAL;
    if (o->flags & MSG_TRUNC)
        return -EMSGSIZE;
    namelen = o->namelen < (unsigned)b->msg.msg_namelen ? o->namelen : (unsigned)b->msg.msg_namelen;
    plen = io_uring_recvmsg_payload_length(o, res, &b->msg);
    if (namelen + plen > room)
        return 0;
    memcpy(arena, io_uring_recvmsg_name(o), namelen);
    memcpy(arena + namelen, io_uring_recvmsg_payload(o, &b->msg), plen);
    *lenfield = ((int64_t)namelen << 32) | plen;
    return (long)(namelen + plen);
}

int aiou_reap(struct aiou_ring *r, int64_t *out, unsigned max,
              unsigned char *arena, unsigned arena_size,
              int64_t *pk, unsigned pk_max, unsigned *npk)
{
    struct io_uring *ring = &r->ring;
    unsigned n = 0, p = 0, used = 0, consumed = 0, touched_lo = ~0u, touched_hi = 0, i;
    int defer = (r->setup_flags & IORING_SETUP_DEFER_TASKRUN) != 0;
    int entered = 0, full = 0;

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
            int64_t res = cqe->res, off = -1, len = 0, done = -1;

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

                    if (res > 0 && b->recvmsg) {
                        long got = take_datagram(b, src, cqe->res, arena + used,
                                                 arena_size - used, &len);
                        if (got == 0) {
                            full = 1;
                            break;
                        }
                        if (got < 0) {
                            res = got;  /* truncated or malformed: reported, not delivered */
                        } else {
                            off = used;
                            used += (unsigned)got;
                        }
                    } else if (res > 0) {
                        if (used + (unsigned)res > arena_size) {
                            full = 1;
                            break;
                        }
                        memcpy(arena + used, src, res);
                        off = used;
                        len = res;
                        used += (unsigned)res;
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
            if (off >= 0 && (cqe->flags & IORING_CQE_F_MORE)) {
                pk[3 * p] = (int64_t)ud;
                pk[3 * p + 1] = off;
                pk[3 * p + 2] = len;
                p++;
            } else {
                /* a final CQE carrying a packet: res is its length field */
                out[5 * n] = (int64_t)ud;
                out[5 * n + 1] = off >= 0 ? len : res;
                out[5 * n + 2] = cqe->flags;
                out[5 * n + 3] = off;
                out[5 * n + 4] = p;
                n++;
            }
        next_cqe:
            if (done >= 0) {
                /* After the CQE's own entry: Python drops the batch's
                 * buffers only once it has seen every failure of it. */
                batch_release(r, r->batches[done]);
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
                     unsigned entries, unsigned bufsize, int recvmsg)
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
    if (recvmsg) {
        b->msg.msg_namelen = sizeof(struct sockaddr_storage);
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

int aiou_read_batch(int fd, unsigned char *arena, unsigned arena_size,
                    unsigned bufsize, int64_t *out, unsigned max, int *err)
{
    unsigned n = 0, used = 0;

    *err = 0;
    while (n < max && used + bufsize <= arena_size) {
        ssize_t got = read(fd, arena + used, bufsize);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                *err = -errno;
            break;
        }
        if (got == 0) {
            *err = -ENODATA;
            break;
        }
        out[2 * n] = used;
        out[2 * n + 1] = got;
        used += (unsigned)got;
        n++;
    }
    return (int)n;
}

int aiou_recv_batch(int fd, unsigned char *arena, unsigned arena_size,
                    unsigned bufsize, int64_t *out, unsigned max, int *err)
{
    unsigned n = 0, used = 0;
    const unsigned namemax = sizeof(struct sockaddr_storage);

    *err = 0;
    while (n < max && used + namemax + bufsize <= arena_size) {
        struct sockaddr_storage name;
        struct iovec iov = { arena + used + namemax, bufsize };
        struct msghdr msg;
        ssize_t got;

        memset(&msg, 0, sizeof(msg));
        msg.msg_name = &name;
        msg.msg_namelen = namemax;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        got = recvmsg(fd, &msg, MSG_DONTWAIT);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                *err = -errno;
            break;
        }
        if (msg.msg_flags & MSG_TRUNC) {
            *err = -EMSGSIZE;
            break;
        }
        if (msg.msg_namelen > namemax)
            msg.msg_namelen = namemax;
        /* address right before the payload, as aiou_reap lays them out */
        memmove(arena + used, &name, msg.msg_namelen);
        memmove(arena + used + msg.msg_namelen, arena + used + namemax, (size_t)got);
        out[3 * n] = used;
        out[3 * n + 1] = msg.msg_namelen;
        out[3 * n + 2] = got;
        used += msg.msg_namelen + (unsigned)got;
        n++;
    }
    return (int)n;
}

int aiou_send_batch(int fd, unsigned kind, unsigned flags,
                    const unsigned char *data, const uint32_t *lens, unsigned n,
                    const unsigned char *addrs, const uint16_t *addrlens,
                    int *errs, int *nerr)
{
    unsigned i;
    size_t off = 0, aoff = 0;

    *nerr = 0;
    for (i = 0; i < n; i++) {
        ssize_t put;
        do {
            if (kind == AIOU_KIND_DATAGRAM) {
                struct iovec iov = { (void *)(data + off), lens[i] };
                struct msghdr msg;

                memset(&msg, 0, sizeof(msg));
                msg.msg_iov = &iov;
                msg.msg_iovlen = 1;
                if (addrlens[i]) {
                    msg.msg_name = (void *)(addrs + aoff);
                    msg.msg_namelen = addrlens[i];
                }
                put = sendmsg(fd, &msg, MSG_DONTWAIT);
            } else if (flags & AIOU_EMIT_VNET) {
                struct iovec iov[2] = {
                    { (void *)zero_vnet_hdr, sizeof(zero_vnet_hdr) },
                    { (void *)(data + off), lens[i] },
                };
                put = writev(fd, iov, 2);
            } else {
                put = write(fd, data + off, lens[i]);
            }
        } while (put < 0 && errno == EINTR);
        if (put < 0 && errno == EAGAIN)
            break;
        errs[i] = put < 0 ? -errno : 0;
        if (put < 0)
            (*nerr)++;
        off += lens[i];
        if (kind == AIOU_KIND_DATAGRAM)
            aoff += addrlens[i];
    }
    return (int)i;
}
