/* aiouring native helpers; see helpers.h for the contract. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include "helpers.h"

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

static void pool_free_all(struct aiou_pool *pl);

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
    for (i = 0; i < AIOU_MAX_GROUPS; i++) {
        if (r->groups[i]) {
            io_uring_unregister_buf_ring(&r->ring, i);
            bufring_free(r->groups[i]);
            r->groups[i] = NULL;
        }
    }
    io_uring_queue_exit(&r->ring);
    if (r->pool)
        pool_free_all(r->pool);
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

int aiou_prep_read_multishot(struct aiou_ring *r, int fd, unsigned short bgid,
                             uint64_t ud)
{
    /* liburing 2.3 has no io_uring_prep_read_multishot (2.6): fill the SQE
     * the way the newer helper does; nbytes 0 means "the buffer's size". */
    GET_SQE_OR_RETURN(r, sqe);
    io_uring_prep_rw(AIOU_OP_READ_MULTISHOT, sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = bgid;
    sqe->user_data = ud;
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

    io_uring_cq_eventfd_toggle(&r->ring, false);
    ret = io_uring_submit(&r->ring);
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

unsigned aiou_sq_flags(struct aiou_ring *r)
{
    return IO_URING_READ_ONCE(*r->ring.sq.kflags);
}

static int needs_enter(struct aiou_ring *r)
{
    unsigned f = IO_URING_READ_ONCE(*r->ring.sq.kflags);
    return (f & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) != 0;
}

static void pool_release(struct aiou_ring *r, uint64_t ud)
{
    struct aiou_pool *pl = r->pool;
    unsigned slot = (unsigned)(ud & 0xFFFF);
    unsigned writer = (unsigned)((ud >> 16) & 0xFFFFFFFFu);

    if (!pl || slot >= pl->nslots)
        return;
    pl->free[pl->nfree++] = (uint16_t)slot;
    if (writer < AIOU_MAX_WRITERS && pl->inflight[writer])
        pl->inflight[writer]--;
    r->pool_free = pl->nfree;
}

/* Reap ready CQEs in one pass, advancing the CQ once.
 *
 * Packets (CQEs of a multishot read with IORING_CQE_F_MORE and data) go to
 * pk[3*j .. 3*j+2] = (user_data, arena offset, length): their bytes are
 * copied into `arena` and the buffer recycled at once.  Every other CQE goes
 * to out[5*i .. 5*i+4] = (user_data, res, flags, arena offset or -1, number
 * of packets before it), so Python can replay both lists in CQ order.
 * Successful pooled writes are consumed here and reported nowhere.
 * Stops before out, pk or the arena would overflow; the rest stays queued.
 *
 * With DEFER_TASKRUN nothing is posted until the submitter enters the
 * kernel, and since 6.13 one entry runs at most 20 task-work items, so the
 * loop enters again while the kernel says work is pending (IORING_SQ_TASKRUN
 * needs IORING_SETUP_TASKRUN_FLAG) and there is room for more. */
int aiou_reap(struct aiou_ring *r, int64_t *out, unsigned max,
              unsigned char *arena, unsigned arena_size,
              int64_t *pk, unsigned pk_max, unsigned *npk)
{
    struct io_uring *ring = &r->ring;
    unsigned n = 0, p = 0, used = 0, consumed = 0, i;
    int defer = (r->setup_flags & IORING_SETUP_DEFER_TASKRUN) != 0;
    int entered = 0, full = 0;
    unsigned char touched[AIOU_MAX_GROUPS];

    memset(touched, 0, sizeof(touched));
    while (!full) {
        unsigned head, tail, mask, count = 0;

        if ((defer && !entered) || needs_enter(r)) {
            int ret;
            if (aiou_sq_flags(r) & IORING_SQ_CQ_OVERFLOW)
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
            int64_t res = cqe->res, off = -1;

            if (n >= max || p >= pk_max) {
                full = 1;
                break;
            }
            if (g == AIOU_POOL_GROUP) {
                pool_release(r, ud);
                if (res >= 0)
                    goto next_cqe;  /* a successful pooled write: nobody to tell */
            } else if (cqe->flags & IORING_CQE_F_BUFFER) {
                struct aiou_bufring *b =
                    (g && g <= AIOU_MAX_GROUPS) ? r->groups[g - 1] : NULL;
                unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

                if (b && bid < b->entries) {
                    unsigned char *src = b->bufs + (size_t)bid * b->bufsize;

                    if (res > 0 && b->recvmsg) {
                        /* record: [name length][source address][payload] */
                        struct io_uring_recvmsg_out *o =
                            io_uring_recvmsg_validate(src, cqe->res, &b->msg);
                        if (o && !(o->flags & MSG_TRUNC)) {
                            unsigned namelen = o->namelen < (unsigned)b->msg.msg_namelen
                                                   ? o->namelen : (unsigned)b->msg.msg_namelen;
                            unsigned plen = io_uring_recvmsg_payload_length(o, cqe->res, &b->msg);
                            if (used + 1 + namelen + plen > arena_size) {
                                full = 1;
                                break;
                            }
                            arena[used] = (unsigned char)namelen;
                            memcpy(arena + used + 1, io_uring_recvmsg_name(o), namelen);
                            memcpy(arena + used + 1 + namelen,
                                   io_uring_recvmsg_payload(o, &b->msg), plen);
                            res = 1 + namelen + plen;
                            off = used;
                            used += (unsigned)res;
                        } else {
                            res = -EMSGSIZE;  /* truncated or malformed */
                        }
                    } else if (res > 0) {
                        if (used + (unsigned)res > arena_size) {
                            full = 1;
                            break;
                        }
                        memcpy(arena + used, src, res);
                        off = used;
                        used += (unsigned)res;
                    }
                    io_uring_buf_ring_add(b->br, src, b->bufsize, bid,
                                          io_uring_buf_ring_mask(b->entries),
                                          b->pending++);
                    touched[g - 1] = 1;
                }
            }
            if (off >= 0 && (cqe->flags & IORING_CQE_F_MORE)) {
                pk[3 * p] = (int64_t)ud;
                pk[3 * p + 1] = off;
                pk[3 * p + 2] = res;
                p++;
            } else {
                out[5 * n] = (int64_t)ud;
                out[5 * n + 1] = res;
                out[5 * n + 2] = cqe->flags;
                out[5 * n + 3] = off;
                out[5 * n + 4] = p;
                n++;
            }
        next_cqe:
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
    for (i = 0; i < AIOU_MAX_GROUPS; i++) {
        if (touched[i] && r->groups[i]->pending) {
            io_uring_buf_ring_advance(r->groups[i]->br, r->groups[i]->pending);
            r->groups[i]->pending = 0;
        }
    }
    r->reaped += consumed;
    *npk = p;
    return (int)n;
}

int aiou_pool_init(struct aiou_ring *r, unsigned nslots, unsigned slot_size,
                   int register_buffers)
{
    struct aiou_pool *pl;
    unsigned i;

    if (r->pool)
        return -EEXIST;
    if (!nslots || nslots > AIOU_MAX_SLOTS || !slot_size)
        return -EINVAL;
    pl = calloc(1, sizeof(*pl));
    if (!pl)
        return -ENOMEM;
    pl->free = calloc(nslots, sizeof(uint16_t));
    pl->mem = mmap(NULL, (size_t)nslots * slot_size, PROT_READ | PROT_WRITE,
                   MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (!pl->free || pl->mem == MAP_FAILED) {
        if (pl->mem != MAP_FAILED)
            munmap(pl->mem, (size_t)nslots * slot_size);
        free(pl->free);
        free(pl);
        return -ENOMEM;
    }
    pl->slot_size = slot_size;
    pl->nslots = nslots;
    for (i = 0; i < nslots; i++)
        pl->free[i] = (uint16_t)(nslots - 1 - i);
    pl->nfree = nslots;
    if (register_buffers) {
        struct iovec iov = { pl->mem, (size_t)nslots * slot_size };
        int ret = io_uring_register_buffers(&r->ring, &iov, 1);
        if (ret < 0) {
            pool_free_all(pl);
            return ret;
        }
        pl->registered = 1;
    }
    r->pool = pl;
    r->pool_free = nslots;
    return 0;
}

static void pool_free_all(struct aiou_pool *pl)
{
    munmap(pl->mem, (size_t)pl->nslots * pl->slot_size);
    free(pl->free);
    free(pl);
}

/* Checks shared by the pooled writes; 0 when a slot of `need` bytes is free. */
static int pool_check(struct aiou_ring *r, size_t need, unsigned writer)
{
    struct aiou_pool *pl = r->pool;

    if (!pl)
        return -ENXIO;
    if (need > pl->slot_size)
        return -EMSGSIZE;
    if (writer >= AIOU_MAX_WRITERS)
        return -EINVAL;
    if (!pl->nfree)
        return -ENOBUFS;
    return 0;
}

/* Take a free slot for `writer` and return its memory; `*ud` is the
 * user_data its SQE must carry.  Call only after pool_check and once the SQE
 * is in hand, so a failure leaves the pool untouched. */
static unsigned char *pool_claim(struct aiou_ring *r, unsigned writer, uint64_t *ud)
{
    struct aiou_pool *pl = r->pool;
    unsigned slot = pl->free[--pl->nfree];

    pl->inflight[writer]++;
    r->pool_free = pl->nfree;
    r->pooled_writes++;
    *ud = ((uint64_t)AIOU_POOL_GROUP << AIOU_UD_ID_BITS) | ((uint64_t)writer << 16) | slot;
    return pl->mem + (size_t)slot * pl->slot_size;
}

int aiou_write_copy(struct aiou_ring *r, int fd, const char *data,
                    unsigned len, unsigned writer)
{
    unsigned char *slot_mem;
    uint64_t ud;
    int ret = pool_check(r, len, writer);

    if (ret)
        return ret;
    {
        GET_SQE_OR_RETURN(r, sqe);
        slot_mem = pool_claim(r, writer, &ud);
        memcpy(slot_mem, data, len);
        if (r->pool->registered)
            io_uring_prep_write_fixed(sqe, fd, slot_mem, len, (__u64)-1, 0);
        else
            io_uring_prep_write(sqe, fd, slot_mem, len, (__u64)-1);
        sqe->user_data = ud;
    }
    return 0;
}

unsigned aiou_writer_inflight(struct aiou_ring *r, unsigned writer)
{
    if (!r->pool || writer >= AIOU_MAX_WRITERS)
        return 0;
    return r->pool->inflight[writer];
}

int aiou_bufring_add(struct aiou_ring *r, unsigned short bgid,
                     unsigned entries, unsigned bufsize)
{
    struct io_uring_buf_reg reg;
    struct aiou_bufring *b;
    unsigned i;
    int ret;

    if (bgid >= AIOU_MAX_GROUPS || r->groups[bgid])
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
     * memory ourselves and register it. */
    b->br = mmap(NULL, b->ring_bytes, PROT_READ | PROT_WRITE,
                 MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (b->br == MAP_FAILED) {
        b->br = NULL;
        bufring_free(b);
        return -ENOMEM;
    }
    b->bufs = mmap(NULL, b->bufs_bytes, PROT_READ | PROT_WRITE,
                   MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
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
    r->groups[bgid] = b;
    return 0;
}

int aiou_bufring_remove(struct aiou_ring *r, unsigned short bgid)
{
    int ret;

    if (bgid >= AIOU_MAX_GROUPS || !r->groups[bgid])
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

int aiou_write_batch(int fd, const char *data, const unsigned *lens,
                     unsigned n, int *errs, int *nerr)
{
    unsigned i;
    size_t off = 0;

    *nerr = 0;
    for (i = 0; i < n; i++) {
        ssize_t put;
        do {
            put = write(fd, data + off, lens[i]);
        } while (put < 0 && errno == EINTR);
        if (put < 0 && errno == EAGAIN)
            break;
        errs[i] = put < 0 ? -errno : 0;
        if (put < 0)
            (*nerr)++;
        off += lens[i];
    }
    return (int)i;
}

int aiou_bufring_recvmsg(struct aiou_ring *r, unsigned short bgid)
{
    struct aiou_bufring *b;

    if (bgid >= AIOU_MAX_GROUPS || !(b = r->groups[bgid]))
        return -ENOENT;
    memset(&b->msg, 0, sizeof(b->msg));
    b->msg.msg_namelen = sizeof(struct sockaddr_storage);
    b->recvmsg = 1;
    return 0;
}

int aiou_prep_recvmsg_multishot(struct aiou_ring *r, int fd, unsigned short bgid,
                                uint64_t ud)
{
    struct aiou_bufring *b;

    if (bgid >= AIOU_MAX_GROUPS || !(b = r->groups[bgid]) || !b->recvmsg)
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

struct aiou_send_slot {
    struct msghdr msg;
    struct iovec iov;
    struct sockaddr_storage addr;
};

int aiou_sendto_copy(struct aiou_ring *r, int fd, const char *data, unsigned len,
                     const char *addr, unsigned addrlen, unsigned writer)
{
    struct aiou_send_slot *hdr;
    unsigned char *slot_mem;
    uint64_t ud;
    int ret = pool_check(r, (size_t)len + sizeof(*hdr), writer);

    if (ret)
        return ret;
    if (addrlen > sizeof(hdr->addr))
        return -EINVAL;
    {
        GET_SQE_OR_RETURN(r, sqe);
        slot_mem = pool_claim(r, writer, &ud);
        hdr = (struct aiou_send_slot *)slot_mem;
        memset(&hdr->msg, 0, sizeof(hdr->msg));
        memcpy(slot_mem + sizeof(*hdr), data, len);
        hdr->iov.iov_base = slot_mem + sizeof(*hdr);
        hdr->iov.iov_len = len;
        hdr->msg.msg_iov = &hdr->iov;
        hdr->msg.msg_iovlen = 1;
        if (addrlen) {
            memcpy(&hdr->addr, addr, addrlen);
            hdr->msg.msg_name = &hdr->addr;
            hdr->msg.msg_namelen = addrlen;
        }
        io_uring_prep_sendmsg(sqe, fd, &hdr->msg, 0);
        sqe->user_data = ud;
    }
    return 0;
}
