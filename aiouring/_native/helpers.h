/* aiouring native helpers: the whole C boundary of the package.
 *
 * One struct (aiou_ring) owns an io_uring, its registered eventfd, its
 * provided-buffer rings and the write batches in flight.  Python drives it
 * with one call per operation to prepare SQEs, one call per flush per sink to
 * hand over a whole batch of packets, and one call per batch to reap CQEs;
 * packet bytes taken from buffer rings are copied out and the buffers recycled
 * inside aiou_reap, so Python never holds a pointer into kernel-shared memory.
 */
#ifndef AIOURING_HELPERS_H
#define AIOURING_HELPERS_H

#include <stdint.h>
#include <sys/uio.h>
#include <sys/socket.h>
#include <liburing.h>

/* Opcodes and flags newer than liburing 2.3's header. */
#define AIOU_OP_READ_MULTISHOT 49

/* user_data layout: the low 48 bits are the op id chosen by Python; bits
 * 48..63 hold a tag:
 *   1..AIOU_MAX_GROUPS      (buffer group id + 1): an op selecting from that
 *                           buffer ring, so the reaper knows whose buffer a
 *                           CQE carries;
 *   AIOU_TAG_BATCH          one packet (or one coalesced super-packet) of a
 *                           write batch: bits 16..47 the batch slot, bits
 *                           0..15 the output's index in the batch;
 *   AIOU_TAG_EVENT          never a kernel CQE: records aiou_reap adds for
 *                           Python (a batch finished; see aiou_reap). */
#define AIOU_UD_ID_BITS 48
#define AIOU_TAG_BATCH 0xFFFFu
#define AIOU_TAG_EVENT 0xFFFEu
#define AIOU_MAX_GROUPS 0xFFF0u
#define AIOU_MAX_BATCH 4096       /* packets per aiou_emit call */

/* Write batch kinds and flags. */
#define AIOU_KIND_PACKET 0        /* write() one packet per SQE (TUN/TAP) */
#define AIOU_KIND_DATAGRAM 1      /* sendmsg() one datagram per SQE, with its address */
#define AIOU_EMIT_VNET 1          /* a virtio_net_hdr before each packet (IFF_VNET_HDR devices) */
#define AIOU_EMIT_GRO_TCP 2       /* ... and TCP segments of a flow coalesced into one write */
#define AIOU_EMIT_GRO_UDP 4       /* ... and UDP datagrams of a flow too (the TUN took USO) */
#define AIOU_EMIT_GSO 8           /* datagrams: equal-sized runs to one address as one UDP_SEGMENT send */

/* Buffer ring kinds. */
#define AIOU_BR_RECVMSG 1         /* laid out for multishot recvmsg */
#define AIOU_BR_VNET 2            /* TUN reads with a virtio header: split super-packets */
#define AIOU_BR_GRO 4             /* recvmsg with UDP_GRO: split by the segment size */

/* What aiou_send_batch / a batch reports beyond per-packet errors. */
#define AIOU_EV_GRO_REFUSED 1     /* a coalesced TUN write was refused: resent one by one */
#define AIOU_EV_GSO_REFUSED 2     /* a UDP_SEGMENT send was refused (EIO/EINVAL): resent one by one */
#define AIOU_EV_GSO_TOO_BIG 4     /* a UDP_SEGMENT send was too big for the route (EMSGSIZE): resent */

struct aiou_bufring {
    struct io_uring_buf_ring *br;
    struct msghdr msg;       /* recvmsg groups: the template the kernel lays buffers out by */
    int recvmsg;
    unsigned kind;           /* AIOU_BR_* */
    unsigned char *bufs;
    unsigned entries;
    unsigned bufsize;
    unsigned short bgid;
    int pending;             /* buffers recycled but not yet published */
    unsigned long long reads;    /* CQEs that carried data */
    unsigned long long records;  /* packets or datagrams they made (more with split super-packets) */
    size_t ring_bytes;
    size_t bufs_bytes;
};

/* One write (one SQE or syscall): a packet, a coalesced TUN super-packet or
 * a UDP_SEGMENT send. */
struct aiou_out {
    struct msghdr msg;       /* datagrams */
    struct iovec *iov;
    unsigned niov;
    uint32_t first;          /* its packets' input indices: members[first .. first+count) */
    uint32_t count;
    uint32_t seg;            /* GSO: the segment size */
    int coalesced;
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } cmsg;
};

/* One aiou_emit call's worth of writes, alive until its last CQE.  The
 * packets themselves stay in the caller's buffer (`data`, `addrs`), which the
 * caller keeps alive until aiou_reap reports the batch done. */
struct aiou_batch {
    int fd;
    unsigned kind;
    unsigned flags;
    unsigned refs;           /* SQEs whose CQE is still to come */
    unsigned nout;           /* outputs queued */
    unsigned planned;        /* outputs built (more than queued if the SQ could not be drained) */
    uint32_t slot;
    uint32_t *members;       /* input packet indices, in output order */
    struct iovec *iovs;
    unsigned char *hdrs;     /* coalesced outputs' rewritten headers */
    struct aiou_out out[];
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
    unsigned long long submit_calls; /* io_uring_enter calls made to submit */
    unsigned long long overflows;  /* reaps that found IORING_SQ_CQ_OVERFLOW set */
    unsigned long long split_errors; /* reads with a virtio header or GRO cmsg that made no sense: dropped */
    struct aiou_bufring **groups;  /* by buffer group id, grown on demand */
    unsigned ngroups;
    struct aiou_batch **batches;   /* by slot, grown on demand */
    unsigned nbatches;
    uint32_t *free_slots;
    unsigned nfree;
    uint32_t *finished;            /* batches reported done, freed at the next reap (Python may still ask about them) */
    unsigned nfinished;
    unsigned live_batches;
};

int aiou_ring_open(struct aiou_ring **out, unsigned entries,
                   unsigned cq_entries, unsigned flags);
void aiou_ring_close(struct aiou_ring *r);
void aiou_ring_forget(struct aiou_ring *r);

int aiou_prep_nop(struct aiou_ring *r, uint64_t ud);
int aiou_prep_read(struct aiou_ring *r, int fd, void *buf, unsigned nbytes,
                   int64_t offset, uint64_t ud);
int aiou_prep_write(struct aiou_ring *r, int fd, const void *buf,
                    unsigned nbytes, int64_t offset, uint64_t ud);
int aiou_prep_readv(struct aiou_ring *r, int fd, const struct iovec *iov,
                    unsigned nr, int64_t offset, uint64_t ud);
int aiou_prep_writev(struct aiou_ring *r, int fd, const struct iovec *iov,
                     unsigned nr, int64_t offset, uint64_t ud);
int aiou_prep_poll(struct aiou_ring *r, int fd, unsigned events, uint64_t ud);
int aiou_prep_cancel(struct aiou_ring *r, uint64_t target, uint64_t ud);
int aiou_prep_cancel_all(struct aiou_ring *r, uint64_t ud);
int aiou_prep_read_multishot(struct aiou_ring *r, int fd, unsigned short bgid,
                             uint64_t ud);
int aiou_prep_recvmsg_multishot(struct aiou_ring *r, int fd, unsigned short bgid,
                                uint64_t ud);

int aiou_submit(struct aiou_ring *r);
int aiou_wait(struct aiou_ring *r, unsigned timeout_ms);

/* Reap ready CQEs in one pass, advancing the CQ once.
 *
 * Packets (CQEs of a multishot read or recvmsg with IORING_CQE_F_MORE and
 * data) go to pk[3*j .. 3*j+2] = (user_data, arena offset, length): their
 * bytes are copied into `arena` and the buffer recycled at once.  For a
 * recvmsg group the arena holds the source address followed by the payload,
 * and the length field is (address length << 32) | payload length.  Every
 * other CQE goes to out[5*i .. 5*i+4] = (user_data, res, flags, arena offset
 * or -1, number of packets before it), so Python can replay both lists in CQ
 * order.  Successful writes of a batch are consumed here; a failed one is an
 * `out` entry with its batch user_data; when a batch's last CQE has been
 * reaped, an `out` entry with user_data (AIOU_TAG_EVENT << 48) | slot tells
 * Python the batch is done and its buffers may go.  Stops before out, pk or
 * the arena would overflow; the rest stays queued for the next call. */
int aiou_reap(struct aiou_ring *r, int64_t *out, unsigned max,
              unsigned char *arena, unsigned arena_size,
              int64_t *pk, unsigned pk_max, unsigned *npk);

/* Buffer rings for multishot reads.  bufsize is the largest packet a
 * buffer can take (a longer one is truncated by the kernel, so size it for
 * the largest packet the device can produce: the memory is mapped lazily and
 * only the pages packets touch become resident). */
int aiou_bufring_add(struct aiou_ring *r, unsigned short bgid,
                     unsigned entries, unsigned bufsize, unsigned kind);
int aiou_bufring_remove(struct aiou_ring *r, unsigned short bgid);
/* (reads, records) a buffer group has taken so far. */
int aiou_bufring_counts(struct aiou_ring *r, unsigned short bgid,
                        unsigned long long *reads, unsigned long long *records);

/* Hand `n` packets to the kernel in one call: packet i is data[off_i ..
 * off_i + lens[i]) with the packets back to back in `data`; for datagrams its
 * destination is addrs[aoff_i .. aoff_i + addrlens[i]) (length 0: the
 * connected peer).  `flags` (AIOU_EMIT_*) may turn runs of packets into one
 * write: TCP/UDP segments of a flow into a TUN super-packet (GRO), equal-sized
 * datagrams to one address into a UDP_SEGMENT send of segments of at most
 * `gso_max` bytes (GSO).  One SQE per output, user_data (AIOU_TAG_BATCH <<
 * 48) | (slot << 16) | output index.  `data` and `addrs` must stay valid
 * until aiou_reap reports the batch done.  Returns the number of outputs
 * queued, with the batch's slot in *slot and the number built in *planned
 * (more than queued only if the submission queue could not be drained: the
 * packets of outputs queued .. planned-1, see aiou_batch_members, are the
 * caller's to retry), -EBUSY if none could be queued, or -errno. */
int aiou_emit(struct aiou_ring *r, int fd, unsigned kind, unsigned flags,
              unsigned gso_max, const unsigned char *data, const uint32_t *lens,
              unsigned n, const unsigned char *addrs, const uint16_t *addrlens,
              uint32_t *slot, unsigned *planned);
/* The input packets output `index` of batch `slot` carries, into
 * members[0 .. return value), and whether it was coalesced (*coalesced) and
 * its segment size (*seg, GSO).  -ENOENT for an unknown output. */
int aiou_batch_members(struct aiou_ring *r, uint32_t slot, unsigned index,
                       uint32_t *members, unsigned max, int *coalesced,
                       uint32_t *seg);
unsigned aiou_live_batches(struct aiou_ring *r);

/* Readiness backend: batches of plain syscalls in one call from Python.
 * aiou_read_batch reads packets from a non-blocking fd into `arena` (each at
 * most `bufsize` bytes, back to back) until EAGAIN, `max_reads` reads, or too
 * little room left (`cap` records, or arena) for what one more read may
 * give; out[2*i], out[2*i+1] = (offset, length).
 * With kind AIOU_BR_VNET each read is split into its packets (a read that
 * cannot be is dropped and counted in *dropped); with AIOU_BR_GRO each
 * datagram of aiou_recv_batch is split by its UDP_GRO segment size.
 * Returns the count; a read error other than EAGAIN/EINTR stops the batch
 * and is left in *err as -errno (0 if none).  End of file counts as -ENODATA.
 * aiou_recv_batch is the same for a datagram socket (recvmsg): each record
 * is the source address then the payload, out[3*i .. 3*i+2] = (offset,
 * address length, payload length).  A datagram longer than `bufsize` is
 * consumed and stops the batch with *err = -EMSGSIZE; any other error stops
 * it too (an ICMP error queued on the socket is one: the caller reports it
 * and goes on).
 * aiou_send_batch writes `n` packets laid out as for aiou_emit, one
 * write()/sendmsg() each; errs[i] is 0 or -errno.  It stops at EAGAIN and
 * returns how many packets were handled (written or refused). */
int aiou_read_batch(int fd, unsigned char *arena, unsigned arena_size,
                    unsigned bufsize, unsigned kind, int64_t *out, unsigned cap,
                    unsigned max_reads, int *err, unsigned *dropped, unsigned *reads);
int aiou_recv_batch(int fd, unsigned char *arena, unsigned arena_size,
                    unsigned bufsize, unsigned kind, int64_t *out, unsigned cap,
                    unsigned max_reads, int *err, unsigned *dropped, unsigned *reads);
/* The readiness path's aiou_emit: the same outputs, written with one
 * writev()/sendmsg() each.  A coalesced output the kernel refuses is written
 * again packet by packet at once, and *events says so (AIOU_EV_*; for
 * EV_GSO_TOO_BIG, *seg is the refused segment size). */
int aiou_send_batch(int fd, unsigned kind, unsigned flags, unsigned gso_max,
                    const unsigned char *data, const uint32_t *lens, unsigned n,
                    const unsigned char *addrs, const uint16_t *addrlens,
                    int *errs, int *nerr, unsigned *events, uint32_t *seg,
                    unsigned *writes);

int aiou_probe_opcodes(unsigned char *supported, unsigned max,
                       unsigned *last_op);

#endif
