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
#define AIOU_MAX_GROUPS ...
#define AIOU_POOL_GROUP ...
#define AIOU_MAX_WRITERS ...

struct iovec {
    void *iov_base;
    size_t iov_len;
};

struct aiou_ring {
    int eventfd;
    unsigned setup_flags;
    unsigned features;
    unsigned sq_entries;
    unsigned cq_entries;
    unsigned long long submitted;
    unsigned long long reaped;
    unsigned long long pooled_writes;
    unsigned long long overflows;
    unsigned pool_free;
    ...;
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
int aiou_bufring_recvmsg(struct aiou_ring *r, unsigned short bgid);
int aiou_prep_recvmsg_multishot(struct aiou_ring *r, int fd, unsigned short bgid,
                                uint64_t ud);
int aiou_sendto_copy(struct aiou_ring *r, int fd, const char *data, unsigned len,
                     const char *addr, unsigned addrlen, unsigned writer);

int aiou_read_batch(int fd, unsigned char *arena, unsigned arena_size,
                    unsigned bufsize, int64_t *out, unsigned max, int *err);
int aiou_write_batch(int fd, const char *data, const unsigned *lens,
                     unsigned n, int *errs, int *nerr);

int aiou_probe_opcodes(unsigned char *supported, unsigned max,
                       unsigned *last_op);
