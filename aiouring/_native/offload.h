/* TUN offloads: splitting the super-packets a vnet-header TUN hands out and
 * coalescing outgoing packets into super-packets it accepts.
 *
 * A TUN opened with IFF_VNET_HDR and TUNSETOFFLOAD(CSUM|TSO4|TSO6[|USO4|USO6])
 * prefixes every packet, both ways, with a 10-byte struct virtio_net_hdr (host
 * byte order) and may carry TCP/UDP packets of up to 64 KiB that stand for many
 * wire-sized segments.  These functions do the per-packet work of that
 * translation; research/offloads.md has the kernel rules they follow.
 *
 * Common contract:
 *  - no allocation, no syscalls, no global state: safe from any thread;
 *  - every length is checked against the buffer it describes; malformed input
 *    is refused with -EINVAL and is never read past its end;
 *  - inputs are const: nothing is written outside the caller's output
 *    buffers, and never more than their stated capacity;
 *  - checksums are RFC 1071 internet checksums computed over the bytes as they
 *    lie in memory (any alignment).
 */
#ifndef AIOURING_OFFLOAD_H
#define AIOURING_OFFLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define AIOU_VNET_HDR_LEN 10

/* struct virtio_net_hdr fields (include/uapi/linux/virtio_net.h). */
#define AIOU_VNET_F_NEEDS_CSUM 0x01
#define AIOU_VNET_F_DATA_VALID 0x02
#define AIOU_VNET_GSO_NONE 0
#define AIOU_VNET_GSO_TCPV4 1
#define AIOU_VNET_GSO_UDP 3
#define AIOU_VNET_GSO_TCPV6 4
#define AIOU_VNET_GSO_UDP_L4 5
#define AIOU_VNET_GSO_ECN 0x80

/* The largest IP packet either direction handles: IPv4's total length and
 * IPv6's payload length are 16 bits. */
#define AIOU_OFFLOAD_MAX_IPV4 65535u
#define AIOU_OFFLOAD_MAX_IPV6 (65535u + 40u)

/* Coalescing bounds: inputs per plan call, and packets per super-packet (the
 * kernel's UDP_MAX_SEGMENTS was 64 before 6.10; GRO itself stops at 64). */
#define AIOU_GRO_MAX_IN 256
#define AIOU_GRO_MAX_SEGS 64

/* Bytes of headers aiou_tun_coalesce_iov writes: vnet header, an IPv6 header
 * (coalesced IPv4 has no options) and the largest TCP header. */
#define AIOU_GRO_HDR_MAX (AIOU_VNET_HDR_LEN + 40 + 60)

/* aiou_tun_coalesce_plan flags: which protocols may be merged.  UDP only when
 * the TUN accepted USO4|USO6. */
#define AIOU_GRO_TCP 0x1
#define AIOU_GRO_UDP 0x2

/* ---- checksums -------------------------------------------------------- */

/* Ones'-complement sum of `len` bytes added to `sum`, folded to 16 bits and
 * returned in host order as the big-endian value on the wire (not
 * complemented).  `sum` is such a folded value too (0 to start).  An odd
 * `len` pads with a zero byte, so only the last piece of a chain may be odd. */
uint16_t aiou_csum_add(const void *data, size_t len, uint16_t sum);

/* ~aiou_csum_add(data, len, 0): the checksum to store, or 0 when `data`
 * already includes a correct checksum field. */
uint16_t aiou_csum(const void *data, size_t len);

/* Folded, uncomplemented pseudo-header sums (RFC 768/793, RFC 8200 §8.1):
 * addresses as they lie in the IP header (4 or 16 bytes each), the protocol
 * number, and `l4_len`, the length of the L4 header plus its payload. */
uint16_t aiou_pseudo_sum4(const uint8_t *src, const uint8_t *dst,
                          uint8_t proto, uint32_t l4_len);
uint16_t aiou_pseudo_sum6(const uint8_t *src, const uint8_t *dst,
                          uint8_t proto, uint32_t l4_len);

/* ---- read side: split ---------------------------------------------------- */

/* Size what aiou_tun_split will produce for `in` (virtio header + packet):
 * *npkts packets totalling *nbytes bytes.  Returns 0 or -EINVAL, with the
 * same checks and the same *why as aiou_tun_split. */
int aiou_tun_split_size(const uint8_t *in, size_t in_len,
                        unsigned *npkts, size_t *nbytes, const char **why);

/* Turn one TUN read (10-byte virtio header + packet) into ordinary IP packets
 * laid back to back in `out`; lens[i] is the length of the i-th.
 *
 * Returns the packet count (>= 1), -EINVAL for input that is malformed or
 * inconsistent, or -ENOSPC when `out_cap` bytes or `max_pkts` entries are too
 * few or `out`/`lens` is NULL (nothing useful is in `out` then; the sizes
 * aiou_tun_split_size reports always suffice).  When `why` is not NULL a
 * refusal stores a static English sentence there.  At most
 * AIOU_VNET_HDR_LEN + AIOU_OFFLOAD_MAX_IPV6 bytes of input are accepted; a
 * 64 KiB read at gso_size 1380 makes at most 48 packets; a pathological
 * gso_size of 1 makes one per payload byte (callers bound it by max_pkts).
 *
 * - GSO_NONE without NEEDS_CSUM: the packet, copied as is.
 * - GSO_NONE with NEEDS_CSUM: the packet with its partial checksum completed
 *   (the field at csum_start+csum_offset holds the pseudo-header seed; the
 *   sum runs from csum_start to the end; a zero result is stored as 0xffff).
 *   Refused if the field does not fit or csum_offset is odd.
 * - GSO_TCPV4, GSO_TCPV6 (optionally | GSO_ECN) and GSO_UDP_L4: NEEDS_CSUM
 *   must be set, gso_size > 0, the IP version must match the type (UDP_L4:
 *   either), csum_start must be the end of the IP header (IPv4: IHL*4, which
 *   must not be a fragment; IPv6: 40 plus a chain of hop-by-hop, routing and
 *   destination-options headers ending exactly there with the right next
 *   header), csum_offset 16 (TCP) or 6 (UDP), the L4 header (TCP data offset
 *   20..60 bytes, UDP 8) inside the packet, and the packet at most
 *   AIOU_OFFLOAD_MAX_IPV4/6 bytes.  hdr_len is ignored: the kernel fills it
 *   with a linear-size hint, not the header length.  UFO (GSO_UDP) and any
 *   other type or bit are refused.
 *   The payload is cut into gso_size pieces (the last may be shorter); each
 *   gets a copy of the headers with IPv4 total length, ID (+i) and header
 *   checksum, or IPv6 payload length (packet length - 40, extension headers
 *   included), TCP sequence (+gso_size*i) or UDP length rewritten, FIN and
 *   PSH kept only on the last segment, CWR only on the first, and a full L4
 *   checksum.  A payload of at most gso_size gives one packet whose headers
 *   and checksum are completed the same way. */
int aiou_tun_split(const uint8_t *in, size_t in_len, uint8_t *out,
                   size_t out_cap, unsigned *lens, unsigned max_pkts,
                   const char **why);

/* ---- write side: coalesce ------------------------------------------------ */

/* One output of a plan.  Python reads size/first/count; the rest is for emit. */
struct aiou_gro_out {
    uint32_t size;      /* bytes emit writes: 10-byte virtio header + packet */
    uint16_t first;     /* members[first .. first+count) are its input indices */
    uint16_t count;     /* input packets it carries (1: passed through) */
    uint16_t gso_size;  /* payload bytes of each merged segment but the last */
    uint8_t kind;       /* internal: protocol and IP version */
    uint8_t l3_len;     /* IP header bytes */
    uint8_t l4_len;     /* TCP/UDP header bytes */
    uint8_t psh;        /* the last merged segment carried PSH */
    uint8_t open;       /* internal: more segments may still be appended */
    uint8_t csum_ok;    /* internal: the first member's checksum was verified */
    uint32_t next_seq;  /* internal: TCP sequence number the next segment needs */
};

/* Caller-owned, reusable; fully written by aiou_tun_coalesce_plan. */
struct aiou_gro_plan {
    uint32_t n_out;
    uint32_t n_in;
    struct aiou_gro_out out[AIOU_GRO_MAX_IN];
    uint16_t members[AIOU_GRO_MAX_IN];
};

/* Decide how `n` outgoing IP packets (pkts[i], lens[i]) become TUN writes.
 *
 * Returns the number of outputs (plan->n_out, 1..n; 0 when n is 0), or
 * -EINVAL (plan NULL, pkts or lens NULL with n > 0, a NULL packet with a
 * non-zero length) or -E2BIG (n > AIOU_GRO_MAX_IN).
 * Content never makes it fail: a packet that cannot be merged is an output of
 * its own.  Outputs are in the order of their first packet; packets of one
 * flow (addresses, protocol, ports) keep their relative order, because a
 * packet only ever joins the flow's most recent output.
 *
 * Merged (flags & AIOU_GRO_TCP): IPv4 without options or fragmentation and
 * with a valid header checksum, or IPv6 with TCP as next header; IP length
 * field equal to the buffer length; flags exactly ACK or ACK|PSH and at least
 * one payload byte; the same addresses, ports, ack number, window, urgent
 * pointer, data offset and option bytes; IPv4
 * the same TOS, TTL and DF/reserved bits, IPv6 the same first four bytes
 * (version, traffic class, flow label) and hop limit; sequence numbers
 * contiguous in input order; every segment as long as the first except a
 * shorter last one; nothing after a PSH; both L4 checksums verified; at most
 * AIOU_GRO_MAX_SEGS packets and 65535 bytes of IP packet.
 * Merged (flags & AIOU_GRO_UDP): the same IP rules with UDP, the UDP length
 * field equal to the IP payload, at least one payload byte, equal sizes but a
 * shorter last one, checksums verified (so a zero IPv4 UDP checksum is not
 * merged).
 *
 * The pointers need only live until the call returns; emit must be given
 * the same packets, unchanged. */
int aiou_tun_coalesce_plan(const uint8_t *const *pkts, const unsigned *lens,
                           unsigned n, unsigned flags,
                           struct aiou_gro_plan *plan);

/* Write output `i` of `plan` (size plan->out[i].size) to `dst`: the virtio
 * header then the packet.  A one-packet output gets an all-zero header and
 * the packet unchanged.  A merged one gets flags NEEDS_CSUM, gso_type
 * TCPV4/TCPV6/UDP_L4, hdr_len = IP + L4 header, gso_size, csum_start = IP
 * header length, csum_offset 16/6; the first packet's headers with IPv4 total
 * length and header checksum or IPv6 payload length rewritten, UDP length
 * rewritten, PSH set if the last segment had it, and in the L4 checksum field
 * the folded, uncomplemented pseudo-header sum over the whole L4 length (what
 * the kernel's segmentation expects of a partial checksum); then every
 * member's payload in order.
 *
 * Returns the bytes written, or -EINVAL when `i` is out of range, `dst_cap`
 * is smaller than the output, or the packets no longer match the plan. */
long aiou_tun_coalesce_emit(const uint8_t *const *pkts, const unsigned *lens,
                            const struct aiou_gro_plan *plan, unsigned i,
                            uint8_t *dst, size_t dst_cap);

/* The same output without copying payloads, for writev: the virtio header
 * and the rewritten IP/L4 headers go to `hdr` (at most AIOU_GRO_HDR_MAX
 * bytes), iov[0] points at them and iov[1..] at the members' payloads inside
 * pkts (a one-packet output: iov[1] is the whole packet).  Returns the iovec
 * count, or -EINVAL as emit, or -ENOSPC when `iov_cap` entries are too few
 * (count + 1 always suffices). */
int aiou_tun_coalesce_iov(const uint8_t *const *pkts, const unsigned *lens,
                          const struct aiou_gro_plan *plan, unsigned i,
                          uint8_t hdr[AIOU_GRO_HDR_MAX], struct iovec *iov,
                          unsigned iov_cap);

/* pkts[i] = data + (lens[0] + ... + lens[i-1]) for `n` packets laid back to
 * back in `data` (as aiou_write_batch takes them).  Returns 0, or -EINVAL if
 * they overrun `data_len`. */
int aiou_offload_index(const uint8_t *data, size_t data_len,
                       const unsigned *lens, unsigned n, const uint8_t **pkts);

#endif
