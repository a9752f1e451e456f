/* What Python sees of offload.h (appended to cdef.h by build.py). */
#define AIOU_VNET_HDR_LEN ...
#define AIOU_VNET_F_NEEDS_CSUM ...
#define AIOU_VNET_F_DATA_VALID ...
#define AIOU_VNET_GSO_NONE ...
#define AIOU_VNET_GSO_TCPV4 ...
#define AIOU_VNET_GSO_UDP ...
#define AIOU_VNET_GSO_TCPV6 ...
#define AIOU_VNET_GSO_UDP_L4 ...
#define AIOU_VNET_GSO_ECN ...
#define AIOU_GRO_MAX_IN ...
#define AIOU_GRO_MAX_SEGS ...
#define AIOU_GRO_HDR_MAX ...
#define AIOU_GRO_TCP ...
#define AIOU_GRO_UDP ...

struct aiou_gro_out {
    uint32_t size;
    uint16_t first;
    uint16_t count;
    uint16_t gso_size;
    ...;
};

struct aiou_gro_plan {
    uint32_t n_out;
    uint32_t n_in;
    struct aiou_gro_out out[...];
    uint16_t members[...];
};

uint16_t aiou_csum_add(const void *data, size_t len, uint16_t sum);
uint16_t aiou_csum(const void *data, size_t len);
uint16_t aiou_pseudo_sum4(const uint8_t *src, const uint8_t *dst,
                          uint8_t proto, uint32_t l4_len);
uint16_t aiou_pseudo_sum6(const uint8_t *src, const uint8_t *dst,
                          uint8_t proto, uint32_t l4_len);

int aiou_tun_split_size(const uint8_t *in, size_t in_len,
                        unsigned *npkts, size_t *nbytes, const char **why);
int aiou_tun_split(const uint8_t *in, size_t in_len, uint8_t *out,
                   size_t out_cap, unsigned *lens, unsigned max_pkts,
                   const char **why);

int aiou_tun_coalesce_plan(const uint8_t *const *pkts, const unsigned *lens,
                           unsigned n, unsigned flags,
                           struct aiou_gro_plan *plan);
long aiou_tun_coalesce_emit(const uint8_t *const *pkts, const unsigned *lens,
                            const struct aiou_gro_plan *plan, unsigned i,
                            uint8_t *dst, size_t dst_cap);
int aiou_tun_coalesce_iov(const uint8_t *const *pkts, const unsigned *lens,
                          const struct aiou_gro_plan *plan, unsigned i,
                          uint8_t *hdr, struct iovec *iov, unsigned iov_cap);
int aiou_offload_index(const uint8_t *data, size_t data_len,
                       const unsigned *lens, unsigned n, const uint8_t **pkts);
