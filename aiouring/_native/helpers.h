/* aiouring native helpers: the whole C boundary of the package.
 *
 * One struct (aiou_ring) owns an io_uring, its registered eventfd and its
 * provided-buffer rings.  Python drives it with one call per operation to
 * prepare SQEs and one call per batch to reap CQEs; packet bytes taken from
 * buffer rings are copied out and the buffers recycled inside aiou_reap, so
 * Python never holds a pointer into kernel-shared memory.
 */
#ifndef AIOURING_HELPERS_H
#define AIOURING_HELPERS_H

#include <stdint.h>
#include <sys/uio.h>
#include <sys/socket.h>
#include <liburing.h>

/* Opcodes and flags newer than liburing 2.3's header. */
#define AIOU_OP_READ_MULTISHOT 49
#define AIOU_CQE_F_BUF_MORE (1U << 4)
#define AIOU_ASYNC_CANCEL_USERDATA (1U << 4)

/* user_data layout: low 48 bits are the op id chosen by Python, bits 48..63
 * hold (buffer group id + 1) for ops that select from a buffer ring, so the
 * reaper knows which ring a CQE's buffer id belongs to. */
#define AIOU_UD_ID_BITS 48
#define AIOU_MAX_GROUPS 64

/* Pooled writes: the packet is copied into a slot of a C-owned pool, so no
 * Python object has to outlive the call.  Their user_data carries
 * AIOU_POOL_GROUP in bits 48..63, the writer in bits 16..47 and the slot in
 * bits 0..15.  A successful pooled write's CQE is consumed inside aiou_reap
 * (slot freed, writer's in-flight count decremented) and never reaches
 * Python; a failed one is handed over like any other CQE. */
#define AIOU_POOL_GROUP 0xFFFFu
#define AIOU_MAX_WRITERS 4096
#define AIOU_MAX_SLOTS 65536

struct aiou_pool {
    unsigned char *mem;
    unsigned slot_size;
    unsigned nslots;
    unsigned nfree;
    uint16_t *free;
    int registered;  /* the pool is registered: writes use WRITE_FIXED */
    uint32_t inflight[AIOU_MAX_WRITERS];
};

struct aiou_bufring {
    struct io_uring_buf_ring *br;
    struct msghdr msg;       /* recvmsg groups: the template the kernel lays buffers out by */
    int recvmsg;
    unsigned char *bufs;
    unsigned entries;
    unsigned bufsize;
    unsigned short bgid;
    int pending;             /* buffers recycled but not yet published */
    size_t ring_bytes;
    size_t bufs_bytes;
};

struct aiou_ring {
    struct io_uring ring;
    int eventfd;
    unsigned setup_flags;
    unsigned features;
    unsigned sq_entries;
    unsigned cq_entries;
    unsigned long long submitted;
    unsigned long long reaped;
    unsigned long long pooled_writes;
    unsigned long long overflows;  /* reaps that found IORING_SQ_CQ_OVERFLOW set */
    unsigned pool_free;           /* free write slots, for Python to read */
    struct aiou_pool *pool;
    struct aiou_bufring *groups[AIOU_MAX_GROUPS];
};

int aiou_ring_open(struct aiou_ring **out, unsigned entries,
                   unsigned cq_entries, unsigned flags);
void aiou_ring_close(struct aiou_ring *r);

int aiou_prep_nop(struct aiou_ring *r, uint64_t ud);
int aiou_prep_read(struct aiou_ring *r, int fd, void *buf, unsigned nbytes,
                   int64_t offset, uint64_t ud);
int aiou_prep_write(struct aiou_ring *r, int fd, const void *buf,
                    unsigned nbytes, int64_t offset, uint64_t ud);
int aiou_prep_readv(struct aiou_ring *r, int fd, const struct iovec *iov,
                    unsigned nr, int64_t offset, uint64_t ud);
int aiou_prep_writev(struct aiou_ring *r, int fd, const struct iovec *iov,
                     unsigned nr, int64_t offset, uint64_t ud);
int aiou_prep_cancel(struct aiou_ring *r, uint64_t target, uint64_t ud);
int aiou_prep_cancel_all(struct aiou_ring *r, uint64_t ud);
int aiou_prep_read_multishot(struct aiou_ring *r, int fd, unsigned short bgid,
                             uint64_t ud);

int aiou_submit(struct aiou_ring *r);
int aiou_wait(struct aiou_ring *r, unsigned timeout_ms);
unsigned aiou_sq_flags(struct aiou_ring *r);
int aiou_reap(struct aiou_ring *r, int64_t *out, unsigned max,
              unsigned char *arena, unsigned arena_size,
              int64_t *pk, unsigned pk_max, unsigned *npk);

int aiou_pool_init(struct aiou_ring *r, unsigned nslots, unsigned slot_size,
                   int register_buffers);
int aiou_write_copy(struct aiou_ring *r, int fd, const char *data,
                    unsigned len, unsigned writer);
unsigned aiou_writer_inflight(struct aiou_ring *r, unsigned writer);

int aiou_bufring_add(struct aiou_ring *r, unsigned short bgid,
                     unsigned entries, unsigned bufsize);
int aiou_bufring_remove(struct aiou_ring *r, unsigned short bgid);

/* Datagrams.  A recvmsg group's packets reach Python as one arena record:
 * [name length: 1 byte][source address][payload] (MSG_TRUNC datagrams are
 * reported with res -EMSGSIZE instead).  aiou_sendto_copy is aiou_write_copy
 * for a sendmsg with a destination address (addrlen 0: the connected peer);
 * the slot holds the msghdr, the iovec, the address and the payload. */
int aiou_bufring_recvmsg(struct aiou_ring *r, unsigned short bgid);
int aiou_prep_recvmsg_multishot(struct aiou_ring *r, int fd, unsigned short bgid,
                                uint64_t ud);
int aiou_sendto_copy(struct aiou_ring *r, int fd, const char *data, unsigned len,
                     const char *addr, unsigned addrlen, unsigned writer);

/* Readiness backend: batches of plain syscalls in one call from Python.
 * aiou_read_batch reads packets from a non-blocking fd into `arena` (each at
 * most `bufsize` bytes, back to back) until EAGAIN, `max` packets or a full
 * arena; out[2*i], out[2*i+1] = (offset, length).  Returns the count; a read
 * error other than EAGAIN/EINTR stops the batch and is left in *err as
 * -errno (0 if none).  End of file counts as -ENODATA.
 * aiou_write_batch writes `n` packets laid back to back in `data` (lengths
 * in `lens`), one write() each; errs[i] is 0 or -errno.  It stops at EAGAIN
 * and returns how many packets were handled (written or refused). */
int aiou_read_batch(int fd, unsigned char *arena, unsigned arena_size,
                    unsigned bufsize, int64_t *out, unsigned max, int *err);
int aiou_write_batch(int fd, const char *data, const unsigned *lens,
                     unsigned n, int *errs, int *nerr);

int aiou_probe_opcodes(unsigned char *supported, unsigned max,
                       unsigned *last_op);

#endif
