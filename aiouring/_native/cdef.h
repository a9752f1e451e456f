/* What Python sees of the native module: exactly what aiouring uses. */
#define IORING_SETUP_COOP_TASKRUN ...
#define IORING_SETUP_TASKRUN_FLAG ...
#define IORING_SETUP_SINGLE_ISSUER ...
#define IORING_SETUP_DEFER_TASKRUN ...
#define IORING_SETUP_SQPOLL ...
#define IORING_CQE_F_BUFFER ...
#define IORING_CQE_F_MORE ...
#define AIOU_OP_READ_MULTISHOT ...
#define AIOU_UD_ID_BITS ...
#define AIOU_TAG_BATCH ...
#define AIOU_TAG_EVENT ...
#define AIOU_MAX_GROUPS ...
#define AIOU_MAX_BATCH ...
#define AIOU_KIND_PACKET ...
#define AIOU_KIND_DATAGRAM ...
#define AIOU_EMIT_VNET ...
#define AIOU_EMIT_GRO_TCP ...
#define AIOU_EMIT_GRO_UDP ...
#define AIOU_EMIT_GSO ...
#define AIOU_BR_RECVMSG ...
#define AIOU_BR_VNET ...
#define AIOU_BR_GRO ...
#define AIOU_EV_GRO_REFUSED ...
#define AIOU_EV_GSO_REFUSED ...
#define AIOU_EV_GSO_TOO_BIG ...

struct iovec {
    void *iov_base;
    size_t iov_len;
};

struct aiou_ring {
    int eventfd;
    unsigned setup_flags;
    unsigned sq_entries;
    unsigned cq_entries;
    unsigned long long submitted;
    unsigned long long reaped;
    unsigned long long submit_calls;
    unsigned long long overflows;
    unsigned long long split_errors;
    ...;
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
int aiou_reap(struct aiou_ring *r, int64_t *out, unsigned max,
              unsigned char *arena, unsigned arena_size,
              int64_t *pk, unsigned pk_max, unsigned *npk);

int aiou_bufring_add(struct aiou_ring *r, unsigned short bgid,
                     unsigned entries, unsigned bufsize, unsigned kind);
int aiou_bufring_remove(struct aiou_ring *r, unsigned short bgid);
int aiou_bufring_counts(struct aiou_ring *r, unsigned short bgid,
                        unsigned long long *reads, unsigned long long *records);

int aiou_emit(struct aiou_ring *r, int fd, unsigned kind, unsigned flags,
              unsigned gso_max, const unsigned char *data, const uint32_t *lens,
              unsigned n, const unsigned char *addrs, const uint16_t *addrlens,
              uint32_t *slot, unsigned *planned);
int aiou_batch_members(struct aiou_ring *r, uint32_t slot, unsigned index,
                       uint32_t *members, unsigned max, int *coalesced,
                       uint32_t *seg);
unsigned aiou_live_batches(struct aiou_ring *r);

int aiou_read_batch(int fd, unsigned char *arena, unsigned arena_size,
                    unsigned bufsize, unsigned kind, int64_t *out, unsigned cap,
                    unsigned max_reads, int *err, unsigned *dropped, unsigned *reads);
int aiou_recv_batch(int fd, unsigned char *arena, unsigned arena_size,
                    unsigned bufsize, unsigned kind, int64_t *out, unsigned cap,
                    unsigned max_reads, int *err, unsigned *dropped, unsigned *reads);
int aiou_send_batch(int fd, unsigned kind, unsigned flags, unsigned gso_max,
                    const unsigned char *data, const uint32_t *lens, unsigned n,
                    const unsigned char *addrs, const uint16_t *addrlens,
                    int *errs, int *nerr, unsigned *events, uint32_t *seg,
                    unsigned *writes);

int aiou_probe_opcodes(unsigned char *supported, unsigned max,
                       unsigned *last_op);
