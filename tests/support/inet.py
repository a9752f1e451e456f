"""IPv4/IPv6 TCP/UDP packets for the offload tests: builders, a parser and an
independent RFC 1071 checksum (nothing here calls aiouring)."""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Callable

TCP = 6
UDP = 17
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
HOPOPTS, ROUTING, DSTOPTS, FRAGMENT = 0, 43, 60, 44


def ones_sum(data: bytes, start: int = 0) -> int:
    """Folded ones'-complement sum of big-endian 16-bit words (odd length padded)."""
    if len(data) % 2:
        data += b"\0"
    total: int = start + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def checksum(data: bytes, start: int = 0) -> int:
    return ~ones_sum(data, start) & 0xFFFF


def pseudo_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Folded, uncomplemented pseudo-header sum (IPv4 when the addresses are 4 bytes)."""
    if len(src) == 4:
        return ones_sum(src + dst + struct.pack("!BBH", 0, proto, length))
    return ones_sum(src + dst + struct.pack("!IxxxB", length, proto))


def addr(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


# -- building ---------------------------------------------------------------

def ipv4_header(src: str, dst: str, proto: int, payload_len: int, *, ttl: int = 64, ident: int = 0, tos: int = 0,
                df: bool = True, mf: bool = False, frag_offset: int = 0, options: bytes = b"") -> bytes:
    assert len(options) % 4 == 0
    ihl = 5 + len(options) // 4
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | frag_offset
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, ihl * 4 + payload_len, ident, flags, ttl, proto, 0,
                      addr(src), addr(dst)) + options
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]


def ipv6_header(src: str, dst: str, next_header: int, payload_len: int, *, hop_limit: int = 64, tclass: int = 0,
                flow: int = 0) -> bytes:
    return struct.pack("!IHBB16s16s", (6 << 28) | (tclass << 20) | flow, payload_len, next_header, hop_limit,
                       addr(src), addr(dst))


def ext_header(kind: int, next_header: int, body: bytes = b"") -> bytes:
    """A hop-by-hop, destination-options or routing header padded to 8 bytes
    (``body`` is everything after the first two bytes)."""
    raw = body + b"\0" * (-(len(body) + 2) % 8)
    if kind in (HOPOPTS, DSTOPTS) and not body:
        raw = b"\x01\x04\0\0\0\0"  # one PadN option filling the header
    return bytes([next_header, (len(raw) + 2) // 8 - 1]) + raw


def routing_header(next_header: int, rtype: int, segments_left: int, addresses: list[str]) -> bytes:
    body = bytes([rtype, segments_left]) + b"\0" * 4 + b"".join(addr(a) for a in addresses)
    return ext_header(ROUTING, next_header, body)


def tcp_header(sport: int, dport: int, seq: int, ack: int, flags: int, *, window: int = 502, options: bytes = b"",
               urgent: int = 0, csum: int = 0) -> bytes:
    assert len(options) % 4 == 0
    doff = 5 + len(options) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, doff << 4, flags, window,
                       csum, urgent) + options


def udp_header(sport: int, dport: int, length: int, csum: int = 0) -> bytes:
    return struct.pack("!HHHH", sport, dport, length, csum)


@dataclass
class Flow:
    """Addresses and ports of one direction; builds its packets."""

    src: str = "10.9.0.1"
    dst: str = "10.9.0.2"
    sport: int = 40000
    dport: int = 5201
    ttl: int = 64
    tos: int = 0
    flow_label: int = 0
    ident: int = 0x1234
    df: bool = True
    ip_options: bytes = b""
    ext: list[tuple[int, bytes | Callable[[int], bytes]]] = field(default_factory=list)  # (kind, body or body(next header)) IPv6 extension headers
    final_dst: str | None = None  # the routing header's final destination, for the pseudo-header

    @property
    def v6(self) -> bool:
        return ":" in self.src

    def ip(self, proto: int, l4: bytes, *, ident: int | None = None) -> bytes:
        if not self.v6:
            return ipv4_header(self.src, self.dst, proto, len(l4), ttl=self.ttl, ident=self.ident if ident is None else ident,
                               tos=self.tos, df=self.df, options=self.ip_options) + l4
        chain = b""
        kinds = [k for k, _ in self.ext]
        for i, (kind, body) in enumerate(self.ext):
            nxt = kinds[i + 1] if i + 1 < len(kinds) else proto
            chain += body(nxt) if callable(body) else ext_header(kind, nxt, body)
        first = kinds[0] if kinds else proto
        return ipv6_header(self.src, self.dst, first, len(chain) + len(l4), hop_limit=self.ttl, tclass=self.tos,
                           flow=self.flow_label) + chain + l4

    def pseudo_dst(self) -> bytes:
        return addr(self.final_dst or self.dst)

    def tcp(self, seq: int, ack: int, payload: bytes = b"", *, flags: int = ACK, options: bytes = b"", window: int = 502,
            ident: int | None = None, csum: str = "full") -> bytes:
        hdr = tcp_header(self.sport, self.dport, seq, ack, flags, window=window, options=options)
        return self._finish(TCP, hdr + payload, 16, csum, ident)

    def udp(self, payload: bytes, *, ident: int | None = None, csum: str = "full") -> bytes:
        return self._finish(UDP, udp_header(self.sport, self.dport, 8 + len(payload)) + payload, 6, csum, ident)

    def _finish(self, proto: int, l4: bytes, at: int, csum: str, ident: int | None) -> bytes:
        """csum: "full" (valid), "partial" (pseudo-header seed, as CHECKSUM_PARTIAL),
        "bad" (valid plus one), "zero"."""
        seed = pseudo_sum(addr(self.src), self.pseudo_dst(), proto, len(l4))
        if csum == "full":
            value = checksum(l4, seed) or 0xFFFF  # as skb_checksum_help stores a zero result
        elif csum == "partial":
            value = seed
        elif csum == "bad":
            value = (checksum(l4, seed) + 1) & 0xFFFF or 1
        else:
            value = 0
        return self.ip(proto, l4[:at] + struct.pack("!H", value) + l4[at + 2:], ident=ident)


def vnet(flags: int = 0, gso_type: int = 0, hdr_len: int = 0, gso_size: int = 0, csum_start: int = 0,
         csum_offset: int = 0) -> bytes:
    return struct.pack("=BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


# -- parsing ----------------------------------------------------------------

@dataclass
class Parsed:
    version: int
    src: bytes
    dst: bytes          # the pseudo-header destination (routing header aware)
    proto: int
    l3: int             # offset of the L4 header
    total: int          # length field as the IP header states it (whole packet)
    ident: int = 0
    ttl: int = 0
    sport: int = 0
    dport: int = 0
    seq: int = 0
    ack: int = 0
    flags: int = 0
    thl: int = 0
    payload: bytes = b""


def parse(pkt: bytes) -> Parsed:
    """Parse an IPv4/IPv6 TCP/UDP packet (extension headers walked)."""
    v = pkt[0] >> 4
    if v == 4:
        ihl = (pkt[0] & 15) * 4
        total, ident, ttl, proto = struct.unpack_from("!H H 2x B B", pkt, 2)
        p = Parsed(4, pkt[12:16], pkt[16:20], proto, ihl, total, ident=ident, ttl=ttl)
    else:
        nh, off, dst = pkt[6], 40, pkt[24:40]
        while nh in (HOPOPTS, ROUTING, DSTOPTS):
            hlen = (pkt[off + 1] + 1) * 8
            if nh == ROUTING and pkt[off + 3]:
                n = pkt[off + 1] // 2
                dst = pkt[off + 8 : off + 24] if pkt[off + 2] == 4 else pkt[off + 8 + 16 * (n - 1) : off + 8 + 16 * n]
            nh, off = pkt[off], off + hlen
        p = Parsed(6, pkt[8:24], dst, nh, off, 40 + struct.unpack_from("!H", pkt, 4)[0], ttl=pkt[7])
    l4 = pkt[p.l3 :]
    if p.proto == TCP:
        p.sport, p.dport, p.seq, p.ack, doff, p.flags = struct.unpack_from("!HHIIBB", l4)
        p.thl = (doff >> 4) * 4
        p.payload = l4[p.thl :]
    elif p.proto == UDP:
        p.sport, p.dport, ulen = struct.unpack_from("!HHH", l4)
        assert ulen == len(l4), (ulen, len(l4))
        p.payload = l4[8:]
    return p


def checksums_valid(pkt: bytes) -> bool:
    """IPv4 header checksum (if IPv4), the L4 checksum, and the IP length field
    equal to the packet's length."""
    p = parse(pkt)
    if p.total != len(pkt):
        return False
    if p.version == 4 and ones_sum(pkt[: p.l3]) != 0xFFFF:
        return False
    return ones_sum(pkt[p.l3 :], pseudo_sum(p.src, p.dst, p.proto, len(pkt) - p.l3)) == 0xFFFF


def syn_options(mss: int, wscale: int) -> bytes:
    """MSS and window-scale options, padded to 8 bytes (what a SYN or SYN-ACK carries here)."""
    return struct.pack("!BBH", 2, 4, mss) + b"\x01" + struct.pack("!BBB", 3, 3, wscale)


def tcp_option(pkt: bytes, kind: int) -> bytes | None:
    """The body of TCP option ``kind`` in ``pkt``, if present."""
    p = parse(pkt)
    opts = pkt[p.l3 + 20 : p.l3 + p.thl]
    i = 0
    while i < len(opts):
        k = opts[i]
        if k == 0:
            break
        if k == 1:
            i += 1
            continue
        n = opts[i + 1]
        if k == kind:
            return opts[i + 2 : i + n]
        i += max(n, 2)
    return None
